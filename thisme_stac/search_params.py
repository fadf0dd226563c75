"""Parse STAC search parameters given as text (CLI flags, query strings) into a SearchRequest."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from thisme_stac.errors import ConfigError
from thisme_stac.store.base import SearchRequest, SortDirection, SortField

OPEN_ENDS = ("", "..")
#: Bounds on a filter given as text, checked before the ``cql2`` parser sees it: that parser
#: recurses natively and takes the whole process down on a few thousand nested levels.
MAX_FILTER_CHARS = 100_000
MAX_FILTER_NESTING = 64
MAX_FILTER_OPERATORS = 1000
#: Most values in ``ids`` and ``collections``, and most free-text terms (OR-ed).
MAX_LIST = 10_000
MAX_TERMS = 100
_FILTER_TOKENS = re.compile(r"'(?:[^']|'')*'?|\"[^\"]*\"?|[()]|[A-Za-z_]\w*|[-+*/]")
_FILTER_OPERATORS = frozenset({"and", "or", "not", "+", "-", "*", "/"})


def parse_bbox(text: str) -> tuple[float, ...]:
    """``west,south,east,north`` (or 6 numbers with heights) in EPSG:4326."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (4, 6):
        raise ConfigError(f"bbox needs 4 or 6 comma-separated numbers, got {text!r}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ConfigError(f"bbox has a value that is not a number: {text!r}") from None
    return check_bbox(values)


def check_bbox(values: Sequence[float]) -> tuple[float, ...]:
    """Validate 4 or 6 bbox numbers (antimeridian crossing allowed: west > east)."""
    if len(values) not in (4, 6):
        raise ConfigError(f"bbox needs 4 or 6 numbers, got {len(values)}")
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ConfigError("bbox values must be numbers") from None
    if not all(math.isfinite(v) for v in numbers):
        raise ConfigError("bbox values must be finite numbers")
    half = len(numbers) // 2
    west, south, east, north = numbers[0], numbers[1], numbers[half], numbers[half + 1]
    if not (-180 <= west <= 180 and -180 <= east <= 180 and -90 <= south <= north <= 90):
        raise ConfigError(f"bbox {list(numbers)} is outside EPSG:4326 bounds or has south > north")
    return numbers


def parse_instant(text: str) -> datetime:
    """One RFC 3339 date-time (a date alone means its midnight UTC)."""
    value = text.strip()
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(f"not an RFC 3339 date-time: {text!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_datetime(text: str) -> tuple[datetime | None, datetime | None]:
    """A STAC ``datetime``: an instant or a ``start/end`` interval with ``..`` open ends."""
    if "/" not in text:
        instant = parse_instant(text)
        return instant, instant
    start_text, _, end_text = text.partition("/")
    if start_text.strip() in OPEN_ENDS and end_text.strip() in OPEN_ENDS:
        raise ConfigError("datetime interval cannot be open at both ends")
    start = None if start_text.strip() in OPEN_ENDS else parse_instant(start_text)
    end = None if end_text.strip() in OPEN_ENDS else parse_instant(end_text)
    if start and end and start > end:
        raise ConfigError(f"datetime interval ends before it starts: {text!r}")
    return start, end


def parse_filter(text: str, lang: str | None = None) -> dict[str, Any]:
    """CQL2 text or JSON into CQL2-JSON, validated by the ``cql2`` package."""
    import cql2

    stripped = text.strip()
    if lang is None:
        lang = "cql2-json" if stripped.startswith("{") else "cql2-text"
    if len(stripped) > MAX_FILTER_CHARS:
        raise ConfigError(f"filter is longer than {MAX_FILTER_CHARS} characters")
    if lang == "cql2-text":
        check_filter_text(stripped)
    try:
        if lang == "cql2-json":
            expr = cql2.parse_json(stripped)
        elif lang == "cql2-text":
            expr = cql2.parse_text(stripped)
        else:
            raise ConfigError(f"unknown filter-lang {lang!r} (use cql2-text or cql2-json)")
        # no expr.validate(): its JSON-schema pass costs ~40 ms a call; the SQL compiler
        # rejects every operator, operand or type it cannot run with a clear message
        result = expr.to_json()
    except ConfigError:
        raise
    except Exception as err:  # cql2 raises its own ValueError subclasses
        raise ConfigError(f"invalid {lang} filter: {' '.join(str(err).split())}") from None
    if not isinstance(result, dict):
        raise ConfigError("a CQL2 filter must be an expression object")
    # the same checks for every store: operators, operand types, property names
    from thisme_stac.store.cql2sql import InvalidQuery, compile_filter

    try:
        compile_filter(result)
    except InvalidQuery as err:
        raise ConfigError(f"invalid filter: {err}") from None
    return result


def check_filter_text(text: str) -> None:
    """Refuse cql2-text nested deeper than ``MAX_FILTER_NESTING`` parentheses or chaining more
    than ``MAX_FILTER_OPERATORS`` operators (quoted literals and identifiers are skipped)."""
    depth = operators = 0
    for match in _FILTER_TOKENS.finditer(text):
        part = match.group()
        if part == "(":
            depth += 1
            if depth > MAX_FILTER_NESTING:
                raise ConfigError("filter is nested too deeply")
        elif part == ")":
            depth = max(depth - 1, 0)
        elif part.lower() in _FILTER_OPERATORS:
            operators += 1
            if operators > MAX_FILTER_OPERATORS:
                raise ConfigError(f"filter has more than {MAX_FILTER_OPERATORS} operators")


def _bounded(name: str, values: Sequence[str] | None, most: int = MAX_LIST) -> list[str] | None:
    if not values:
        return None
    if len(values) > most:
        raise ConfigError(f"{name} has more than {most} values")
    return list(values)


def parse_sortby(text: str) -> list[SortField]:
    """``+datetime,-properties.x`` (GET form)."""
    fields: list[SortField] = []
    for raw in text.split(","):
        term = raw.strip()
        if not term:
            continue
        direction: SortDirection = "desc" if term.startswith("-") else "asc"
        name = term.lstrip("+-").strip()
        if not name:
            raise ConfigError(f"empty sortby field in {text!r}")
        fields.append(SortField(name, direction))
    return fields


def parse_geometry(value: str | Mapping[str, Any]) -> dict[str, Any]:
    """A GeoJSON geometry (object or JSON text), checked with shapely."""
    import shapely

    from thisme_stac.store.cql2sql import InvalidQuery, geometry_wkb

    geometry: Any = value
    if isinstance(value, str):
        try:
            geometry = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise ConfigError("intersects must be a GeoJSON geometry object") from None
    if not isinstance(geometry, Mapping) or not isinstance(geometry.get("type"), str):
        raise ConfigError("intersects must be a GeoJSON geometry object")
    try:
        parsed = shapely.from_wkb(geometry_wkb(geometry))
    except InvalidQuery as err:
        raise ConfigError(f"intersects: {err}") from None
    if not shapely.is_valid(parsed):
        reason = shapely.is_valid_reason(parsed)
        raise ConfigError(f"intersects is not a valid geometry: {reason}")
    return dict(geometry)


def build_search(
    *,
    collections: Sequence[str] | None = None,
    ids: Sequence[str] | None = None,
    bbox: str | Sequence[float] | None = None,
    intersects: str | Mapping[str, Any] | None = None,
    datetime_text: str | None = None,
    filter_text: str | Mapping[str, Any] | None = None,
    filter_lang: str | None = None,
    q: Sequence[str] | None = None,
    sortby: str | Sequence[SortField] | None = None,
    limit: int = 10,
    token: str | None = None,
) -> SearchRequest:
    """Build a SearchRequest from textual or decoded parameters; ConfigError on bad input."""
    if limit < 1:
        raise ConfigError("limit must be at least 1")
    if bbox is not None and intersects is not None:
        raise ConfigError("bbox and intersects cannot be used together")
    if isinstance(filter_text, Mapping):
        filter_json: dict[str, Any] | None = parse_filter(
            orjson.dumps(filter_text).decode(), filter_lang or "cql2-json"
        )
    else:
        filter_json = parse_filter(filter_text, filter_lang) if filter_text else None
    return SearchRequest(
        collections=_bounded("collections", collections),
        ids=_bounded("ids", ids),
        bbox=(parse_bbox(bbox) if isinstance(bbox, str) else check_bbox(bbox))
        if bbox is not None
        else None,
        intersects=parse_geometry(intersects) if intersects is not None else None,
        datetime=parse_datetime(datetime_text) if datetime_text else None,
        filter=filter_json,
        q=_bounded("q", q, MAX_TERMS),
        sortby=(parse_sortby(sortby) if isinstance(sortby, str) else list(sortby))
        if sortby
        else None,
        limit=limit,
        token=token,
    )
