"""Embedded SQLite store: one file, WAL, items as JSON + indexed columns + R*Tree on bbox."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import struct
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import shapely
from shapely.prepared import PreparedGeometry, prep

from thisme_stac.errors import StoreError
from thisme_stac.store.base import JSON, SearchPage, SearchRequest, SortField, UpsertResult
from thisme_stac.store.batch import grow_extent, item_geometries, time_span
from thisme_stac.store.bbox import bbox_boxes
from thisme_stac.store.cql2sql import (
    EPOCH,
    InvalidQuery,
    compile_filter,
    micros,
    property_sql,
    to_micros,
)
from thisme_stac.store.freetext import free_text_terms
from thisme_stac.store.paging import decode_token, encode_token, query_fingerprint

__all__ = ["InvalidQuery", "SQLiteStore"]

SCHEMA_VERSION = 3
#: R*Tree time axis: days since 1970 (float32 in the tree, rounded outwards by SQLite).
DAY_MICROS = 86_400_000_000
SUMMARY_FIELDS = ("thisme:site", "platform", "sat:orbit_state", "sat:relative_orbit")
DEFAULT_SORT = (SortField("datetime", "desc"), SortField("id", "desc"))
CHUNK = 500
PAGE_SIZE = 16384

SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    id TEXT PRIMARY KEY,
    content TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS collection_extents (
    collection TEXT PRIMARY KEY,
    minx REAL, miny REAL, maxx REAL, maxy REAL,
    tmin INTEGER, tmax INTEGER
);
CREATE TABLE IF NOT EXISTS collection_summaries (
    collection TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (collection, field, value)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS items (
    rid INTEGER PRIMARY KEY,
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    datetime INTEGER NOT NULL,
    end_datetime INTEGER NOT NULL,
    site TEXT,
    orbit_state TEXT,
    relative_orbit INTEGER,
    platform TEXT,
    text TEXT NOT NULL,
    geometry BLOB NOT NULL,
    hash BLOB NOT NULL,
    content TEXT NOT NULL,
    UNIQUE (collection, id)
);
CREATE VIRTUAL TABLE IF NOT EXISTS items_rtree USING rtree (id, minx, maxx, miny, maxy, mint, maxt);
CREATE TABLE IF NOT EXISTS checkpoints (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
#: Secondary indexes of the items table (the API's search paths). A first harvest into an empty
#: store builds them once at its end (``defer_indexes``), which beats updating them item by item:
#: their keys arrive in random order, so each page dirties a leaf per item and per index.
INDEXES = {
    "items_datetime": "items (datetime, id)",
    "items_coll_datetime": "items (collection, datetime, id)",
    "items_site": "items (site, orbit_state, datetime, id)",
    "items_site_datetime": "items (site, datetime, id)",
}
SCHEMA += "".join(f"CREATE INDEX IF NOT EXISTS {n} ON {on};\n" for n, on in INDEXES.items())


@lru_cache(maxsize=64)
def _prepared(wkb: bytes) -> PreparedGeometry:
    return prep(shapely.from_wkb(wkb))


@lru_cache(maxsize=64)
def _geometry(wkb: bytes) -> Any:
    return shapely.from_wkb(wkb)


_RECTANGLE = struct.Struct("<BIII10d")  # little-endian Polygon, 1 ring, 5 points


def _rectangle(wkb: bytes) -> tuple[float, float, float, float] | None:
    """Bounds of an axis-aligned rectangle polygon (THISME footprints), else None."""
    if len(wkb) != _RECTANGLE.size or wkb[0] != 1:
        return None
    _, kind, rings, points, *coords = _RECTANGLE.unpack(wkb)
    if kind != 3 or rings != 1 or points != 5:
        return None
    xs, ys = coords[0::2], coords[1::2]
    if xs[0] != xs[4] or ys[0] != ys[4]:
        return None
    for k in range(4):
        if xs[k] != xs[k + 1] and ys[k] != ys[k + 1]:
            return None
    if len(set(xs)) != 2 or len(set(ys)) != 2:
        return None
    return min(xs), min(ys), max(xs), max(ys)


@lru_cache(maxsize=64)
def _query_rectangle(wkb: bytes) -> tuple[float, float, float, float] | None:
    return _rectangle(wkb)


def _spatial(predicate: str, item_wkb: bytes, query_wkb: bytes) -> int:
    """SQLite function: shapely predicate between an item geometry and a query geometry."""
    if predicate == "intersects" and (box := _query_rectangle(query_wkb)) is not None:
        # two axis-aligned rectangles intersect (boundaries included) iff their ranges overlap
        item_box = _rectangle(item_wkb)
        if item_box is not None:
            return int(
                item_box[0] <= box[2]
                and box[0] <= item_box[2]
                and item_box[1] <= box[3]
                and box[1] <= item_box[3]
            )
    item = shapely.from_wkb(item_wkb)
    if predicate in (
        "intersects",
        "contains",
        "within",
        "disjoint",
        "touches",
        "crosses",
        "overlaps",
    ):
        prepared = _prepared(query_wkb)
        # predicates are asked as "item <op> query"; prepared geometry is the query side
        mirror = {"contains": "within", "within": "contains"}.get(predicate, predicate)
        return int(bool(getattr(prepared, mirror)(item)))
    return int(bool(getattr(item, predicate)(_geometry(query_wkb))))


def _unaccent(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    return "".join(
        ch for ch in unicodedata.normalize("NFKD", value) if not unicodedata.combining(ch)
    )


def _encode_token(fingerprint: str, values: Sequence[Any]) -> str:
    return encode_token(fingerprint, list(values))


def _decode_token(token: str, fingerprint: str, size: int) -> list[Any]:
    values = decode_token(token, fingerprint)
    if not isinstance(values, list) or len(values) != size:
        raise InvalidQuery("pagination token belongs to another search")
    return values


def _interval(item: JSON) -> tuple[int, int]:
    start, end = time_span(item)
    first = to_micros(start)
    return first, first if end == start else to_micros(end)


class ItemRow(NamedTuple):
    """One item's columns, as ``prepare_rows`` computes them."""

    collection: str
    id: str
    datetime: int
    end_datetime: int
    site: str | None
    orbit_state: str | None
    relative_orbit: int | None
    platform: str | None
    text: str
    geometry: bytes
    bounds: tuple[float, float, float, float]
    hash: bytes
    content: str
    #: (field, value) of the collection summaries this item contributes to
    summary: tuple[tuple[str, str | int], ...]


