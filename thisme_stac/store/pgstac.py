"""pgstac store: PostgreSQL + PostGIS + pgstac, written through pgstac's own SQL functions.

The schema is installed or upgraded with pypgstac's ``Migrate`` when a store is opened. Items are
written as ``pypgstac load`` writes them (dehydrated, ``COPY`` into pgstac's items table), in the
same transaction as the harvest checkpoint, which lives, with the bookkeeping pgstac has no place
for (collection extents and summaries), in a schema of its own (``thisme``); each item's content
hash rides in pgstac's ``private`` column. Searches run pgstac's ``search()`` function, so that the
STAC API served by stac-fastapi-pgstac and this store answer alike.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import psycopg
import shapely
from hydraters import hydrate
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool
from pypgstac import __version__ as PYPGSTAC_VERSION

from thisme_stac.errors import StoreError
from thisme_stac.store.base import JSON, SearchPage, SearchRequest, SortField, UpsertResult
from thisme_stac.store.bbox import bbox_boxes
from thisme_stac.store.cql2sql import InvalidQuery, geometry_wkb
from thisme_stac.store.freetext import cql2_free_text, free_text_terms
from thisme_stac.store.paging import decode_token, encode_token, query_fingerprint
from thisme_stac.store.pgstac_write import (
    HASH_KEY,
    SCHEMA,
    ItemWriter,
    apply_extent,
    prepare_rows,
    set_checkpoint,
)

__all__ = ["QUERYABLES", "PgstacStore"]

log = logging.getLogger("thisme_stac.store.pgstac")

DEFAULT_SORT = (SortField("datetime", "desc"), SortField("id", "desc"))
#: pgstac search settings for this store: counts on, never a cached count (exact, like the
#: SQLite store), items hydrated here rather than in PL/pgSQL. The API server reads the
#: database-wide settings instead.
SEARCH_CONF = {"context": "on", "context_stats_ttl": "0 seconds", "nohydrate": True}
MIGRATION_LOCK = 7_301_845_120_977  # pg_advisory_lock key: one migration at a time
#: Queryables registered in pgstac's ``queryables`` table, each with a B-tree index.
QUERYABLES: dict[str, tuple[JSON, str]] = {
    "thisme:site": ({"title": "THISME site", "type": "string"}, "to_text"),
    "sat:orbit_state": (
        {"title": "Orbit state", "type": "string", "enum": ["ascending", "descending"]},
        "to_text",
    ),
    "sat:relative_orbit": (
        {"title": "Relative orbit", "type": "integer", "minimum": 1},
        "to_int",
    ),
    "platform": (
        {
            "title": "Platform",
            "type": "string",
            "enum": ["sentinel-1a", "sentinel-1b", "sentinel-1c"],
        },
        "to_text",
    ),
}

SCHEMA_SQL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.thisme_checkpoints (
    key text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.collection_extents (
    collection text PRIMARY KEY,
    minx float8 NOT NULL, miny float8 NOT NULL, maxx float8 NOT NULL, maxy float8 NOT NULL,
    tmin timestamptz NOT NULL, tmax timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.collection_summaries (
    collection text NOT NULL,
    field text NOT NULL,
    value jsonb NOT NULL,
    PRIMARY KEY (collection, field, value)
);
DO $$
BEGIN
    -- schema 1 kept content hashes in a table of their own: move them into the items
    IF to_regclass('{SCHEMA}.item_hashes') IS NOT NULL THEN
        UPDATE pgstac.items i
            SET private = coalesce(i.private, '{{}}'::jsonb)
                || jsonb_build_object('{HASH_KEY}', encode(h.hash, 'hex'))
            FROM {SCHEMA}.item_hashes h
            WHERE h.collection = i.collection AND h.id = i.id;
        DROP TABLE {SCHEMA}.item_hashes;
    END IF;
END $$;
"""


def _version_tuple(version: str) -> tuple[int, ...]:
    numbers = re.findall(r"\d+", version.split("-")[0])
    return tuple(int(n) for n in numbers[:3])


def _decode_token(token: str, fingerprint: str) -> str:
    value = decode_token(token, fingerprint)
    if not isinstance(value, str):
        raise InvalidQuery("pagination token belongs to another search")
    return value


