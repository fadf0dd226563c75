"""THISME address-bar queries (the ``-urlq`` of the original download script), pure and I/O-free.

The rule: the browser query is the API query with the collection moved into the path and UI-only
keys dropped. ``q=%23Central-Italy&collection=SoilMoisture`` becomes
``{base}/collections/SoilMoisture/features?q=%23Central-Italy&limit=500``, byte for byte.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import quote, unquote, urlsplit

from thisme_stac.errors import QueryError

log = logging.getLogger("thisme_stac.resto")

#: Keys the THISME web client (rocket) adds for its own state; resto ignores or misreads them.
UI_KEYS = frozenset({"view", "_view", "tab", "zoom", "center", "_pretty", "_analysis", "mode"})
#: Offset paging keys: never mixed with the cursor a harvest follows (resto 5 bug, RESTO.md 2.4).
OFFSET_KEYS = frozenset({"page", "index", "startIndex", "lt", "gt", "limit", "maxRecords"})
COLLECTION_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]+$")
PATH_COLLECTION_RE = re.compile(r"/collections/([A-Za-z][A-Za-z0-9]+)(?:/|\.json|$)")
BAD_PERCENT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Characters resto queries keep as-is on the wire; everything else is percent-encoded.
SAFE = "-_.~!*'(),:@/|"


@dataclass(frozen=True, slots=True)
class Param:
    """One query parameter: the decoded value and its exact wire form."""

    key: str
    value: str
    wire: str


@dataclass(frozen=True, slots=True)
class RestoQuery:
    """A resto search: an optional collection and ordered parameters."""

    collection: str | None
    params: tuple[Param, ...] = ()

    def get(self, key: str) -> str | None:
        """Last value of ``key`` (resto keeps the last one), or None."""
        for param in reversed(self.params):
            if param.key == key:
                return param.value
        return None

    def query_string(self, extra: Mapping[str, str] | None = None) -> str:
        """The parameters on the wire, original encoding kept, ``extra`` appended."""
        parts = [f"{p.key}={p.wire}" for p in self.params]
        for key, value in (extra or {}).items():
            parts.append(f"{quote(key, safe='')}={quote(value, safe=SAFE)}")
        return "&".join(parts)

    def search_url(
        self, base_url: str, *, limit: int | None = None, extra: Mapping[str, str] | None = None
    ) -> str:
        """resto 5 search URL: collection in the path, ``limit`` appended."""
        base = base_url.rstrip("/")
        path = f"/collections/{self.collection}/features" if self.collection else "/features"
        more = dict(extra or {})
        if limit is not None:
            more["limit"] = str(limit)
        qs = self.query_string(more)
        return f"{base}{path}?{qs}" if qs else f"{base}{path}"

    def with_params(self, **values: str) -> RestoQuery:
        """A copy with parameters replaced or added."""
        kept = tuple(p for p in self.params if p.key not in values)
        added = tuple(Param(k, v, quote(v, safe=SAFE)) for k, v in values.items())
        return replace(self, params=kept + added)

    def key(self) -> str:
        """Stable, readable identity of the query (checkpoint names)."""
        qs = self.query_string()
        text = f"collection={self.collection or '*'}" + (f"&{qs}" if qs else "")
        if len(text) <= 200:
            return text
        return text[:150] + "#" + hashlib.sha256(text.encode()).hexdigest()[:16]

    def hashtags(self) -> list[str]:
        """Hashtags of ``q`` without ``#`` (``-#x`` exclusions left out)."""
        q = self.get("q") or ""
        return [t[1:] for t in q.split() if t.startswith("#") and len(t) > 1]


def _split_address(text: str) -> tuple[str, str]:
    """Return (path, query) from a query string or a whole address-bar URL."""
    value = text.strip()
    if re.match(r"^[a-z][a-z0-9+.-]*://", value, re.IGNORECASE):
        parts = urlsplit(value)
        # rocket-style URLs carry the query after '#/search?...'
        if parts.fragment and "?" in parts.fragment:
            frag_path, _, frag_query = parts.fragment.partition("?")
            query = parts.query + ("&" if parts.query else "") + frag_query
            return parts.path + frag_path, query
        if parts.fragment:  # an unencoded '#' of a hashtag: q=#Central-Italy&...
            return parts.path, f"{parts.query}#{parts.fragment}"
        return parts.path, parts.query
    if value.startswith("/"):
        path, _, query = value.partition("?")
        return path, query
    return "", value.removeprefix("?")


def parse_urlq(text: str) -> RestoQuery:
    """Parse a THISME address-bar query, a whole URL, encoded or not."""
    if not text or not text.strip():
        raise QueryError("empty query: expected something like q=%23Central-Italy&collection=X")
    path, query = _split_address(text)
    if BAD_PERCENT_RE.search(query):
        raise QueryError(f"malformed query (stray '%'): {text.strip()!r}")
    collection: str | None = None
    match = PATH_COLLECTION_RE.search(path)
    if match:
        collection = match.group(1)
    params: list[Param] = []
    for chunk in query.split("&"):
        if not chunk:
            continue
        raw_key, sep, raw_value = chunk.partition("=")
        key = unquote(raw_key.replace("+", " ")).strip()
        if not key or not sep:
            raise QueryError(f"malformed query part {chunk!r} (expected key=value)")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_:.]*", key):
            raise QueryError(f"malformed query key {key!r}")
        value = unquote(raw_value.replace("+", " "))
        if key == "collection":
            if not COLLECTION_RE.match(value):
                raise QueryError(f"invalid collection name {value!r}")
            collection = value
            continue
        if key in UI_KEYS:
            continue
        if key in OFFSET_KEYS:
            log.warning("ignoring %r from the query: the harvest pages by itself", key)
            continue
        # keep an already percent-encoded value byte for byte; encode a raw one
        wire = raw_value if "%" in raw_value and "+" not in raw_value else quote(value, safe=SAFE)
        params.append(Param(key, value, wire))
    if collection is None and not params:
        raise QueryError(f"the query selects nothing: {text.strip()!r}")
    return RestoQuery(collection=collection, params=tuple(params))


def normalise_argv(argv: list[str]) -> list[str]:
    """Accept the original script's single-dash ``-urlq X`` / ``-urlq=X`` spelling."""
    out: list[str] = []
    for arg in argv:
        if arg == "-urlq":
            out.append("--urlq")
        elif arg.startswith("-urlq="):
            out.append("--urlq=" + arg.removeprefix("-urlq="))
        else:
            out.append(arg)
    return out
