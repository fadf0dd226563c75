"""stac-geoparquet: the items as one GeoParquet file (DuckDB, GeoPandas, Spark-style engines).

Written with the ``stac-geoparquet`` package's Arrow API, in batches:

1. one pass over the store infers the Arrow schema batch by batch (so that a field that only
   some items have is a column for all of them);
2. a second pass converts each batch with that schema and appends it to the Parquet file as a
   row group.

Memory stays bounded by the batch size, not the number of items. The store's collections travel
in the file's ``stac-geoparquet`` metadata (``collections``), as the stac-geoparquet spec says.

Reading back (``read_geoparquet``) turns rows into the original Item dicts: Arrow cannot tell a
missing field from ``null``, so ``null`` fields are dropped (STAC items rarely hold nulls;
``properties.datetime`` is kept), timestamps are written back in RFC 3339 with ``Z`` and
microseconds only when not zero, and properties are put back in their original order.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from thisme_stac.errors import ConfigError, StoreError
from thisme_stac.export.common import DEFAULT_BATCH, JSON, Progress, batched, order_item

MISSING = (
    "the geoparquet format needs the stac-geoparquet package "
    "(pip install 'stac-geoparquet>=0.8,<0.9')"
)

# timestamp columns of stac-geoparquet (STAC common metadata and the timestamps extension)
TIMESTAMPS = (
    "datetime",
    "start_datetime",
    "end_datetime",
    "created",
    "updated",
    "expires",
    "published",
    "unpublished",
)


class _Owned(dict[str, Any]):
    """An item dict that ``copy.deepcopy`` returns as is.

    stac-geoparquet deep-copies every item before replacing its geometries by WKB; that copy is
    two thirds of the export time. ``_owned`` copies exactly what it replaces (the item, its
    properties and assets), so the items from the store are never changed.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> _Owned:
        return self


def _owned(item: JSON) -> _Owned:
    owned = _Owned(item)
    if isinstance(item.get("properties"), dict):
        owned["properties"] = dict(item["properties"])
    if isinstance(item.get("assets"), dict):
        owned["assets"] = {
            k: dict(v) if isinstance(v, dict) else v for k, v in item["assets"].items()
        }
    return owned


def _owned_batches(items: Iterable[JSON], size: int) -> Iterator[list[JSON]]:
    for batch in batched(items, size):
        yield [_owned(item) for item in batch]


def _modules() -> tuple[Any, Any, Any, Any]:
    try:
        import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
        import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]
        import stac_geoparquet.arrow as sga
        from stac_geoparquet.arrow._schema.models import InferredSchema
    except ImportError:
        raise ConfigError(MISSING) from None
    return pa, pq, sga, InferredSchema


def write_geoparquet(
    items: Callable[[], Iterable[JSON]],
    collections: list[JSON],
    path: Path,
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
) -> int:
    """Write the items of ``items()`` (called twice: schema pass, data pass) to ``path``."""
    pa, _, sga, inferred_schema = _modules()
    schema = inferred_schema()
    try:
        for batch in _owned_batches(items(), batch_size):
            schema.update_from_items(batch)
    except (pa.ArrowException, ValueError, TypeError) as err:
        raise StoreError(f"cannot map the items to a GeoParquet schema: {_one_line(err)}") from None
    if schema.count == 0:
        raise ConfigError("nothing to export: no items (GeoParquet needs at least one)")

    written = 0

    def arrow_batches() -> Iterator[Any]:
        nonlocal written
        for batch in _owned_batches(items(), batch_size):
            reader = sga.parse_stac_items_to_arrow(batch, chunk_size=len(batch), schema=schema)
            yield from reader
            written += len(batch)
            if progress is not None:
                progress(written)

    try:
        stream = arrow_batches()
        first = next(stream)
        reader = pa.RecordBatchReader.from_batches(first.schema, itertools.chain([first], stream))
        sga.to_parquet(
            reader,
            str(path),
            collections={str(c["id"]): c for c in collections},
            compression="zstd",
            write_statistics=True,
        )
    except StopIteration:
        raise StoreError("the store changed during the export (no items left); try again") from None
    except (pa.ArrowException, ValueError, TypeError) as err:
        raise StoreError(f"cannot write GeoParquet: {_one_line(err)}") from None
    return written


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300]


_CONTAINERS = (dict, list)


def _drop_nulls(value: Any) -> Any:
    """``value`` without the ``None`` members of its dicts, at every depth."""
    if isinstance(value, dict):
        return {
            k: _drop_nulls(v) if isinstance(v, _CONTAINERS) else v
            for k, v in value.items()
            if v is not None
        }
    if isinstance(value, list):
        return [_drop_nulls(v) if isinstance(v, _CONTAINERS) else v for v in value]
    return value


def _timestamp(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    from thisme_stac.translate.item import format_datetime

    try:
        return format_datetime(datetime.fromisoformat(value))
    except ValueError:
        return value


def restore_item(row: JSON, property_order: Mapping[str, int]) -> JSON:
    """A stac-geoparquet row dict -> the STAC Item it was made from (see the module doc)."""
    properties = row.get("properties") or {}
    restored_props = {}
    for key in sorted(properties, key=lambda k: property_order.get(k, len(property_order))):
        value = properties[key]
        if value is None:
            continue
        restored_props[key] = _timestamp(value) if key in TIMESTAMPS else _drop_nulls(value)
    restored_props.setdefault("datetime", None)
    item = {k: _drop_nulls(v) for k, v in row.items() if k != "properties" and v is not None}
    item["properties"] = restored_props
    item.setdefault("type", "Feature")
    return order_item(item)


def read_geoparquet(path: Path, *, batch_size: int = DEFAULT_BATCH) -> Iterator[tuple[str, JSON]]:
    """``("collection", doc)`` from the file metadata, then ``("item", item)`` per row."""
    pa, pq, sga, _ = _modules()
    try:
        parquet = pq.ParquetFile(str(path))
    except (pa.ArrowException, OSError) as err:
        raise ConfigError(f"{path} is not a Parquet file: {_one_line(err)}") from None
    with parquet:
        schema = parquet.schema_arrow
        if "geometry" not in schema.names or "id" not in schema.names:
            raise ConfigError(f"{path} is not stac-geoparquet (no id or geometry column)")
        metadata = schema.metadata or {}
        raw = metadata.get(b"stac-geoparquet")
        if raw:
            try:
                meta = orjson.loads(raw)
            except orjson.JSONDecodeError:
                meta = {}
            found = dict(meta.get("collections") or {})
            if isinstance(meta.get("collection"), dict):
                found.setdefault(str(meta["collection"].get("id")), meta["collection"])
            for collection in found.values():
                if isinstance(collection, dict):
                    yield "collection", collection
        order = {name: i for i, name in enumerate(schema.names)}
        try:
            for record_batch in parquet.iter_batches(batch_size=batch_size):
                table = pa.Table.from_batches([record_batch])
                for row in sga.stac_table_to_items(table):
                    yield "item", restore_item(row, order)
        except (pa.ArrowException, ValueError, KeyError) as err:
            raise ConfigError(f"cannot read {path} as stac-geoparquet: {_one_line(err)}") from None
