"""Item writes of the pgstac store: a batch and its checkpoint in one transaction, in few trips.

A batch is written as ``pypgstac load`` writes items (dehydrated against the collection's base
item with ``hydraters``, EWKB from shapely, one ``COPY`` into ``pgstac.items``), with what the
harvester needs beside it: new / updated / unchanged by content hash (kept in pgstac's
``private`` column), the collections' extents and summaries, and the checkpoint. What is read
before the write goes in one pipelined round trip, what is written after it in another.
"""

from __future__ import annotations

import hashlib
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import psycopg
import shapely
from hydraters import dehydrate
from psycopg import sql

from thisme_stac.store.base import JSON, UpsertResult
from thisme_stac.store.batch import grow_extent, item_geometries, item_key, time_span
from thisme_stac.store.cql2sql import InvalidQuery

#: The schema holding what pgstac has no place for; pgstac's own objects stay in ``pgstac``.
SCHEMA = "thisme"
#: Where an item's content hash lives: pgstac's ``private`` column, which the STAC API never
#: shows and which any other writer of the item replaces (so its hash is then unknown).
HASH_KEY = "thisme:hash"
SUMMARY_FIELDS = ("thisme:site", "platform", "sat:orbit_state", "sat:relative_orbit")
#: Items are copied in the columns ``pypgstac load`` writes: into a one-partition collection's
#: partition, as ``pypgstac load`` does (pgstac's after-insert trigger on the parent table would
#: keep a transition table of every row only to find the partitions, which ``check_partition``
#: recorded already), otherwise into ``pgstac.items``, which routes them.
COPY_SQL = sql.SQL(
    "COPY pgstac.{} (id, collection, datetime, end_datetime, geometry, content, private) FROM STDIN"
)
SAVEPOINT = "thisme_write"
GEOMETRY_CHUNK = 100
#: A batch's commit does not wait for its WAL flush: a crash of the database server may lose
#: the last batches of a harvest, never part of one (the checkpoint goes with its items).
SYNC_COMMIT_OFF = "SET LOCAL synchronous_commit = off"

#: Datetime and end_datetime bounds a partition's constraint admits: (lo, hi, end lo, end hi).
Span = tuple[datetime, datetime, datetime, datetime]
Extent = tuple[float, float, float, float, datetime, datetime]


@dataclass(slots=True)
class Row:
    """One validated item of a batch, with what writing it needs."""

    collection: str
    id: str
    start: datetime
    end: datetime
    hash: str
    blob: bytes
    item: JSON
    #: Set while the row is copied (its geometry is parsed then, overlapping the server's work).
    bounds: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)


@dataclass(slots=True)
class _Collection:
    """A collection as the first round trip reads it."""

    base: JSON
    trunc: str | None
    base_number: int | None
    key: int
    content: JSON
    extent: Extent | None
    summaries: set[tuple[str, Any]]


