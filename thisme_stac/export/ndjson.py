"""Newline-delimited JSON: one STAC Item per line, collections in a sidecar file.

Layout of an export to ``items.ndjson`` (or ``items.ndjson.gz``, gzip-compressed):

- ``items.ndjson``: one Item per line (compact JSON, ``\\n``-terminated), the store's order;
- ``items.collections.json``: ``{"collections": [...]}``, the store's Collection documents,
  shaped like a STAC API ``/collections`` response.

Both are streamed: memory does not grow with the number of items. ``-`` as the output writes
the items to stdout and no sidecar.
"""

from __future__ import annotations

import gzip
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import orjson

from thisme_stac.errors import ConfigError
from thisme_stac.export.atomic import Staging
from thisme_stac.export.common import JSON, Progress, counted

ITEM_SUFFIXES = (".ndjson", ".jsonl", ".geojsonl", ".geojsons", ".json")
BUFFER = 1 << 20


def sidecar_path(out: Path) -> Path:
    """``items.ndjson`` -> ``items.collections.json`` (``.gz`` dropped first)."""
    name = out.name.removesuffix(".gz")
    for suffix in ITEM_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name.removesuffix(suffix)
            break
    return out.with_name(f"{name}.collections.json")


class _Writer(Protocol):
    def write(self, data: bytes, /) -> int: ...


@contextmanager
def _open_write(path: Path, gzipped: bool) -> Iterator[_Writer]:
    with path.open("xb", buffering=BUFFER) as raw:
        if not gzipped:
            yield raw
            return
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as gz:
            yield gz


def write_lines(items: Iterable[JSON], stream: _Writer) -> int:
    n = 0
    dumps, option = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    for item in items:
        stream.write(dumps(item, option=option))
        n += 1
    return n


def _write_stdout(items: Iterable[JSON], progress: Progress | None) -> int:
    written = 0

    def tally(done: int) -> None:
        nonlocal written
        written = done
        if progress is not None and done % 1000 == 0:
            progress(done)

    stream = sys.stdout.buffer
    try:
        n = write_lines(counted(items, tally, every=1), stream)
        stream.flush()
        if progress is not None:
            progress(n)
    except BrokenPipeError:
        # the reader went away (``| head``): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return written
    return n


def write_ndjson(
    items: Iterable[JSON],
    collections: list[JSON],
    out: Path | str,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> tuple[int, list[str]]:
    """Write items (and the collections sidecar); returns (item count, files written)."""
    if str(out) == "-":
        return _write_stdout(items, progress), []
    out = Path(out)
    gzipped = out.name.endswith(".gz")
    sidecar = sidecar_path(out)
    with Staging(overwrite=overwrite) as staging:
        temp_sidecar = staging.file(sidecar)
        temp_items = staging.file(out)
        temp_sidecar.write_bytes(
            orjson.dumps({"collections": collections, "links": []}, option=orjson.OPT_INDENT_2)
        )
        with _open_write(temp_items, gzipped) as stream:
            n = write_lines(counted(items, progress), stream)
    return n, [str(out), str(sidecar)]


@contextmanager
def _open_read(path: Path) -> Iterator[Iterable[bytes]]:
    """The lines of the file, gunzipped when it starts with the gzip magic number."""
    with path.open("rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    if gzipped:
        with gzip.open(path, "rb") as gz:
            yield gz
    else:
        with path.open("rb", buffering=BUFFER) as raw:
            yield raw


def _collections_of(doc: Any, where: Path) -> list[JSON]:
    if isinstance(doc, dict) and isinstance(doc.get("collections"), list):
        found = doc["collections"]
    elif isinstance(doc, dict) and doc.get("type") == "Collection":
        found = [doc]
    elif isinstance(doc, list):
        found = doc
    else:
        raise ConfigError(f"{where}: expected {{'collections': [...]}} or a STAC Collection")
    bad = [c for c in found if not isinstance(c, dict) or c.get("type") != "Collection"]
    if bad:
        raise ConfigError(f"{where}: holds something that is not a STAC Collection")
    return list(found)


def read_ndjson(path: Path) -> Iterator[tuple[str, JSON]]:
    """``("collection", doc)`` from the sidecar, then ``("item", item)`` per line, streamed.

    Lines may also hold Collections or FeatureCollections (their features are items).
    """
    sidecar = sidecar_path(path)
    if sidecar.is_file() and sidecar != path:
        try:
            doc = orjson.loads(sidecar.read_bytes())
        except orjson.JSONDecodeError as err:
            raise ConfigError(f"{sidecar} is not JSON: {err}") from None
        for collection in _collections_of(doc, sidecar):
            yield "collection", collection
    try:
        with _open_read(path) as stream:
            for number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError as err:
                    raise ConfigError(f"{path}, line {number}: not JSON ({err})") from None
                kind = obj.get("type") if isinstance(obj, dict) else None
                if kind == "Feature":
                    yield "item", obj
                elif kind == "Collection":
                    yield "collection", obj
                elif kind == "FeatureCollection" and isinstance(obj.get("features"), list):
                    for feature in obj["features"]:
                        yield "item", feature
                else:
                    raise ConfigError(f"{path}, line {number}: not a STAC Item (type {kind!r})")
    except (OSError, EOFError) as err:
        raise ConfigError(f"cannot read {path}: {err}") from None