def _rfc3339(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


#: An items row as ``_BaseItems.hydrate`` takes it.
ROW_COLUMNS = "i.collection, i.id, ST_AsGeoJSON(i.geometry, 20), i.content::text"


class _BaseItems:
    """The base items of pgstac's collections, to hydrate stored items in Python the way
    ``pgstac.content_hydrate`` does (``hydraters``, as stac-fastapi-pgstac does)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._texts: dict[tuple[str, int | None], str] = {}
        self._loaded: set[str] = set()

    def _load(self, collection: str) -> None:
        current = self.conn.execute(
            "SELECT base_item::text FROM pgstac.collections WHERE id = %s", (collection,)
        ).fetchone()
        history = self.conn.execute(
            "SELECT id, base_item::text FROM pgstac.base_items WHERE collection = %s ORDER BY id",
            (collection,),
        ).fetchall()
        for number, text in history:
            self._texts[(collection, int(number))] = text
        if history:
            self._texts[(collection, None)] = history[0][1]  # untagged: the first base item
        elif current is not None:
            self._texts[(collection, None)] = current[0]
        if current is not None:
            self._texts[(collection, -1)] = current[0]
        self._loaded.add(collection)

    def base(self, collection: str, tag: Any) -> JSON:
        if collection not in self._loaded:
            self._load(collection)
        number: int | None = None
        if tag is not None:
            try:
                number = int(str(tag).strip())
            except ValueError:
                number = -1
        text = self._texts.get((collection, number)) or self._texts.get((collection, -1))
        base: JSON = orjson.loads(text) if text else {}
        return base

    def hydrate(self, collection: str, item_id: str, geometry: str | None, content: str) -> JSON:
        stored: JSON = orjson.loads(content)
        tag = stored.pop("pgstac:base_item", None)
        item: JSON = {
            "id": item_id,
            "geometry": orjson.loads(geometry) if geometry is not None else None,
            "collection": collection,
            "type": "Feature",
            **stored,
        }
        return _merge(self.base(collection, tag), item)


def _hydrate_nonhydrated(feature: JSON) -> JSON:
    """A feature of ``search()`` with ``nohydrate``: it carries its base item."""
    base = feature.pop("pgstac:base_item", None)
    return _merge(base if isinstance(base, dict) else {}, feature)


def _merge(base: JSON, item: JSON) -> JSON:
    """``item`` completed from ``base`` (each base used once: the result shares its values)."""
    merged: JSON = hydrate(base, item)
    return merged


class _Target:
    """Where a URL points, for messages: host, port and database, never the password."""

    def __init__(self, url: str) -> None:
        self.secrets: list[str] = []
        try:
            split = urlsplit(url)
            if split.password:
                self.secrets.append(split.password)
            for values in parse_qs(split.query).values():
                self.secrets += [v for v in values if v]
        except ValueError:
            pass
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error:
            raise StoreError(self.scrub(f"invalid PostgreSQL URL {self._shape(url)}")) from None
        password = params.get("password")
        if password:
            self.secrets.append(str(password))
        env = os.environ
        self.host = str(
            params.get("host")
            or params.get("hostaddr")
            or env.get("PGHOST")
            or "/var/run/postgresql"
        )
        self.port = str(params.get("port") or env.get("PGPORT") or "5432")
        self.dbname = str(
            params.get("dbname")
            or env.get("PGDATABASE")
            or params.get("user")
            or env.get("PGUSER")
            or getpass.getuser()
        )

    @staticmethod
    def _shape(url: str) -> str:
        """The URL with its user information and query left out."""
        try:
            split = urlsplit(url)
            host = split.hostname or ""
            port = f":{split.port}" if split.port else ""
        except ValueError:
            return "(unparseable)"
        return f"{split.scheme}://{host}{port}{split.path}"

    def scrub(self, text: str) -> str:
        for secret in sorted(set(self.secrets), key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def __str__(self) -> str:
        if self.host.startswith("/"):
            return f"database {self.dbname!r} on the local socket {self.host} (port {self.port})"
        return f"database {self.dbname!r} on {self.host}:{self.port}"

    def error(self, what: str, err: BaseException | str) -> StoreError:
        """A one-line ``StoreError``: what failed, where, and the server's reason."""
        return StoreError(self.scrub(f"{what} {self}: {_reason(err)}"))


def _reason(err: BaseException | str) -> str:
    """The useful line of a psycopg error, without libpq's connection preamble."""
    if isinstance(err, psycopg.Error) and err.diag.message_primary:
        text = err.diag.message_primary
    else:
        text = str(err)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__ if isinstance(err, BaseException) else "unknown error"
    # libpq: 'connection failed: connection to server at "h" (...), port p failed: <reason>'
    fatal = [line for line in lines if line.startswith(("FATAL:", "ERROR:"))]
    line = fatal[0] if fatal else lines[0]
    line = re.sub(r"^connection (failed|is bad):\s*", "", line)
    line = re.sub(r"^connection to server (at|on) .*?failed:\s*", "", line)
    line = re.sub(r"^(FATAL|ERROR):\s*", "", line)
    return line or "connection failed"


class PgstacStore:
    """The pgstac ``Store``: thread-safe (a connection pool), transactional writes."""

    def __init__(
        self,
        url: str,
        *,
        create: bool = True,
        pool_size: int = 8,
        connect_timeout: int = 10,
        pool_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.target = _Target(url)
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._pool_lock = threading.Lock()
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        #: how long a caller waits for a pooled connection (a database gone away: a 503
        #: after this, not after psycopg_pool's 30 s)
        self._pool_timeout = pool_timeout
        self._writer = ItemWriter()
        try:
            conn = psycopg.connect(url, connect_timeout=connect_timeout, autocommit=True)
        except psycopg.Error as err:
            raise self.target.error("cannot connect to PostgreSQL", err) from None
        except Exception as err:  # libpq rejected the URL itself
            raise self.target.error("cannot connect to PostgreSQL", str(err)) from None
        with conn:
            self._prepare(conn, create=create)

    @property
    def safe_url(self) -> str:
        """The URL without its password, fit for logs and messages."""
        return self.target.scrub(self.url)

    # --- set-up ----------------------------------------------------------------------------
    def _prepare(self, conn: psycopg.Connection[Any], *, create: bool) -> None:
        """Install or upgrade pgstac, then the ``thisme`` schema, queryables and settings."""
        try:
            conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
            try:
                self._migrate(conn, create=create)
                with conn.transaction():
                    conn.execute(SCHEMA_SQL)
                    self._register_queryables(conn)
                    conn.execute(
                        "INSERT INTO pgstac.pgstac_settings (name, value) "
                        "VALUES ('context', 'on') ON CONFLICT (name) DO UPDATE "
                        "SET value = excluded.value WHERE pgstac_settings.value = 'off'"
                    )
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
        except psycopg.Error as err:
            raise self.target.error("cannot prepare the pgstac catalogue in", err) from None

    def _migrate(self, conn: psycopg.Connection[Any], *, create: bool) -> None:
        pypgstac_version = PYPGSTAC_VERSION
        current = self._installed_version(conn)
        if current is not None and _version_tuple(current) >= _version_tuple(pypgstac_version):
            if _version_tuple(current) > _version_tuple(pypgstac_version):
                log.warning(
                    "pgstac %s in %s is newer than pypgstac %s",
                    current,
                    self.target,
                    pypgstac_version,
                )
            return
        if current is None and not create:
            raise StoreError(f"no pgstac catalogue in {self.target}")
        log.info("installing pgstac %s in %s (was %s)", pypgstac_version, self.target, current)
        from pypgstac.db import PgstacDB
        from pypgstac.migrate import Migrate

        db = PgstacDB(dsn=self.url)
        try:
            Migrate(db).run_migration()
        except psycopg.Error as err:
            hint = ""
            if "postgis" in str(err).lower():
                hint = " (is PostGIS installed on the server?)"
            raise StoreError(
                self.target.scrub(f"cannot install pgstac in {self.target}: {_reason(err)}{hint}")
            ) from None
        except Exception as err:  # pypgstac raises bare Exceptions for migration paths
            raise self.target.error("cannot install pgstac in", str(err)) from None
        finally:
            db.disconnect()  # gives its connection back: close() ends only the idle ones
            db.close()

    @staticmethod
    def _installed_version(conn: psycopg.Connection[Any]) -> str | None:
        row = conn.execute("SELECT to_regclass('pgstac.migrations') IS NOT NULL").fetchone()
        if not row or not row[0]:
            return None
        row = conn.execute(
            "SELECT version FROM pgstac.migrations ORDER BY datetime DESC, version DESC LIMIT 1"
        ).fetchone()
        return str(row[0]) if row and row[0] else None

    @staticmethod
    def _register_queryables(conn: psycopg.Connection[Any]) -> None:
        """Register the THISME queryables (B-tree indexed) unless already registered alike."""
        for name, (definition, wrapper) in QUERYABLES.items():
            row = conn.execute(
                "SELECT definition::text, property_wrapper, property_index_type "
                "FROM pgstac.queryables WHERE name = %s AND collection_ids IS NULL",
                (name,),
            ).fetchone()
            if (
                row is not None
                and orjson.loads(row[0]) == definition
                and row[1] == wrapper
                and (row[2] or "").upper() == "BTREE"
            ):
                continue
            conn.execute(
                "SELECT pgstac.upsert_queryable(%s, %s::jsonb, %s, 'BTREE', NULL)",
                (name, orjson.dumps(definition).decode(), wrapper),
            )

    # --- connections -----------------------------------------------------------------------
    def pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=self._pool_size,
                    kwargs={
                        "connect_timeout": self._connect_timeout,
                        "application_name": "thisme-stac",
                        "options": "-c search_path=pgstac,public",
                    },
                    check=ConnectionPool.check_connection,
                    timeout=self._pool_timeout,
                    name="thisme-pgstac",
                    open=True,
                )
            return self._pool

    @contextmanager
    def _connection(self, what: str, *, request: bool = False) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in a transaction (commit on success, rollback on error).

        psycopg errors become one-line ``StoreError``s. Errors the database raises on the
        content it was given (pgstac's exceptions, bad values; with ``request``, also SQL that
        pgstac built from a filter it could not type) become ``InvalidQuery`` (HTTP 400).
        """
        try:
            with self.pool().connection() as conn:
                yield conn
        except StoreError:
            raise
        except psycopg.errors.InsufficientPrivilege as err:
            raise self.target.error(f"cannot {what} in", err) from None
        except (psycopg.errors.RaiseException, psycopg.DataError) as err:
            raise InvalidQuery(self.target.scrub(_reason(err))) from None
        except psycopg.ProgrammingError as err:
            if request and not isinstance(
                err, psycopg.errors.UndefinedTable | psycopg.errors.InvalidSchemaName
            ):
                raise InvalidQuery(self.target.scrub(_reason(err))) from None
            raise self.target.error(f"cannot {what} in", err) from None
        except psycopg.Error as err:  # psycopg_pool.PoolTimeout included
            raise self.target.error(f"cannot {what} in", err) from None

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def __enter__(self) -> PgstacStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- collections -------------------------------------------------------------------------
    def upsert_collection(self, collection: JSON) -> None:
        cid = collection.get("id")
        if not isinstance(cid, str) or not cid:
            raise InvalidQuery("a collection needs an id")
        with self._connection("write a collection") as conn:
            content = self._with_extent(conn, dict(collection))
            conn.execute(
                "SELECT pgstac.upsert_collection(%s::jsonb)", (orjson.dumps(content).decode(),)
            )

    def get_collection(self, collection_id: str) -> JSON | None:
        with self._connection("read a collection") as conn:
            row = conn.execute(
                "SELECT content::text FROM pgstac.collections WHERE id = %s", (collection_id,)
            ).fetchone()
            if row is None:
                return None
            return self._with_extent(conn, orjson.loads(row[0]))

    def list_collections(self) -> list[JSON]:
        with self._connection("list collections") as conn:
            rows = conn.execute(
                'SELECT content::text FROM pgstac.collections ORDER BY id COLLATE "C"'
            ).fetchall()
            return [self._with_extent(conn, orjson.loads(r[0])) for r in rows]

    def delete_collection(self, collection_id: str) -> bool:
        with self._connection("delete a collection") as conn:
            row = conn.execute(
                "SELECT 1 FROM pgstac.collections WHERE id = %s FOR UPDATE", (collection_id,)
            ).fetchone()
            for table in ("collection_extents", "collection_summaries"):
                conn.execute(
                    sql.SQL("DELETE FROM {}.{} WHERE collection = %s").format(
                        sql.Identifier(SCHEMA), sql.Identifier(table)
                    ),
                    (collection_id,),
                )
            if row is None:
                return False
            conn.execute("SELECT pgstac.delete_collection(%s)", (collection_id,))
            self._forget_counts(conn)
            return True

    @staticmethod
    def _with_extent(conn: psycopg.Connection[Any], collection: JSON) -> JSON:
        """The collection with the extent and summaries of the items stored so far."""
        cid = collection.get("id")
        extent = conn.execute(
            f"SELECT minx, miny, maxx, maxy, tmin, tmax FROM {SCHEMA}.collection_extents "
            "WHERE collection = %s",
            (cid,),
        ).fetchone()
        summaries = {
            (field, orjson.loads(value))
            for field, value in conn.execute(
                f"SELECT field, value::text FROM {SCHEMA}.collection_summaries "
                "WHERE collection = %s",
                (cid,),
            )
        }
        return apply_extent(collection, tuple(extent) if extent else None, summaries)

    # --- items -------------------------------------------------------------------------------
    def upsert_items(
        self, items: Iterable[JSON], *, checkpoint: tuple[str, str] | None = None
    ) -> UpsertResult:
        rows = prepare_rows(list(items))
        with self._connection("write items") as conn:  # one transaction, committed on exit
            return self._writer.write(conn, rows, checkpoint)

    @staticmethod
    def _forget_counts(conn: psycopg.Connection[Any]) -> None:
        """Drop pgstac's cached search counts: they describe the items before this write."""
        conn.execute("DELETE FROM pgstac.search_wheres")

    def get_item(self, collection_id: str, item_id: str) -> JSON | None:
        with self._connection("read an item") as conn:
            row = conn.execute(
                f"SELECT {ROW_COLUMNS} FROM pgstac.items i WHERE i.collection = %s AND i.id = %s",
                (collection_id, item_id),
            ).fetchone()
            if row is None:
                return None
            return _BaseItems(conn).hydrate(*row)

    def delete_item(self, collection_id: str, item_id: str) -> bool:
        with self._connection("delete an item") as conn:
            cur = conn.execute(
                "DELETE FROM pgstac.items WHERE collection = %s AND id = %s",
                (collection_id, item_id),
            )
            if cur.rowcount > 0:
                self._forget_counts(conn)
                return True
            return False

    def count_items(self, collection_id: str | None = None) -> int:
        with self._connection("count items") as conn:
            if collection_id is None:
                row = conn.execute("SELECT count(*) FROM pgstac.items").fetchone()
            else:
                row = conn.execute(
                    "SELECT count(*) FROM pgstac.items WHERE collection = %s", (collection_id,)
                ).fetchone()
        return int(row[0]) if row else 0

    def iter_items(self, collection_id: str | None = None) -> Iterator[JSON]:
        """All items in (collection, datetime, id) order, streamed by a server-side cursor."""
        where, params = ("WHERE i.collection = %s", [collection_id]) if collection_id else ("", [])
        query = (
            f"SELECT {ROW_COLUMNS} FROM pgstac.items i {where} "
            'ORDER BY i.collection COLLATE "C", i.datetime, i.id COLLATE "C"'
        )
        with (
            self._connection("read items") as conn,
            conn.cursor(name=f"thisme_iter_{threading.get_ident()}") as cur,
        ):
            bases = _BaseItems(conn)
            cur.itersize = 1000
            cur.execute(query, params)
            while batch := cur.fetchmany(1000):
                for row in batch:
                    yield bases.hydrate(*row)

    # --- search ------------------------------------------------------------------------------
    def search(self, request: SearchRequest) -> SearchPage:
        body = self.search_body(request)
        with self._connection("search", request=True) as conn:
            row = conn.execute(
                "SELECT pgstac.search(%s::jsonb)::text", (orjson.dumps(body).decode(),)
            ).fetchone()
        result: JSON = orjson.loads(row[0]) if row else {}
        items = [_hydrate_nonhydrated(f) for f in result.get("features") or []]
        token = None
        for link in result.get("links") or []:
            if link.get("rel") == "next":
                href = str(link.get("href", ""))
                found = parse_qs(urlsplit(href).query).get("token")
                if found:
                    token = encode_token(query_fingerprint(request), found[0])
        matched = result.get("numberMatched")
        return SearchPage(
            items=items,
            next_token=token,
            number_matched=int(matched) if matched is not None else None,
        )

    def search_body(self, request: SearchRequest) -> JSON:
        """The pgstac ``search()`` document for a request."""
        if request.limit < 1:
            raise InvalidQuery("limit must be at least 1")
        body: JSON = {"limit": request.limit, "conf": dict(SEARCH_CONF)}
        if request.collections:
            body["collections"] = list(request.collections)
        if request.ids:
            body["ids"] = list(request.ids)
        if request.datetime:
            start, end = request.datetime
            if start is not None or end is not None:
                body["datetime"] = (
                    f"{_rfc3339(start) if start else '..'}/{_rfc3339(end) if end else '..'}"
                )
        conditions: list[Any] = []
        terms = free_text_terms(request.q)
        if terms:  # substring semantics, as in the SQLite store (not pgstac's own "q")
            conditions.append(cql2_free_text(terms))
        if request.filter:
            conditions.append(dict(request.filter))
        if request.bbox:
            conditions.append(
                {"op": "s_intersects", "args": [{"property": "geometry"}, _bbox(request.bbox)]}
            )
        if request.intersects:
            geometry_wkb(request.intersects)  # the same validation as the SQLite store
            conditions.append(
                {"op": "s_intersects", "args": [{"property": "geometry"}, dict(request.intersects)]}
            )
        if conditions:
            body["filter"] = (
                conditions[0]
                if len(conditions) == 1
                else {
                    "op": "and",
                    "args": conditions,
                }
            )
            body["filter-lang"] = "cql2-json"
        sort = list(request.sortby or DEFAULT_SORT)
        if not any(s.field.removeprefix("properties.") == "id" for s in sort):
            sort.append(SortField("id", sort[-1].direction))
        body["sortby"] = [{"field": s.field, "direction": s.direction} for s in sort]
        if request.token:
            body["token"] = _decode_token(request.token, query_fingerprint(request))
        return body

    def queryables(self, collection_id: str | None = None) -> JSON:
        with self._connection("read queryables", request=True) as conn:
            row = conn.execute(
                "SELECT pgstac.get_queryables(%s::text)::text", (collection_id,)
            ).fetchone()
        if row is None or row[0] is None:
            raise InvalidQuery(f"no collection {collection_id!r}")
        schema: JSON = orjson.loads(row[0])
        return schema

    # --- checkpoints -------------------------------------------------------------------------
    def get_checkpoint(self, key: str) -> str | None:
        with self._connection("read a checkpoint") as conn:
            row = conn.execute(
                f"SELECT value FROM {SCHEMA}.thisme_checkpoints WHERE key = %s", (key,)
            ).fetchone()
        return str(row[0]) if row else None

    def set_checkpoint(self, key: str, value: str | None) -> None:
        with self._connection("write a checkpoint") as conn:
            self._set_checkpoint(conn, key, value)

    @staticmethod
    def _set_checkpoint(conn: psycopg.Connection[Any], key: str, value: str | None) -> None:
        set_checkpoint(conn, key, value)


def _bbox(bbox: Sequence[float]) -> JSON:
    """A 2D or 3D bbox as a GeoJSON geometry; one crossing the antimeridian as two boxes."""
    boxes = [shapely.box(*box) for box in bbox_boxes(bbox)]
    geometry = boxes[0] if len(boxes) == 1 else shapely.MultiPolygon(boxes)
    return orjson.loads(orjson.dumps(geometry.__geo_interface__))  # type: ignore[no-any-return]