def prepare_rows(items: list[JSON]) -> list[ItemRow]:
    """Validate a batch and compute its columns; geometries are parsed in one shapely call."""
    geoms = item_geometries(items)
    wkbs = shapely.to_wkb(geoms) if geoms else []
    bounds = shapely.bounds(geoms).tolist() if geoms else []
    rows: list[ItemRow] = []
    for item, wkb, box in zip(items, wkbs, bounds, strict=True):
        start, end = _interval(item)
        props = item.get("properties") or {}
        raw = orjson.dumps(item)
        words = [
            *(props.get("keywords") or []),
            props.get("title") or "",
            props.get("description") or "",
        ]
        rel = props.get("sat:relative_orbit")
        summary = tuple(
            (name, value)
            for name in SUMMARY_FIELDS
            if isinstance(value := props.get(name), str | int) and not isinstance(value, bool)
        )
        rows.append(
            ItemRow(
                item["collection"],
                item["id"],
                start,
                end,
                props.get("thisme:site"),
                props.get("sat:orbit_state"),
                rel if isinstance(rel, int) else None,
                props.get("platform"),
                " | ".join(str(w) for w in words).lower(),
                wkb,
                (box[0], box[1], box[2], box[3]),
                hashlib.blake2b(raw, digest_size=16).digest(),
                raw.decode(),
                summary,
            )
        )
    return rows


