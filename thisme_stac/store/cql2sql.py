"""CQL2-JSON -> parameterised SQLite SQL for the embedded store.

Every literal is a bound parameter; property names are checked against a safe pattern and
mapped to indexed columns or to ``json_extract`` with a quoted path. Nothing from the user is
ever pasted into SQL text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import shapely
from shapely.geometry import shape

from thisme_stac.errors import StoreError


class InvalidQuery(StoreError):
    """A search the store cannot run as asked (an HTTP 400 for the API)."""


PROPERTY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_:.\-]{0,127}$")
#: Queryable properties kept as indexed columns of the items table.
COLUMNS: dict[str, str] = {
    "id": "i.id",
    "collection": "i.collection",
    "datetime": "i.datetime",
    "start_datetime": "i.datetime",
    "end_datetime": "i.end_datetime",
    "thisme:site": "i.site",
    "sat:orbit_state": "i.orbit_state",
    "sat:relative_orbit": "i.relative_orbit",
    "platform": "i.platform",
}
TIME_COLUMNS = frozenset({"i.datetime", "i.end_datetime"})
SPATIAL_OPS = {
    "s_intersects": "intersects",
    "s_equals": "equals",
    "s_disjoint": "disjoint",
    "s_touches": "touches",
    "s_within": "within",
    "s_overlaps": "overlaps",
    "s_crosses": "crosses",
    "s_contains": "contains",
}
COMPARISONS = {"=": "=", "<>": "<>", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
MAX_DEPTH = 64
#: Operators and operands in one filter, and values bound for it: far above any real filter,
#: well below SQLite's expression depth (1,000) and parameter (32,766) limits.
MAX_NODES = 1000
MAX_PARAMS = 10_000


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(value: datetime) -> int:
    """Epoch microseconds of an aware date-time, exactly."""
    return (value - EPOCH) // timedelta(microseconds=1)


def to_micros(value: str) -> int:
    """RFC 3339 (or a date) -> epoch microseconds, UTC."""
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
    except (ValueError, AttributeError):
        raise InvalidQuery(f"invalid timestamp {str(value)[:40]!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return micros(parsed)


def property_sql(name: str) -> str:
    """SQL for a property reference (``properties.x`` or ``x``)."""
    name = name.removeprefix("properties.")
    if name in COLUMNS:
        return COLUMNS[name]
    if not PROPERTY_RE.match(name) or '"' in name:
        raise InvalidQuery(f"invalid property name {name[:60]!r}")
    return f"json_extract(i.content, '$.properties.\"{name}\"')"


def geometry_wkb(value: Any) -> bytes:
    """A GeoJSON geometry or ``{"bbox": [...]}`` literal as WKB."""
    try:
        if isinstance(value, Mapping) and "bbox" in value and "type" not in value:
            box = [float(v) for v in value["bbox"]]
            half = len(box) // 2
            geom = shapely.box(box[0], box[1], box[half], box[half + 1])
        else:
            if not _finite_coordinates(value):
                raise InvalidQuery("geometry coordinates must be finite numbers")
            _check_rings(value)
            geom = shape(value)
    except InvalidQuery:
        raise
    except Exception as err:  # shapely raises several types for bad GeoJSON
        raise InvalidQuery(f"invalid geometry literal: {err}") from None
    if geom.is_empty:
        raise InvalidQuery("empty geometry literal")
    if not shapely.is_valid(geom):
        raise InvalidQuery(f"invalid geometry literal: {shapely.is_valid_reason(geom)}")
    return bytes(geom.wkb)


def _finite_coordinates(geometry: Any) -> bool:
    """Every number under ``coordinates`` (of the geometry or of its members) is finite."""
    pending: list[Any] = [geometry]
    while pending:
        node = pending.pop()
        if isinstance(node, Mapping):
            pending += [node.get("coordinates", []), *(node.get("geometries") or [])]
        elif isinstance(node, list | tuple):
            pending += node
        elif not isinstance(node, int | float) or isinstance(node, bool) or not math.isfinite(node):
            return False
    return True


def _check_rings(value: Any) -> None:
    """GeoJSON polygon rings are closed (shapely would close them silently)."""
    kind = value.get("type") if isinstance(value, Mapping) else None
    if kind == "Polygon":
        polygons = [value.get("coordinates")]
    elif kind == "MultiPolygon":
        polygons = list(value.get("coordinates") or [])
    else:
        return
    for rings in polygons:
        for ring in rings if isinstance(rings, list) else []:
            if isinstance(ring, list) and len(ring) >= 2 and ring[0] != ring[-1]:
                raise InvalidQuery("invalid geometry literal: a polygon ring is not closed")


class Compiler:
    """Compiles one CQL2-JSON expression; collects bound parameters in order."""

    def __init__(self) -> None:
        self.params: list[Any] = []
        self._depth = 0
        self._nodes = 0

    def bind(self, value: Any) -> str:
        if len(self.params) >= MAX_PARAMS:
            raise InvalidQuery(f"filter has more than {MAX_PARAMS} values")
        self.params.append(value)
        return "?"

    def compile(self, node: Any) -> str:
        self._depth += 1
        self._nodes += 1
        if self._depth > MAX_DEPTH:
            raise InvalidQuery("filter is nested too deeply")
        if self._nodes > MAX_NODES:
            raise InvalidQuery(f"filter has more than {MAX_NODES} terms")
        try:
            return self._compile(node)
        finally:
            self._depth -= 1

    def _compile(self, node: Any) -> str:
        if isinstance(node, bool):
            return "1" if node else "0"
        if not isinstance(node, Mapping) or "op" not in node:
            raise InvalidQuery("filter must be a CQL2 boolean expression")
        op = str(node["op"]).lower()
        args = node.get("args")
        if not isinstance(args, list):
            raise InvalidQuery(f"operator {op!r} needs an args array")
        handler = self._handlers().get(op)
        if handler is None:
            if op in SPATIAL_OPS:
                return self._spatial(op, args)
            if op.startswith("t_") or op == "anyinteracts":
                return self._temporal(op, args)
            raise InvalidQuery(f"unsupported CQL2 operator {op!r}")
        return handler(op, args)

    def _handlers(self) -> dict[str, Callable[[str, list[Any]], str]]:
        return {
            "and": self._logical,
            "or": self._logical,
            "not": self._not,
            **dict.fromkeys(COMPARISONS, self._comparison),
            "like": self._like,
            "in": self._in,
            "between": self._between,
            "isnull": self._isnull,
        }

    def _logical(self, op: str, args: list[Any]) -> str:
        if len(args) < 2:
            raise InvalidQuery(f"{op!r} needs at least two arguments")
        return "(" + f" {op.upper()} ".join(self.compile(a) for a in args) + ")"

    def _not(self, op: str, args: list[Any]) -> str:
        if len(args) != 1:
            raise InvalidQuery("'not' takes one argument")
        return f"(NOT {self.compile(args[0])})"

    def scalar(self, node: Any, *, time_column: bool = False) -> str:
        """A property, a literal or a casei/accenti function as SQL."""
        if isinstance(node, Mapping):
            if "property" in node:
                return property_sql(str(node["property"]))
            if "timestamp" in node or "date" in node:
                raw = str(node.get("timestamp") or node.get("date"))
                return self.bind(to_micros(raw) if time_column else raw)
            if node.get("op") in ("casei", "accenti") and isinstance(node.get("args"), list):
                fn = "lower" if node["op"] == "casei" else "thisme_unaccent"
                if not node["args"]:
                    raise InvalidQuery(f"{node['op']!r} takes one argument")
                self._depth += 1
                try:
                    if self._depth > MAX_DEPTH:
                        raise InvalidQuery("filter is nested too deeply")
                    return f"{fn}({self.scalar(node['args'][0])})"
                finally:
                    self._depth -= 1
            raise InvalidQuery(f"unsupported operand {str(dict(node))[:60]}")
        if isinstance(node, bool):
            return "1" if node else "0"
        if isinstance(node, int | float | str) or node is None:
            if time_column and isinstance(node, str):
                return self.bind(to_micros(node))
            if isinstance(node, float) and node.is_integer():
                return self.bind(int(node))
            return self.bind(node)
        raise InvalidQuery(f"unsupported operand {str(node)[:60]}")

    def _pair(self, args: list[Any], count: int) -> list[str]:
        if len(args) != count:
            raise InvalidQuery(f"expected {count} arguments, got {len(args)}")
        timey = any(
            isinstance(a, Mapping) and "property" in a and self._is_time(a["property"])
            for a in args
        )
        return [self.scalar(a, time_column=timey) for a in args]

    @staticmethod
    def _is_time(name: Any) -> bool:
        return COLUMNS.get(str(name).removeprefix("properties."), "") in TIME_COLUMNS

    def _comparison(self, op: str, args: list[Any]) -> str:
        left, right = self._pair(args, 2)
        return f"({left} {COMPARISONS[op]} {right})"

    def _like(self, op: str, args: list[Any]) -> str:
        pattern = args[1] if len(args) == 2 else None
        if isinstance(pattern, Mapping) and set(pattern) <= {"casei", "accenti"}:
            pattern = next(iter(pattern.values()), None)
        if not isinstance(pattern, str):
            raise InvalidQuery("'like' needs a text pattern as its second argument")
        left, right = self._pair(args, 2)
        return f"({left} LIKE {right} ESCAPE '\\')"

    def _in(self, op: str, args: list[Any]) -> str:
        if len(args) != 2 or not isinstance(args[1], list) or not args[1]:
            raise InvalidQuery("'in' needs a property and a non-empty list")
        timey = isinstance(args[0], Mapping) and self._is_time(args[0].get("property"))
        left = self.scalar(args[0], time_column=timey)
        values = ", ".join(self.scalar(v, time_column=timey) for v in args[1])
        return f"({left} IN ({values}))"

    def _between(self, op: str, args: list[Any]) -> str:
        value, low, high = self._pair(args, 3)
        return f"({value} BETWEEN {low} AND {high})"

    def _isnull(self, op: str, args: list[Any]) -> str:
        if len(args) != 1:
            raise InvalidQuery("'isNull' takes one argument")
        return f"({self.scalar(args[0])} IS NULL)"

    @staticmethod
    def _property_and_literal(op: str, args: list[Any]) -> tuple[Any, Any]:
        """The two operands of a spatial or temporal operator, property first."""
        if len(args) != 2:
            raise InvalidQuery(f"{op!r} takes two arguments")
        prop, literal = args
        if isinstance(literal, Mapping) and "property" in literal:
            prop, literal = literal, prop
        return prop, literal

    def _spatial(self, op: str, args: list[Any]) -> str:
        prop, literal = self._property_and_literal(op, args)
        if not (isinstance(prop, Mapping) and prop.get("property") == "geometry"):
            raise InvalidQuery(f"{op!r} works on the 'geometry' property")
        wkb = geometry_wkb(literal)
        predicate = SPATIAL_OPS[op]
        if predicate == "disjoint":
            return f"thisme_spatial('disjoint', i.geometry, {self.bind(wkb)})"
        minx, miny, maxx, maxy = shapely.from_wkb(wkb).bounds
        prefilter = (
            f"i.rid IN (SELECT id FROM items_rtree WHERE minx <= {self.bind(maxx)} "
            f"AND maxx >= {self.bind(minx)} AND miny <= {self.bind(maxy)} "
            f"AND maxy >= {self.bind(miny)})"
        )
        return f"({prefilter} AND thisme_spatial('{predicate}', i.geometry, {self.bind(wkb)}))"

    def _interval(self, node: Any) -> tuple[int | None, int | None]:
        if isinstance(node, Mapping) and "interval" in node:
            bounds = node["interval"]
            if not isinstance(bounds, list) or len(bounds) != 2:
                raise InvalidQuery("an interval has two bounds")
            out: list[int | None] = []
            for bound in bounds:
                if bound == ".." or bound is None:
                    out.append(None)
                elif isinstance(bound, Mapping):
                    out.append(to_micros(str(bound.get("timestamp") or bound.get("date"))))
                else:
                    out.append(to_micros(str(bound)))
            return out[0], out[1]
        if isinstance(node, Mapping) and ("timestamp" in node or "date" in node):
            instant = to_micros(str(node.get("timestamp") or node.get("date")))
            return instant, instant
        raise InvalidQuery("temporal operators need a timestamp, date or interval literal")

    def _temporal(self, op: str, args: list[Any]) -> str:
        prop, literal = self._property_and_literal(op, args)
        name = prop.get("property") if isinstance(prop, Mapping) else None
        if not self._is_time(name):
            raise InvalidQuery(f"{op!r} works on datetime, start_datetime or end_datetime")
        start, end = self._interval(literal)
        lo = "i.datetime" if name != "end_datetime" else "i.end_datetime"
        hi = "i.end_datetime" if name != "start_datetime" else "i.datetime"
        first = start if start is not None else -(2**62)
        last = end if end is not None else 2**62
        # placeholders are positional: bind each value where the SQL text uses it
        if op in ("t_intersects", "anyinteracts"):
            return f"({lo} <= {self.bind(last)} AND {hi} >= {self.bind(first)})"
        if op == "t_before":
            return f"({hi} < {self.bind(first)})"
        if op == "t_after":
            return f"({lo} > {self.bind(last)})"
        if op == "t_during":
            return f"({lo} > {self.bind(first)} AND {hi} < {self.bind(last)})"
        if op == "t_equals":
            return f"({lo} = {self.bind(first)} AND {hi} = {self.bind(last)})"
        if op == "t_disjoint":
            return f"({hi} < {self.bind(first)} OR {lo} > {self.bind(last)})"
        raise InvalidQuery(f"unsupported temporal operator {op!r}")


def compile_filter(expr: Mapping[str, Any] | bool) -> tuple[str, list[Any]]:
    """Compile CQL2-JSON into (SQL boolean expression over alias ``i``, parameters)."""
    compiler = Compiler()
    sql = compiler.compile(expr)
    return sql, compiler.params
