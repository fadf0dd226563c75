"""Export a store to geoparquet | ndjson | static, and import any of them back (upsert)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from thisme_stac.errors import ConfigError
from thisme_stac.export.atomic import Staging, check_target
from thisme_stac.export.common import (
    DEFAULT_BATCH,
    FORMATS,
    JSON,
    ExportReport,
    Format,
    ImportReport,
    Progress,
)
from thisme_stac.store.base import Store

IMPORT_BATCH = 1000


def check_format(name: str) -> Format:
    """The format named ``name`` (case-insensitive), or a ConfigError listing the choices."""
    wanted = name.strip().lower()
    aliases = {"parquet": "geoparquet", "jsonl": "ndjson", "catalog": "static"}
    wanted = aliases.get(wanted, wanted)
    for known in FORMATS:
        if known == wanted:
            return known
    raise ConfigError(f"unknown format {name!r}: choose one of {', '.join(FORMATS)}")


def _selected_collections(store: Store, collection: str | None) -> list[JSON]:
    if collection is None:
        return store.list_collections()
    found = store.get_collection(collection)
    if found is None:
        known = ", ".join(str(c.get("id")) for c in store.list_collections()) or "none"
        raise ConfigError(f"no collection {collection!r} in the store (it has: {known})")
    return [found]


def _same_file(a: Path, b: str) -> bool:
    try:
        return a.resolve() == Path(b.removeprefix("sqlite:///")).resolve()
    except OSError:
        return False


def export_store(
    store: Store,
    format: str,
    out: Path | str,
    *,
    collection: str | None = None,
    overwrite: bool = False,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
) -> ExportReport:
    """Export the items (of one collection, or all) and their collections to ``out``.

    ``out`` is a file for geoparquet and ndjson (``-``: ndjson on stdout), a folder for static.
    Everything is written under temporary names and renamed into place at the end.
    """
    kind = check_format(format)
    started = time.perf_counter()
    collections = _selected_collections(store, collection)

    def items() -> Iterable[JSON]:
        return store.iter_items(collection)

    to_stdout = str(out) == "-"
    if to_stdout and kind != "ndjson":
        raise ConfigError(f"only ndjson can be written to stdout, not {kind}")
    path = Path(out)
    if not to_stdout:
        if _same_file(path, store.url):
            raise ConfigError(f"{path} is the store itself; choose another output")
        check_target(path, overwrite=overwrite, directory=kind == "static")
    report = ExportReport(format=kind, path=str(out), collections=len(collections))

    if kind == "ndjson":
        from thisme_stac.export.ndjson import write_ndjson

        report.items, report.files = write_ndjson(
            items(), collections, out, overwrite=overwrite, progress=progress
        )
        if to_stdout:
            report.collections = 0  # no sidecar on stdout
    elif kind == "geoparquet":
        from thisme_stac.export.geoparquet import write_geoparquet

        with Staging(overwrite=overwrite) as staging:
            temp = staging.file(path)
            report.items = write_geoparquet(
                items, collections, temp, batch_size=batch_size, progress=progress
            )
        report.files = [str(path)]
    else:
        from thisme_stac.export.static import write_static

        with Staging(overwrite=overwrite) as staging:
            temp = staging.directory(path)
            report.items = write_static(items(), collections, temp, progress=progress)
        report.files = [str(path / "catalog.json")]
    report.seconds = time.perf_counter() - started
    return report


def _root_document(path: Path) -> bool:
    import orjson

    if path.stat().st_size > 64 << 20:
        return False
    try:
        doc = orjson.loads(path.read_bytes())
    except (orjson.JSONDecodeError, OSError):
        return False
    return isinstance(doc, dict) and doc.get("type") in {"Catalog", "Collection"}


def detect_format(path: Path) -> Format:
    """Guess the format of an export from its name, then its first bytes."""
    if path.is_dir():
        return "static"
    if not path.exists():
        raise ConfigError(f"no such file or folder: {path}")
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".parquet", ".geoparquet", ".pq")):
        return "geoparquet"
    if name.endswith((".ndjson", ".jsonl", ".geojsonl", ".geojsons")):
        return "ndjson"
    try:
        with path.open("rb") as stream:
            head = stream.read(65536)
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from None
    if head.startswith(b"PAR1"):
        return "geoparquet"
    if head.startswith(b"\x1f\x8b"):
        return "ndjson"
    if name.endswith(".json"):
        # one STAC Catalog or Collection document (catalog.json, collection.json), maybe
        # pretty-printed, is the root of a static catalogue; anything else is read line by line
        first_line = head.lstrip().split(b"\n", 1)[0].strip()
        if first_line == b"{" or _root_document(path):
            return "static"
        return "ndjson"
    if head.lstrip().startswith(b"{"):
        return "ndjson"
    raise ConfigError(
        f"cannot tell the format of {path}: name it .parquet, .ndjson or give a folder"
    )


def _events(path: Path, kind: Format, batch_size: int) -> Iterator[tuple[str, JSON]]:
    if kind == "ndjson":
        from thisme_stac.export.ndjson import read_ndjson

        return read_ndjson(path)
    if kind == "geoparquet":
        from thisme_stac.export.geoparquet import read_geoparquet

        return read_geoparquet(path, batch_size=batch_size)
    from thisme_stac.export.static import read_static

    return read_static(path)


def import_items(
    path: Path | str,
    store: Store,
    *,
    format: str | None = None,
    batch_size: int = IMPORT_BATCH,
    progress: Progress | None = None,
) -> ImportReport:
    """Load an export (ndjson, geoparquet or static catalogue) into ``store``, by upsert.

    Importing the same export twice changes nothing the second time (all ``unchanged``).
    ``format`` is guessed from the path when not given.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"no such file or folder: {path}")
    kind = check_format(format) if format else detect_format(path)
    started = time.perf_counter()
    report = ImportReport(format=kind, path=str(path))
    pending: list[JSON] = []

    def flush() -> None:
        if not pending:
            return
        result = store.upsert_items(pending)
        report.items += len(pending)
        report.new += result.new
        report.updated += result.updated
        report.unchanged += result.unchanged
        pending.clear()
        if progress is not None:
            progress(report.items)

    for event, obj in _events(path, kind, batch_size):
        if event == "collection":
            store.upsert_collection(obj)
            report.collections += 1
            continue
        pending.append(obj)
        if len(pending) >= batch_size:
            flush()
    flush()
    report.seconds = time.perf_counter() - started
    return report
