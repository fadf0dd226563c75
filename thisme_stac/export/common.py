"""What the export formats share: reports, progress callbacks, batching, link helpers."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

JSON = dict[str, Any]
Format = Literal["geoparquet", "ndjson", "static"]
FORMATS: tuple[Format, ...] = ("geoparquet", "ndjson", "static")

Progress = Callable[[int], None]
"""Called with the number of items handled so far (in steps, not for every item)."""

DEFAULT_BATCH = 5000

# STAC's order of top-level Item fields; imported items are put back in this order so that a
# round trip stores byte-identical JSON.
ITEM_KEY_ORDER = (
    "type",
    "stac_version",
    "stac_extensions",
    "id",
    "geometry",
    "bbox",
    "properties",
    "links",
    "assets",
    "collection",
)


@dataclass(slots=True)
class ExportReport:
    """What an export wrote."""

    format: Format
    path: str
    items: int = 0
    collections: int = 0
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> JSON:
        return {
            "format": self.format,
            "path": self.path,
            "items": self.items,
            "collections": self.collections,
            "files": self.files,
            "seconds": round(self.seconds, 3),
        }


@dataclass(slots=True)
class ImportReport:
    """What an import read and what the store did with it."""

    format: Format
    path: str
    items: int = 0
    collections: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    seconds: float = 0.0

    def to_dict(self) -> JSON:
        return {
            "format": self.format,
            "path": self.path,
            "items": self.items,
            "collections": self.collections,
            "new": self.new,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "seconds": round(self.seconds, 3),
        }


def batched(items: Iterable[JSON], size: int) -> Iterator[list[JSON]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def counted(items: Iterable[JSON], progress: Progress | None, every: int = 1000) -> Iterator[JSON]:
    """Pass items through, calling ``progress`` every ``every`` items and at the end."""
    n = 0
    for item in items:
        yield item
        n += 1
        if progress is not None and n % every == 0:
            progress(n)
    if progress is not None and n % every:
        progress(n)


def order_item(item: JSON) -> JSON:
    """The item with its top-level keys in STAC order (others after, as they came)."""
    ordered = {key: item[key] for key in ITEM_KEY_ORDER if key in item}
    ordered.update((k, v) for k, v in item.items() if k not in ordered)
    return ordered


def without_links(obj: JSON, rels: Iterable[str]) -> JSON:
    """A shallow copy of ``obj`` without the links whose ``rel`` is in ``rels``."""
    drop = set(rels)
    links = obj.get("links")
    if not isinstance(links, list):
        return dict(obj)
    kept = [link for link in links if not (isinstance(link, dict) and link.get("rel") in drop)]
    return {**obj, "links": kept}
