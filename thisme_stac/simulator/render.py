"""Search pages at speed: a feature's JSON bytes filled into a per-site template.

A template is the feature document of one site rendered once with marker values, then split
around the markers; a page then costs a few string joins per feature instead of building and
encoding a dict. ``tests/test_simulator.py`` checks that the bytes equal the dict rendering.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from thisme_stac.simulator.catalogue import PLATFORMS, RESTO_NAMESPACE, GeneratedCatalogue
from thisme_stac.simulator.sites import Site

#: Per-feature values; every other part of a feature depends on its site (and the base URL) only.
FIELDS = (
    "pid",
    "uuid",
    "start",
    "year",
    "month",
    "day",
    "platform",
    "relative_orbit",
    "direction",
    "updated",
    "sort_idx",
)
NUMBERS = frozenset({"relative_orbit"})
_MARK = re.compile(r'"\\u001e(\w+)\\u001e"|\\u001f(\w+)\\u001f')
_NAMESPACE = RESTO_NAMESPACE.bytes


def markers() -> dict[str, Any]:
    """Values that render as recognisable markers (numbers as marked strings)."""
    return {f: f"\x1e{f}\x1e" if f in NUMBERS else f"\x1f{f}\x1f" for f in FIELDS}


def uuid5_text(name: str) -> str:
    """``str(uuid.uuid5(RESTO_NAMESPACE, name))`` without building UUID objects."""
    digest = bytearray(hashlib.sha1(_NAMESPACE + name.encode(), usedforsecurity=False).digest())
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest[:16].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _stamp(seconds: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` in UTC."""
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat()[:19]


def values(
    catalogue: GeneratedCatalogue, positions: Sequence[int] | npt.NDArray[np.int64]
) -> list[tuple[Site, dict[str, Any]]]:
    """(site, values) of each position, read from the catalogue arrays in one go."""
    a = catalogue._arrays
    index = np.asarray(positions, dtype=np.int64)
    tracks = a.track[index].tolist()
    out: list[tuple[Site, dict[str, Any]]] = []
    for track, start, platform, updated_us, sort_idx in zip(
        tracks,
        a.start[index].tolist(),
        a.platform[index].tolist(),
        a.updated_us[index].tolist(),
        a.sort_idx[index].tolist(),
        strict=True,
    ):
        site = catalogue.sites[int(catalogue.track_site[track])]
        stamp = _stamp(start)
        rel = int(catalogue.track_rel[track])
        name = PLATFORMS[platform]
        compact = stamp.replace("-", "").replace(":", "")
        pid = f"SM_{site.code}_{compact}_{name}_R{rel:03d}"
        out.append(
            (
                site,
                {
                    "pid": pid,
                    "uuid": uuid5_text(pid),
                    "start": stamp + ".000000Z",
                    "year": stamp[:4].lstrip("0") or "0",
                    "month": stamp[5:7],
                    "day": stamp[8:10],
                    "platform": name,
                    "relative_orbit": rel,
                    "direction": catalogue.track_dir[track],
                    "updated": f"{_stamp(updated_us // 1_000_000)}.{updated_us % 1_000_000:06d}Z",
                    "sort_idx": str(sort_idx),
                },
            )
        )
    return out


class FeatureTemplate:
    """One site's feature JSON as a ``str.format`` pattern with a field per per-feature value."""

    __slots__ = ("_pattern",)

    def __init__(self, document: bytes) -> None:
        text = document.decode()
        pieces: list[str] = []
        last = 0
        for match in _MARK.finditer(text):
            pieces.append(text[last : match.start()].replace("{", "{{").replace("}", "}}"))
            pieces.append("{" + (match.group(1) or match.group(2)) + "}")
            last = match.end()
        pieces.append(text[last:].replace("{", "{{").replace("}", "}}"))
        self._pattern = "".join(pieces)

    def render(self, fields: dict[str, Any]) -> bytes:
        encoded = {
            name: str(value) if name in NUMBERS else orjson.dumps(value).decode()[1:-1]
            for name, value in fields.items()
        }
        return self._pattern.format_map(encoded).encode()


class PageRenderer:
    """Feature bytes for search pages, with templates cached per (site, base URL, sort field)."""

    def __init__(
        self,
        catalogue: GeneratedCatalogue,
        document: Callable[[Site, dict[str, Any], str, bool], dict[str, Any]],
        size: int = 4096,
    ) -> None:
        self.catalogue = catalogue
        self._document = document
        self._templates: dict[tuple[Site, str, bool], FeatureTemplate] = {}
        self._size = size

    def template(self, site: Site, base: str, with_sort: bool) -> FeatureTemplate:
        key = (site, base, with_sort)
        found = self._templates.get(key)
        if found is None:
            if len(self._templates) >= self._size:
                self._templates.clear()
            document = orjson.dumps(self._document(site, markers(), base, with_sort))
            found = self._templates[key] = FeatureTemplate(document)
        return found

    def features(
        self, positions: Sequence[int] | npt.NDArray[np.int64], base: str, *, with_sort: bool
    ) -> list[bytes]:
        return [
            self.template(site, base, with_sort).render(fields)
            for site, fields in values(self.catalogue, positions)
        ]