def parse_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise InvalidQuery(f"invalid timestamp {value[:40]!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def prepare_rows(items: list[JSON]) -> list[Row]:
    """Check each item's id, collection and time span (InvalidQuery names a bad item) and hash
    it. Geometries are checked as the items are copied: a bad one aborts the transaction."""
    rows: list[Row] = []
    for item in items:
        item_id, collection = item_key(item)
        start_text, end_text = time_span(item)
        start, end = parse_time(start_text), parse_time(end_text)
        if start > end:
            raise InvalidQuery(f"item {item_id!r} ends before it starts")
        blob = orjson.dumps(item)
        rows.append(
            Row(
                collection=collection,
                id=item_id,
                start=start,
                end=end,
                hash=hashlib.blake2b(blob, digest_size=16).hexdigest(),
                blob=blob,
                item=item,
            )
        )
    return rows


def apply_extent(collection: JSON, extent: Extent | None, summaries: set[tuple[str, Any]]) -> JSON:
    """``collection`` with the extent and summaries of its stored items."""
    from thisme_stac.translate.item import format_datetime

    if extent is not None:
        minx, miny, maxx, maxy, tmin, tmax = extent
        collection["extent"] = {
            "spatial": {"bbox": [[minx, miny, maxx, maxy]]},
            "temporal": {"interval": [[format_datetime(tmin), format_datetime(tmax)]]},
        }
    found: dict[str, list[Any]] = {}
    for field, value in summaries:
        found.setdefault(field, []).append(value)
    target = collection.setdefault("summaries", {})
    for field in SUMMARY_FIELDS:
        if found.get(field):
            target[field] = sorted(found[field], key=lambda v: (str(type(v)), v))
    return collection


def pipeline(conn: psycopg.Connection[Any]) -> AbstractContextManager[Any]:
    """Statements sent together, their results read at the end (one round trip)."""
    return conn.pipeline() if psycopg.Pipeline.is_supported() else nullcontext()


class ItemWriter:
    """Writes batches of items through one store's connections; remembers the partition
    constraints it widened (shared by the store's threads: a stale memory costs a retry)."""

    def __init__(self) -> None:
        self._admitted: dict[tuple[str, str], Span] = {}

    def write(
        self,
        conn: psycopg.Connection[Any],
        rows: list[Row],
        checkpoint: tuple[str, str] | None,
    ) -> UpsertResult:
        """Write ``rows`` and ``checkpoint`` in one transaction on ``conn``, and commit it."""
        result = UpsertResult()
        ids = sorted({r.collection for r in rows})
        collections: dict[str, _Collection] = {}
        changed: list[Row] = []
        if ids:
            collections, existing = self._read(conn, ids, rows)
            changed = _classify(rows, existing, result)
            if changed:
                self._copy(conn, changed, collections, replace=result.updated > 0)
        with pipeline(conn):
            if ids:
                conn.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")
            if changed:  # pgstac's cached search counts describe the items before this write
                conn.execute("DELETE FROM pgstac.search_wheres")
            # unchanged items are in the stored extents and summaries already
            _merge_extents(conn, changed, collections)
            if checkpoint is not None:
                set_checkpoint(conn, *checkpoint)
            conn.commit()  # in the same round trip
        return result

    @staticmethod
    def _read(
        conn: psycopg.Connection[Any], ids: list[str], rows: list[Row]
    ) -> tuple[dict[str, _Collection], dict[tuple[str, str], str | None]]:
        """One round trip: the collections' write locks (one writer per collection at a time:
        exact counts), documents, base items, extents and summaries, and the stored hashes."""
        with pipeline(conn):
            conn.execute(SYNC_COMMIT_OFF)
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext('thisme:' || c)) "
                "FROM unnest(%s::text[]) AS c ORDER BY c",
                (ids,),
            )
            found = conn.execute(
                "SELECT c.id, b.base_item::text, c.partition_trunc, b.base_item_id, c.key, "
                "c.content::text FROM pgstac.collections c, "
                "LATERAL pgstac.current_base_item(c.id) b WHERE c.id = ANY(%s) FOR UPDATE OF c",
                (ids,),
            )
            extents = conn.execute(
                f"SELECT collection, minx, miny, maxx, maxy, tmin, tmax "
                f"FROM {SCHEMA}.collection_extents WHERE collection = ANY(%s)",
                (ids,),
            )
            summaries = conn.execute(
                f"SELECT collection, field, value::text FROM {SCHEMA}.collection_summaries "
                "WHERE collection = ANY(%s)",
                (ids,),
            )
            hashes = [
                conn.execute(
                    "SELECT collection, id, private ->> %s FROM pgstac.items "
                    "WHERE collection = %s AND id = ANY(%s)",
                    (HASH_KEY, cid, [r.id for r in rows if r.collection == cid]),
                )
                for cid in ids
            ]
            conn.execute(f"SAVEPOINT {SAVEPOINT}")
        collections = {
            cid: _Collection(
                orjson.loads(base), trunc, number, key, orjson.loads(content), None, set()
            )
            for cid, base, trunc, number, key, content in found.fetchall()
        }
        missing = [c for c in ids if c not in collections]
        if missing:
            raise InvalidQuery(
                f"collection {missing[0]!r} does not exist: add the collection first"
            )
        for cid, *extent in extents.fetchall():
            collections[cid].extent = tuple(extent)
        for cid, field, value in summaries.fetchall():
            collections[cid].summaries.add((field, orjson.loads(value)))
        existing = {(cid, i): digest for cur in hashes for cid, i, digest in cur.fetchall()}
        return collections, existing

    def _copy(
        self,
        conn: psycopg.Connection[Any],
        rows: list[Row],
        collections: dict[str, _Collection],
        *,
        replace: bool,
    ) -> None:
        """``COPY`` the rows (deleting those they replace first: pgstac's "delsert", an item
        may change partition) after making sure pgstac's partitions admit them."""
        spans = _partition_spans(rows, collections)
        unknown = {k: v for k, v in spans.items() if not _admits(self._admitted.get(k), v)}
        try:
            self._copy_once(conn, rows, collections, unknown, replace=replace)
        except (psycopg.errors.CheckViolation, psycopg.errors.UndefinedTable):
            if len(unknown) == len(spans):
                raise
            # a constraint widened earlier was narrowed by another client since, or the
            # partition dropped
            conn.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
            self._admitted.clear()
            self._copy_once(conn, rows, collections, spans, replace=replace)

    def _copy_once(
        self,
        conn: psycopg.Connection[Any],
        rows: list[Row],
        collections: dict[str, _Collection],
        spans: dict[tuple[str, str], Span],
        *,
        replace: bool,
    ) -> None:
        if spans or replace:
            with pipeline(conn):
                for (cid, _), span in sorted(spans.items()):
                    conn.execute(
                        "SELECT pgstac.check_partition(%s, tstzrange(%s, %s, '[]'), "
                        "tstzrange(%s, %s, '[]'))",
                        (cid, *span),
                    )
                if replace:
                    conn.execute(
                        "DELETE FROM pgstac.items i "
                        "USING unnest(%s::text[], %s::text[]) AS r(c, id) "
                        "WHERE i.collection = r.c AND i.id = r.id",
                        ([r.collection for r in rows], [r.id for r in rows]),
                    )
            for key, span in spans.items():
                self._admitted[key] = _hull(self._admitted.get(key), span)
        groups: dict[str, list[Row]] = {}
        for row in rows:
            collection = collections[row.collection]
            table = "items" if collection.trunc else f"_items_{collection.key}"
            groups.setdefault(table, []).append(row)
        with conn.cursor() as cur:
            for table, group in sorted(groups.items()):
                with cur.copy(COPY_SQL.format(sql.Identifier(table))) as copy:
                    _copy_rows(copy, group, collections)