class SQLiteStore:
    """The embedded ``Store``: safe for one writer and many reader threads."""

    def __init__(self, path: str | Path, *, create: bool = True, readonly: bool = False) -> None:
        self.path = Path(path)
        self.url = str(self.path)
        self.readonly = readonly
        if not self.path.exists() and (readonly or not create):
            raise StoreError(f"no store at {self.path}")
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a directory, not a store file")
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        conn = self._conn()
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} was written by a newer thisme-stac (schema {version})"
                )
            if version < SCHEMA_VERSION and not readonly:
                with self._write_lock:
                    if version == 1:
                        _migrate_1_to_2(conn)
                    conn.executescript(SCHEMA)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            if not readonly:
                self.ensure_indexes()  # after a first harvest that was stopped before its end
        except sqlite3.DatabaseError as err:
            self.close()
            raise StoreError(f"{self.path} is not a thisme-stac SQLite store ({err})") from None

    # --- connections -------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            if self.readonly:
                conn = sqlite3.connect(
                    f"file:{self.path}?mode=ro",
                    uri=True,
                    check_same_thread=False,
                    isolation_level=None,
                )
            else:
                conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 30000")
            if not self.readonly:
                # a new file only: items are ~3 KB of JSON, one per 4 KB page; 16 KB pages hold
                # five (a fifth smaller file, ~10% less write CPU). Ignored once a file has pages.
                conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
                conn.execute("PRAGMA journal_mode = WAL")
                # checkpoint (and fsync) every ~32 MB of WAL rather than every 4 MB: index pages
                # rewritten by consecutive batches then reach the database file once
                conn.execute("PRAGMA wal_autocheckpoint = 8192")
                conn.execute("PRAGMA journal_size_limit = 67108864")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA case_sensitive_like = ON")
            conn.execute("PRAGMA cache_size = -32768")
        except sqlite3.DatabaseError as err:
            raise StoreError(f"cannot open store {self.path}: {err}") from None
        conn.create_function("thisme_spatial", 3, _spatial, deterministic=True)
        conn.create_function("thisme_unaccent", 1, _unaccent, deterministic=True)
        self._local.conn = conn
        with self._connections_lock:
            self._connections.append(conn)
        return conn

    def close(self) -> None:
        with self._connections_lock:
            for conn in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._connections.clear()
        self._local = threading.local()

    def _write(self) -> _Transaction:
        if self.readonly:
            raise StoreError(f"store {self.path} is open read-only")
        return _Transaction(self._conn(), self._write_lock)

    # --- bulk loading ------------------------------------------------------------------------
    def defer_indexes(self) -> bool:
        """Drop the secondary indexes if the store holds no item yet (True if it did so).

        ``ensure_indexes`` builds them again; opening the store for writing does too, so a
        stopped load never leaves a store without them for long. Searches stay correct meanwhile.
        """
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM items LIMIT 1").fetchone() is not None:
                return False
            for name in INDEXES:
                conn.execute(f"DROP INDEX IF EXISTS {name}")
        return True

    def ensure_indexes(self) -> None:
        """Create the secondary indexes that are missing (one sort per index)."""
        conn = self._conn()
        present = {
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'items'"
            )
        }
        if present.issuperset(INDEXES):
            return
        with self._write() as conn:
            for name, on in INDEXES.items():
                conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {on}")

    # --- collections -------------------------------------------------------------------------
    def upsert_collection(self, collection: JSON) -> None:
        cid = collection.get("id")
        if not isinstance(cid, str) or not cid:
            raise InvalidQuery("a collection needs an id")
        with self._write() as conn:
            conn.execute(
                "INSERT INTO collections (id, content) VALUES (?, ?) "
                "ON CONFLICT (id) DO UPDATE SET content = excluded.content",
                (cid, orjson.dumps(collection).decode()),
            )

    def get_collection(self, collection_id: str) -> JSON | None:
        conn = self._conn()
        row = conn.execute(
            "SELECT content FROM collections WHERE id = ?", (collection_id,)
        ).fetchone()
        if row is None:
            return None
        collection: JSON = orjson.loads(row[0])
        extent = conn.execute(
            "SELECT minx, miny, maxx, maxy, tmin, tmax FROM collection_extents "
            "WHERE collection = ?",
            (collection_id,),
        ).fetchone()
        if extent is not None and extent[0] is not None:
            from thisme_stac.translate.item import format_datetime

            minx, miny, maxx, maxy, tmin, tmax = extent
            collection["extent"] = {
                "spatial": {"bbox": [[minx, miny, maxx, maxy]]},
                "temporal": {
                    "interval": [
                        [format_datetime(_from_micros(tmin)), format_datetime(_from_micros(tmax))]
                    ]
                },
            }
        summaries = collection.setdefault("summaries", {})
        for field in SUMMARY_FIELDS:
            values = [
                orjson.loads(v)
                for (v,) in conn.execute(
                    "SELECT value FROM collection_summaries WHERE collection = ? AND field = ?",
                    (collection_id, field),
                )
            ]
            if values:
                summaries[field] = sorted(values, key=lambda v: (str(type(v)), v))
        return collection

    def list_collections(self) -> list[JSON]:
        ids = [r[0] for r in self._conn().execute("SELECT id FROM collections ORDER BY id")]
        return [c for c in (self.get_collection(i) for i in ids) if c is not None]

    def delete_collection(self, collection_id: str) -> bool:
        with self._write() as conn:
            conn.execute(
                "DELETE FROM items_rtree WHERE id IN (SELECT rid FROM items WHERE collection = ?)",
                (collection_id,),
            )
            conn.execute("DELETE FROM items WHERE collection = ?", (collection_id,))
            conn.execute("DELETE FROM collection_extents WHERE collection = ?", (collection_id,))
            conn.execute("DELETE FROM collection_summaries WHERE collection = ?", (collection_id,))
            return (
                conn.execute("DELETE FROM collections WHERE id = ?", (collection_id,)).rowcount > 0
            )

    # --- items -------------------------------------------------------------------------------
    #: items -> rows, pure and picklable (the harvester may run it in another process)
    prepare = staticmethod(prepare_rows)

    def upsert_items(
        self, items: Iterable[JSON], *, checkpoint: tuple[str, str] | None = None
    ) -> UpsertResult:
        return self.upsert_prepared(prepare_rows(list(items)), checkpoint=checkpoint)

    def upsert_prepared(
        self, rows: list[ItemRow], *, checkpoint: tuple[str, str] | None = None
    ) -> UpsertResult:
        """``upsert_items`` of rows made by ``prepare``."""
        result = UpsertResult()
        with self._write() as conn:
            for start in range(0, len(rows), CHUNK):
                self._upsert_chunk(conn, rows[start : start + CHUNK], result)
            self._merge_extents(conn, rows)
            if checkpoint is not None:
                self._set_checkpoint(conn, *checkpoint)
        return result

    def _upsert_chunk(
        self, conn: sqlite3.Connection, rows: list[ItemRow], result: UpsertResult
    ) -> None:
        existing: dict[tuple[str, str], tuple[int, bytes]] = {}
        for collection in {r.collection for r in rows}:
            ids = [r.id for r in rows if r.collection == collection]
            marks = ",".join("?" * len(ids))
            for rid, item_id, digest in conn.execute(
                f"SELECT rid, id, hash FROM items WHERE collection = ? AND id IN ({marks})",
                (collection, *ids),
            ):
                existing[(collection, item_id)] = (rid, digest)
        next_rid = int(conn.execute("SELECT coalesce(max(rid), 0) FROM items").fetchone()[0]) + 1
        inserts: list[tuple[Any, ...]] = []
        boxes: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        box_updates: list[tuple[Any, ...]] = []
        for row in rows:
            values = (
                row.datetime,
                row.end_datetime,
                row.site,
                row.orbit_state,
                row.relative_orbit,
                row.platform,
                row.text,
                row.geometry,
                row.hash,
                row.content,
            )
            minx, miny, maxx, maxy = row.bounds
            key = (row.collection, row.id)
            found = existing.get(key)
            if found is None:
                inserts.append((next_rid, row.collection, row.id, *values))
                boxes.append((next_rid, minx, maxx, miny, maxy, *_days(row)))
                existing[key] = (next_rid, row.hash)
                next_rid += 1
                result.new += 1
                result.new_ids.append(row.id)
            elif found[1] == row.hash:
                result.unchanged += 1
            else:
                updates.append((*values, found[0]))
                box_updates.append((minx, maxx, miny, maxy, *_days(row), found[0]))
                existing[key] = (found[0], row.hash)
                result.updated += 1
                result.updated_ids.append(row.id)
        conn.executemany(
            "INSERT INTO items (rid, collection, id, datetime, end_datetime, site, orbit_state, "
            "relative_orbit, platform, text, geometry, hash, content) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            inserts,
        )
        conn.executemany("INSERT INTO items_rtree VALUES (?,?,?,?,?,?,?)", boxes)
        conn.executemany(
            "UPDATE items SET datetime=?, end_datetime=?, site=?, orbit_state=?, "
            "relative_orbit=?, platform=?, text=?, geometry=?, hash=?, content=? WHERE rid = ?",
            updates,
        )
        conn.executemany(
            "UPDATE items_rtree SET minx=?, maxx=?, miny=?, maxy=?, mint=?, maxt=? WHERE id = ?",
            box_updates,
        )

    @staticmethod
    def _merge_extents(conn: sqlite3.Connection, rows: list[ItemRow]) -> None:
        by_collection: dict[str, list[Any]] = {}
        values: set[tuple[str, str, Any]] = set()
        for row in rows:
            grow_extent(by_collection, row.collection, row.bounds, row.datetime, row.end_datetime)
            for field, value in row.summary:
                values.add((row.collection, field, value))
        summaries = {(c, f, orjson.dumps(v).decode()) for c, f, v in values}
        for collection, ext in by_collection.items():
            conn.execute(
                "INSERT INTO collection_extents VALUES (?,?,?,?,?,?,?) "
                "ON CONFLICT (collection) DO UPDATE SET "
                "minx = min(minx, excluded.minx), miny = min(miny, excluded.miny), "
                "maxx = max(maxx, excluded.maxx), maxy = max(maxy, excluded.maxy), "
                "tmin = min(tmin, excluded.tmin), tmax = max(tmax, excluded.tmax)",
                (collection, *ext),
            )
        conn.executemany(
            "INSERT OR IGNORE INTO collection_summaries VALUES (?,?,?)", sorted(summaries)
        )

    def get_item(self, collection_id: str, item_id: str) -> JSON | None:
        row = (
            self._conn()
            .execute(
                "SELECT content FROM items WHERE collection = ? AND id = ?",
                (collection_id, item_id),
            )
            .fetchone()
        )
        return orjson.loads(row[0]) if row else None

    def delete_item(self, collection_id: str, item_id: str) -> bool:
        with self._write() as conn:
            row = conn.execute(
                "SELECT rid FROM items WHERE collection = ? AND id = ?", (collection_id, item_id)
            ).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM items_rtree WHERE id = ?", (row[0],))
            conn.execute("DELETE FROM items WHERE rid = ?", (row[0],))
            return True

    def count_items(self, collection_id: str | None = None) -> int:
        if collection_id is None:
            return int(self._conn().execute("SELECT count(*) FROM items").fetchone()[0])
        return int(
            self._conn()
            .execute("SELECT count(*) FROM items WHERE collection = ?", (collection_id,))
            .fetchone()[0]
        )

    def iter_items(self, collection_id: str | None = None) -> Iterator[JSON]:
        conn = self._conn()
        where, params = ("WHERE collection = ?", [collection_id]) if collection_id else ("", [])
        cursor = conn.execute(
            f"SELECT content FROM items {where} ORDER BY collection, datetime, id", params
        )
        while batch := cursor.fetchmany(1000):
            for (content,) in batch:
                yield orjson.loads(content)

    # --- search ------------------------------------------------------------------------------
    def search(self, request: SearchRequest) -> SearchPage:
        if request.limit < 1:
            raise InvalidQuery("limit must be at least 1")
        where, params = self._where(request)
        sort = list(request.sortby or DEFAULT_SORT)
        if not any(s.field.removeprefix("properties.") == "id" for s in sort):
            sort.append(SortField("id", sort[-1].direction))
        keys = [property_sql(s.field) for s in sort]
        conn = self._conn()
        fingerprint = query_fingerprint(request)
        page_where, page_params = where, list(params)
        if request.token:
            last = _decode_token(request.token, fingerprint, len(keys))
            clause, extra = _after(keys, [s.direction for s in sort], last)
            page_where = f"({where}) AND {clause}"
            page_params += extra
        order = ", ".join(f"{k} {s.direction.upper()}" for k, s in zip(keys, sort, strict=True))
        rows = conn.execute(
            f"SELECT i.content, {', '.join(keys)} FROM items i WHERE {page_where} "
            f"ORDER BY {order} LIMIT ?",
            [*page_params, request.limit + 1],
        ).fetchall()
        more = len(rows) > request.limit
        if request.token is None and not more:
            matched = len(rows)  # a first page that holds every match: no count query
        else:
            matched = int(
                conn.execute(f"SELECT count(*) FROM items i WHERE {where}", params).fetchone()[0]
            )
        rows = rows[: request.limit]
        items = [orjson.loads(r[0]) for r in rows]
        token = _encode_token(fingerprint, list(rows[-1][1:])) if more and rows else None
        return SearchPage(items=items, next_token=token, number_matched=matched)

    def _where(self, request: SearchRequest) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if request.collections:
            clauses.append(f"i.collection IN ({','.join('?' * len(request.collections))})")
            params += list(request.collections)
        if request.ids:
            # (collection, id) is the unique index: give it the collections when none are asked
            if not request.collections:
                clauses.append("i.collection IN (SELECT collection FROM collection_extents)")
            clauses.append(f"i.id IN ({','.join('?' * len(request.ids))})")
            params += list(request.ids)
        if request.datetime:
            start, end = request.datetime
            if start is not None:
                clauses.append("i.end_datetime >= ?")
                params.append(micros(start))
            if end is not None:
                clauses.append("i.datetime <= ?")
                params.append(micros(end))
        if request.q:
            terms = free_text_terms(request.q)
            if terms:
                clauses.append("(" + " OR ".join("instr(i.text, ?) > 0" for _ in terms) + ")")
                params += terms
        if request.filter:
            sql, extra = compile_filter(request.filter)
            clauses.append(sql)
            params += extra
        # spatial tests (Python functions) last, so cheap column tests discard rows first
        spatial: list[str] = []
        spatial_params: list[Any] = []
        if request.bbox:
            # the tree's time axis narrows space and time at once; the exact datetime test
            # above and the exact geometry test below keep results exact
            t_lo, t_hi = -1e9, 1e9
            if request.datetime:
                if request.datetime[0] is not None:
                    t_lo = micros(request.datetime[0]) / DAY_MICROS
                if request.datetime[1] is not None:
                    t_hi = micros(request.datetime[1]) / DAY_MICROS
            ors = []
            for lo, south, hi, north in bbox_boxes(request.bbox):
                wkb = bytes(shapely.box(lo, south, hi, north).wkb)
                ors.append(
                    "(i.rid IN (SELECT id FROM items_rtree WHERE minx <= ? AND maxx >= ? "
                    "AND miny <= ? AND maxy >= ? AND mint <= ? AND maxt >= ?) "
                    "AND thisme_spatial('intersects', i.geometry, ?))"
                )
                spatial_params += [hi, lo, north, south, t_hi, t_lo, wkb]
            spatial.append("(" + " OR ".join(ors) + ")")
        if request.intersects:
            sql, extra = compile_filter(
                {"op": "s_intersects", "args": [{"property": "geometry"}, request.intersects]}
            )
            spatial.append(sql)
            spatial_params += extra
        clauses += spatial
        params += spatial_params
        return (" AND ".join(clauses) or "1"), params

    def queryables(self, collection_id: str | None = None) -> JSON:
        props: dict[str, Any] = {
            "id": {"title": "Item id", "type": "string"},
            "collection": {"title": "Collection", "type": "string"},
            "datetime": {"title": "Acquisition time", "type": "string", "format": "date-time"},
            "geometry": {"title": "Footprint", "$ref": "https://geojson.org/schema/Geometry.json"},
            "thisme:site": {"title": "THISME site", "type": "string"},
            "sat:orbit_state": {
                "title": "Orbit state",
                "type": "string",
                "enum": ["ascending", "descending"],
            },
            "sat:relative_orbit": {"title": "Relative orbit", "type": "integer", "minimum": 1},
            "platform": {
                "title": "Platform",
                "type": "string",
                "enum": ["sentinel-1a", "sentinel-1b", "sentinel-1c"],
            },
            "processing:level": {"title": "Processing level", "type": "string"},
        }
        return {
            "$schema": "https://json-schema.org/draft/2019-09/schema",
            "$id": f"queryables/{collection_id or 'all'}",
            "type": "object",
            "title": f"Queryables of {collection_id or 'all collections'}",
            "properties": props,
            "additionalProperties": True,
        }

    # --- checkpoints -------------------------------------------------------------------------
    def get_checkpoint(self, key: str) -> str | None:
        row = self._conn().execute("SELECT value FROM checkpoints WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_checkpoint(self, key: str, value: str | None) -> None:
        with self._write() as conn:
            self._set_checkpoint(conn, key, value)

    @staticmethod
    def _set_checkpoint(conn: sqlite3.Connection, key: str, value: str | None) -> None:
        if value is None:
            conn.execute("DELETE FROM checkpoints WHERE key = ?", (key,))
        else:
            conn.execute(
                "INSERT INTO checkpoints VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )


def _after(keys: list[str], directions: list[str], last: list[Any]) -> tuple[str, list[Any]]:
    """Keyset condition: rows strictly after ``last`` in the given order."""
    ors: list[str] = []
    params: list[Any] = []
    for n, (key, direction) in enumerate(zip(keys, directions, strict=True)):
        parts = []
        for k, v in zip(keys[:n], last[:n], strict=True):
            parts.append(f"{k} IS ?")
            params.append(v)
        parts.append(f"{key} {'<' if direction == 'desc' else '>'} ?")
        params.append(last[n])
        ors.append("(" + " AND ".join(parts) + ")")
    return "(" + " OR ".join(ors) + ")", params


def _days(row: ItemRow) -> tuple[float, float]:
    return row.datetime / DAY_MICROS, row.end_datetime / DAY_MICROS


def _migrate_1_to_2(conn: sqlite3.Connection) -> None:
    """Schema 2 adds a time axis to the R*Tree (rebuilt from the items, in one transaction)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE VIRTUAL TABLE items_rtree_t USING rtree "
            "(id, minx, maxx, miny, maxy, mint, maxt)"
        )
        conn.execute(
            "INSERT INTO items_rtree_t SELECT r.id, r.minx, r.maxx, r.miny, r.maxy, "
            f"i.datetime / {float(DAY_MICROS)}, i.end_datetime / {float(DAY_MICROS)} "
            "FROM items_rtree r JOIN items i ON i.rid = r.id"
        )
        conn.execute("DROP TABLE items_rtree")
        conn.execute("ALTER TABLE items_rtree_t RENAME TO items_rtree")
        conn.execute("PRAGMA user_version = 2")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` under the store's write lock; rollback on error."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock) -> None:
        self.conn = conn
        self.lock = lock

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.lock.release()
            raise
        return self.conn

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            self.lock.release()