def _copy_rows(copy: psycopg.Copy, rows: list[Row], collections: dict[str, _Collection]) -> None:
    """Send ``rows``; their geometries are parsed (vectorised) a chunk at a time, while the
    server works on the rows already sent."""
    for start in range(0, len(rows), GEOMETRY_CHUNK):
        chunk = rows[start : start + GEOMETRY_CHUNK]
        geoms = item_geometries([r.item for r in chunk])
        bounds = shapely.bounds(geoms)
        wkb = shapely.to_wkb(
            shapely.set_srid(np.asarray(geoms, dtype=object), 4326), hex=True, include_srid=True
        )
        for row, box, geometry in zip(chunk, bounds, wkb, strict=True):
            row.bounds = (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
            copy.write_row(_copy_row(row, geometry, collections[row.collection]))


def _copy_row(row: Row, geometry: str, collection: _Collection) -> tuple[Any, ...]:
    """An items row as ``pypgstac load`` makes it (``Loader.format_item``)."""
    # dehydrate works in place: on a copy, never on the caller's item
    content: JSON = dehydrate(collection.base, orjson.loads(row.blob))
    for key in ("id", "collection", "geometry", "pgstac:base_item"):
        content.pop(key, None)
    if collection.base_number is not None:
        content["pgstac:base_item"] = collection.base_number
    private = content.pop("private", None)
    if isinstance(private, dict):
        private_text = orjson.dumps({**private, HASH_KEY: row.hash}).decode()
    else:  # the hash is hexadecimal: nothing to escape
        private_text = f'{{"{HASH_KEY}": "{row.hash}"}}'
    return (
        row.id,
        row.collection,
        row.start,
        row.end,
        geometry,
        orjson.dumps(content).decode(),
        private_text,
    )


def _classify(
    rows: list[Row], existing: dict[tuple[str, str], str | None], result: UpsertResult
) -> list[Row]:
    """Count new/updated/unchanged (in batch order); return the last version of each changed
    item. An item pgstac holds without a known hash counts as updated."""
    changed: dict[tuple[str, str], Row] = {}
    for row in rows:
        key = (row.collection, row.id)
        if key not in existing:
            result.new += 1
            result.new_ids.append(row.id)
        elif existing[key] == row.hash:
            result.unchanged += 1
            continue
        else:
            result.updated += 1
            result.updated_ids.append(row.id)
        existing[key] = row.hash
        changed.pop(key, None)
        changed[key] = row
    return list(changed.values())


def _merge_extents(
    conn: psycopg.Connection[Any], rows: list[Row], collections: dict[str, _Collection]
) -> None:
    """Grow the collections' extents and summaries; rewrite pgstac's collection document when
    either changed, so that the STAC API shows them (statements only: run in a pipeline)."""
    extents: dict[str, list[Any]] = {}
    found: set[tuple[str, str, Any]] = set()
    for row in rows:
        grow_extent(extents, row.collection, row.bounds, row.start, row.end)
        props, cid = row.item.get("properties") or {}, row.collection
        found.update((cid, f, props.get(f)) for f in SUMMARY_FIELDS)
    new_summaries = sorted(
        (cid, field, orjson.dumps(value).decode())
        for cid, field, value in found
        if isinstance(value, str | int)
        and not isinstance(value, bool)
        and (field, value) not in collections[cid].summaries
    )
    if new_summaries:
        conn.execute(
            f"INSERT INTO {SCHEMA}.collection_summaries (collection, field, value) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::jsonb[]) ON CONFLICT DO NOTHING",
            tuple(list(column) for column in zip(*new_summaries, strict=True)),
        )
    for cid, field, text in new_summaries:
        collections[cid].summaries.add((field, orjson.loads(text)))
    touched = {cid for cid, _, _ in new_summaries}
    for cid, ext in sorted(extents.items()):
        stored = collections[cid].extent
        if stored is not None:  # grows ``ext`` (it is ``extents[cid]``) by the stored extent
            minx, miny, maxx, maxy, start, end = stored
            grow_extent(extents, cid, (minx, miny, maxx, maxy), start, end)
        merged: Extent = tuple(ext)
        if merged == stored:
            continue
        conn.execute(
            f"INSERT INTO {SCHEMA}.collection_extents AS e VALUES (%s,%s,%s,%s,%s,%s,%s) "
            "ON CONFLICT (collection) DO UPDATE SET minx = excluded.minx, "
            "miny = excluded.miny, maxx = excluded.maxx, maxy = excluded.maxy, "
            "tmin = excluded.tmin, tmax = excluded.tmax",
            (cid, *merged),
        )
        collections[cid].extent = merged
        touched.add(cid)
    for cid in sorted(touched):
        state = collections[cid]
        content = apply_extent(state.content, state.extent, state.summaries)
        conn.execute(
            "UPDATE pgstac.collections SET content = %s::jsonb WHERE id = %s",
            (orjson.dumps(content).decode(), cid),
        )


def set_checkpoint(conn: psycopg.Connection[Any], key: str, value: str | None) -> None:
    if value is None:
        conn.execute(f"DELETE FROM {SCHEMA}.thisme_checkpoints WHERE key = %s", (key,))
    else:
        conn.execute(
            f"INSERT INTO {SCHEMA}.thisme_checkpoints (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


def _partition_key(start: datetime, trunc: str | None) -> str:
    """The pgstac partition (within its collection) of an item starting at ``start``."""
    utc = start.astimezone(UTC)
    if trunc == "year":
        return f"{utc.year:04d}"
    if trunc == "month":
        return f"{utc.year:04d}-{utc.month:02d}"
    return ""


def _partition_spans(
    rows: list[Row], collections: dict[str, _Collection]
) -> dict[tuple[str, str], Span]:
    """The datetime spans each pgstac partition must admit for ``rows``.

    In a collection without ``partition_trunc`` (one partition) they are widened to whole
    decades: widening a partition's constraint revalidates every row in it, so a harvest
    running back in time pays for that once a decade of data rather than once a page.
    """
    spans: dict[tuple[str, str], list[datetime]] = {}
    for row in rows:
        key = (row.collection, _partition_key(row.start, collections[row.collection].trunc))
        span = spans.get(key)
        if span is None:
            spans[key] = [row.start, row.start, row.end, row.end]
        else:
            span[0], span[1] = min(span[0], row.start), max(span[1], row.start)
            span[2], span[3] = min(span[2], row.end), max(span[3], row.end)
    padded: dict[tuple[str, str], Span] = {}
    for key, (lo, hi, elo, ehi) in spans.items():
        if collections[key[0]].trunc is None:
            lo, hi = _decade_floor(lo), _decade_ceil(hi)
            elo, ehi = _decade_floor(elo), _decade_ceil(ehi)
        padded[key] = (lo, hi, elo, ehi)
    return padded


def _admits(known: Span | None, span: Span) -> bool:
    return (
        known is not None
        and known[0] <= span[0]
        and span[1] <= known[1]
        and known[2] <= span[2]
        and span[3] <= known[3]
    )


def _hull(known: Span | None, span: Span) -> Span:
    if known is None:
        return span
    return (
        min(known[0], span[0]),
        max(known[1], span[1]),
        min(known[2], span[2]),
        max(known[3], span[3]),
    )


def _decade_floor(value: datetime) -> datetime:
    return datetime(value.astimezone(UTC).year // 10 * 10, 1, 1, tzinfo=UTC)


def _decade_ceil(value: datetime) -> datetime:
    year = min(value.astimezone(UTC).year // 10 * 10 + 9, 9999)
    return datetime(year, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)


__all__ = [
    "HASH_KEY",
    "SCHEMA",
    "SUMMARY_FIELDS",
    "ItemWriter",
    "Row",
    "apply_extent",
    "parse_time",
    "pipeline",
    "prepare_rows",
    "set_checkpoint",
]
