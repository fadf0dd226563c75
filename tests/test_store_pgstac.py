"""The pgstac store against the machine's PostgreSQL, and against the SQLite store.

Needs PostgreSQL on 127.0.0.1:5432 with PostGIS (``tests/pgstac_db.py``): without it these tests
fail, they are not skipped. The module works in databases of its own, dropped at the end.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from tests.pgstac_db import migrate, migration_lock, temporary_database
from tests.test_store_reference import ITEMS, _random_request
from thisme_stac.errors import StoreError
from thisme_stac.store import SearchRequest, SortField, Store, open_store, pgstac_write
from thisme_stac.store.cql2sql import InvalidQuery
from thisme_stac.store.pgstac import QUERYABLES, PgstacStore
from thisme_stac.store.sqlite import SQLiteStore
from thisme_stac.translate.collection import build_collection

pytestmark = pytest.mark.pgstac

COLLECTION = "SoilMoisture"
QUERIES = 100
SECRET = "Sup3r-s3cret_pw"


def _collection() -> dict[str, Any]:
    return build_collection(None, extent=None, sites=(), license="other", collection_id=COLLECTION)


def _by_id(items: Any) -> list[dict[str, Any]]:
    return sorted(items, key=lambda i: (i["collection"], i["id"]))


def _all_pages(store: Any, request: SearchRequest) -> tuple[list[str], int | None]:
    page = store.search(request)
    matched = page.number_matched
    ids: list[str] = []
    while True:
        ids += [i["id"] for i in page.items]
        if not page.next_token:
            return ids, matched
        page = store.search(replace(request, token=page.next_token))


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with temporary_database() as url:
        yield url


@pytest.fixture(scope="module")
def loaded(
    pg_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[PgstacStore, SQLiteStore]]:
    """The same generated items in both stores."""
    pg = PgstacStore(pg_url)
    lite = SQLiteStore(tmp_path_factory.mktemp("ref") / "ref.sqlite")
    for store in (pg, lite):
        store.upsert_collection(_collection())
        for start in range(0, len(ITEMS), 500):
            store.upsert_items(ITEMS[start : start + 500])
    yield pg, lite
    pg.close()
    lite.close()


@pytest.fixture
def empty(pg_url: str) -> Iterator[PgstacStore]:
    """A store whose collection is emptied before each test."""
    store = PgstacStore(pg_url)
    store.delete_collection("scratch")
    store.upsert_collection({**_collection(), "id": "scratch"})
    for key in ("k", "other"):
        store.set_checkpoint(key, None)
    yield store
    store.delete_collection("scratch")
    store.close()


def _scratch(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**item, "collection": "scratch"} for item in items]


# --- set-up and URLs ---------------------------------------------------------------------------
def test_open_installs_pgstac_registers_queryables_and_turns_context_on() -> None:
    from pypgstac import __version__

    with temporary_database(migrated=False) as url:
        with pytest.raises(StoreError, match="no pgstac catalogue"):
            PgstacStore(url, create=False)
        with migration_lock():
            store = open_store(url)
        try:
            assert isinstance(store, PgstacStore)
            assert isinstance(store, Store)
            store.upsert_collection(_collection())
            store.upsert_items(ITEMS[:20])
            assert store.count_items() == 20
        finally:
            store.close()
        with psycopg.connect(url) as conn:
            version = conn.execute(
                "SELECT version FROM pgstac.migrations ORDER BY datetime DESC LIMIT 1"
            ).fetchone()
            assert version == (__version__,)
            rows = conn.execute(
                "SELECT name, definition, property_wrapper, property_index_type "
                "FROM pgstac.queryables WHERE collection_ids IS NULL"
            ).fetchall()
            registered = {r[0]: r[1:] for r in rows}
            for name, (definition, wrapper) in QUERYABLES.items():
                assert registered[name] == (definition, wrapper, "BTREE")
            indexes = " ".join(
                r[0]
                for r in conn.execute(
                    "SELECT indexdef FROM pg_indexes WHERE schemaname = 'pgstac' "
                    "AND tablename LIKE '\\_items\\_%%'"
                )
            )
            for name in QUERYABLES:
                assert f"'{name}'" in indexes, f"no index for {name}"
            setting = conn.execute(
                "SELECT value FROM pgstac.pgstac_settings WHERE name = 'context'"
            ).fetchone()
            assert setting == ("on",)
        # a second open finds everything in place and changes nothing
        again = PgstacStore(url, create=False)
        try:
            assert again.count_items(COLLECTION) == 20
        finally:
            again.close()


def test_open_upgrades_an_older_pgstac() -> None:
    from pypgstac import __version__
    from pypgstac.migrate import migrations_dir

    current = tuple(int(n) for n in __version__.split(".")[:3])
    older = sorted(
        (tuple(int(n) for n in p.stem.removeprefix("pgstac.").split(".")), p)
        for p in Path(migrations_dir).glob("pgstac.*.sql")
        if "-" not in p.stem and "unreleased" not in p.stem
    )
    base = [v for v, _ in older if v < current][-1]
    with temporary_database(migrated=False) as url:
        migrate(url, ".".join(map(str, base)))
        with migration_lock():
            store = PgstacStore(url)
        store.close()
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT version FROM pgstac.migrations ORDER BY datetime DESC LIMIT 1"
            ).fetchone()
        assert row == (__version__,)


@pytest.mark.parametrize(
    ("url", "host", "database"),
    [
        # nothing listens on port 1
        (f"postgresql://postgres:{SECRET}@127.0.0.1:1/catalogue", "127.0.0.1:1", "catalogue"),
        # the server is there, the database is not
        (
            f"postgres://postgres:{SECRET}@127.0.0.1:5432/thisme_no_such_db",
            "127.0.0.1:5432",
            "thisme_no_such_db",
        ),
        # libpq keyword form in the query string
        (
            f"postgresql://127.0.0.1:1/catalogue?user=postgres&password={SECRET}",
            "127.0.0.1:1",
            "catalogue",
        ),
    ],
)
def test_bad_url_is_one_line_naming_host_and_database_without_password(
    url: str, host: str, database: str
) -> None:
    with pytest.raises(StoreError) as caught:
        open_store(url)
    message = str(caught.value)
    assert "\n" not in message
    assert SECRET not in message
    assert host in message
    assert repr(database) in message
    assert "Traceback" not in message


def test_malformed_url_hides_the_password() -> None:
    with pytest.raises(StoreError) as caught:
        open_store(f"postgresql://postgres:{SECRET}@127.0.0.1:notaport/x")
    assert SECRET not in str(caught.value)
    assert "\n" not in str(caught.value)


def test_safe_url_masks_the_password(pg_url: str) -> None:
    url = pg_url.replace("postgres@", f"postgres:{SECRET}@")
    store = PgstacStore(url)  # trust authentication: the password is ignored
    try:
        assert SECRET not in store.safe_url
        assert store.url == url
    finally:
        store.close()


# --- writes ------------------------------------------------------------------------------------
def test_new_updated_unchanged_counts(empty: PgstacStore) -> None:
    items = _scratch(ITEMS[:30])
    first = empty.upsert_items(items[:20])
    assert (first.new, first.updated, first.unchanged) == (20, 0, 0)
    assert first.new_ids == [i["id"] for i in items[:20]]

    changed = [
        {**item, "properties": {**item["properties"], "title": "changed"}} for item in items[:5]
    ]
    second = empty.upsert_items([*changed, *items[5:25]])
    assert (second.new, second.updated, second.unchanged) == (5, 5, 15)
    assert second.updated_ids == [i["id"] for i in items[:5]]
    assert second.new_ids == [i["id"] for i in items[20:25]]
    stored = empty.get_item("scratch", items[0]["id"])
    assert stored is not None
    assert stored["properties"]["title"] == "changed"
    assert empty.count_items("scratch") == 25

    # a batch naming one item twice: the second copy is compared with the first; the last wins
    twice = empty.upsert_items([items[25], items[25], changed[0], items[0]])
    assert (twice.new, twice.updated, twice.unchanged) == (1, 1, 2)
    assert empty.get_item("scratch", items[0]["id"]) == items[0]

    # an item written by another pgstac client, unknown to the store's hashes: updated
    with psycopg.connect(empty.url) as conn:
        conn.execute("SELECT pgstac.upsert_items(%s::jsonb)", (orjson.dumps([items[29]]).decode(),))
    outside = empty.upsert_items([items[29]])
    assert (outside.new, outside.updated, outside.unchanged) == (0, 1, 0)
    assert empty.upsert_items([items[29]]).unchanged == 1


def test_items_round_trip_exactly(empty: PgstacStore) -> None:
    items = _scratch(ITEMS[:50])
    empty.upsert_items(items)
    # equal as JSON: PostGIS writes a coordinate 48.0 as 48
    for item in items:
        assert empty.get_item("scratch", item["id"]) == item
    streamed = list(empty.iter_items("scratch"))
    assert _by_id(streamed) == _by_id(items)
    keys = [(i["properties"]["datetime"], i["id"]) for i in streamed]
    assert keys == sorted(keys)


def test_an_error_mid_batch_leaves_neither_items_nor_checkpoint(
    empty: PgstacStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = _scratch(ITEMS[:40])
    empty.upsert_items(items[:10], checkpoint=("k", "page-1"))

    # the database refuses an item in the middle of the batch (start after end)
    bad = {**items[25], "properties": {**items[25]["properties"]}}
    bad["properties"]["start_datetime"] = "2030-01-01T00:00:00Z"
    bad["properties"]["end_datetime"] = "2020-01-01T00:00:00Z"
    with pytest.raises(StoreError):
        empty.upsert_items([*items[10:25], bad, *items[26:40]], checkpoint=("k", "page-2"))
    assert empty.count_items("scratch") == 10
    assert empty.get_checkpoint("k") == "page-1"

    # a failure after the items reached pgstac, before the checkpoint: all rolled back
    def explode(*args: object) -> None:
        raise RuntimeError("killed between the items and the checkpoint")

    monkeypatch.setattr(pgstac_write, "set_checkpoint", explode)
    changed = {**items[0], "properties": {**items[0]["properties"], "title": "never"}}
    with pytest.raises(RuntimeError, match="killed"):
        empty.upsert_items([changed, *items[10:40]], checkpoint=("k", "page-2"))
    monkeypatch.undo()
    assert empty.count_items("scratch") == 10
    assert empty.get_checkpoint("k") == "page-1"
    assert (empty.get_item("scratch", items[0]["id"]) or {})["properties"].get("title") != "never"
    # the hashes were rolled back too: the same batch is new again
    again = empty.upsert_items(items[10:40], checkpoint=("k", "page-2"))
    assert (again.new, again.unchanged) == (30, 0)
    assert empty.get_checkpoint("k") == "page-2"


def test_a_constraint_narrowed_by_another_client_is_widened_again(empty: PgstacStore) -> None:
    """The store remembers the partition constraints it widened (to decades); when another
    client narrows them (pgstac's update_partition_stats does), the next write still lands."""
    items = sorted(_scratch(ITEMS), key=lambda i: i["properties"]["datetime"])
    year = items[len(items) // 2]["properties"]["datetime"][:4]
    same_year = [i for i in items if i["properties"]["datetime"].startswith(year)]
    assert len(same_year) >= 4
    first, later = same_year[1:-1:2], [same_year[0], same_year[-1]]
    empty.upsert_items(first)
    with psycopg.connect(empty.url, autocommit=True) as conn:
        (partition,) = conn.execute(
            "SELECT partition FROM pgstac.partitions WHERE collection = 'scratch'"
        ).fetchone() or ("",)
        conn.execute("SELECT pgstac.update_partition_stats(%s)", (partition,))
        (narrowed,) = conn.execute(
            "SELECT constraint_dtrange::text FROM pgstac.partitions WHERE partition = %s",
            (partition,),
        ).fetchone() or ("",)
    decade = int(year) // 10 * 10
    assert f"{decade}-01-01 00:00:00+00" not in narrowed  # exact now, not the whole decade
    result = empty.upsert_items(later, checkpoint=("k", "after"))
    assert (result.new, result.updated) == (len(later), 0)
    assert empty.count_items("scratch") == len(first) + len(later)
    assert empty.get_checkpoint("k") == "after"
    for item in later:
        assert empty.get_item("scratch", item["id"]) == item


def test_a_collection_dropped_and_made_again_is_written_again(empty: PgstacStore) -> None:
    """The partition the store wrote to last is gone (a new collection key, a new partition)."""
    items = _scratch(ITEMS[:8])
    empty.upsert_items(items[:4])
    assert empty.delete_collection("scratch")
    empty.upsert_collection({**_collection(), "id": "scratch"})
    result = empty.upsert_items(items, checkpoint=("k", "again"))
    assert (result.new, result.updated, result.unchanged) == (8, 0, 0)
    assert empty.count_items("scratch") == 8
    assert empty.get_checkpoint("k") == "again"


def test_hashes_of_a_schema_1_store_move_into_pgstac(empty: PgstacStore) -> None:
    items = _scratch(ITEMS[:6])
    empty.upsert_items(items)
    with psycopg.connect(empty.url) as conn:  # the layout of schema 1: a table of hashes
        conn.execute(
            "CREATE TABLE thisme.item_hashes (collection text, id text, hash bytea, "
            "PRIMARY KEY (collection, id))"
        )
        conn.execute(
            "INSERT INTO thisme.item_hashes SELECT collection, id, "
            "decode(private ->> 'thisme:hash', 'hex') FROM pgstac.items "
            "WHERE collection = 'scratch'"
        )
        conn.execute("UPDATE pgstac.items SET private = NULL WHERE collection = 'scratch'")
    PgstacStore(empty.url).close()
    with psycopg.connect(empty.url) as conn:
        assert conn.execute("SELECT to_regclass('thisme.item_hashes')").fetchone() == (None,)
    again = empty.upsert_items(items)
    assert (again.new, again.updated, again.unchanged) == (0, 0, len(items))


def test_items_of_an_unknown_collection_are_refused(empty: PgstacStore) -> None:
    item = {**ITEMS[0], "collection": "nowhere"}
    with pytest.raises(InvalidQuery, match="nowhere"):
        empty.upsert_items([item], checkpoint=("other", "x"))
    assert empty.get_checkpoint("other") is None


def test_checkpoints_delete_and_count(empty: PgstacStore) -> None:
    assert empty.get_checkpoint("k") is None
    empty.set_checkpoint("k", "a")
    empty.set_checkpoint("k", "b")
    assert empty.get_checkpoint("k") == "b"
    empty.set_checkpoint("k", None)
    assert empty.get_checkpoint("k") is None
    # the empty last page of a harvest still moves its checkpoint
    nothing = empty.upsert_items([], checkpoint=("k", "done"))
    assert (nothing.new, nothing.updated, nothing.unchanged) == (0, 0, 0)
    assert empty.get_checkpoint("k") == "done"

    items = _scratch(ITEMS[:3])
    empty.upsert_items(items)
    assert empty.delete_item("scratch", items[0]["id"]) is True
    assert empty.delete_item("scratch", items[0]["id"]) is False
    assert empty.get_item("scratch", items[0]["id"]) is None
    assert empty.count_items("scratch") == 2
    assert empty.upsert_items([items[0]]).new == 1
    assert empty.delete_collection("scratch") is True
    assert empty.get_collection("scratch") is None
    assert empty.count_items("scratch") == 0
    assert empty.delete_collection("scratch") is False


def test_number_matched_follows_writes(empty: PgstacStore) -> None:
    items = _scratch(ITEMS[:12])
    request = SearchRequest(collections=["scratch"], limit=5)
    empty.upsert_items(items[:6])
    assert empty.search(request).number_matched == 6
    empty.upsert_items(items[6:])
    assert empty.search(request).number_matched == 12
    empty.delete_item("scratch", items[0]["id"])
    assert empty.search(request).number_matched == 11


# --- reads against the SQLite store ------------------------------------------------------------
def test_collection_extent_and_summaries_equal_sqlite(
    loaded: tuple[PgstacStore, SQLiteStore],
) -> None:
    pg, lite = loaded
    assert pg.get_collection(COLLECTION) == lite.get_collection(COLLECTION)
    assert pg.list_collections() == lite.list_collections()
    # pgstac's own document carries them too, for the STAC API
    with psycopg.connect(pg.url) as conn:
        row = conn.execute(
            "SELECT content FROM pgstac.collections WHERE id = %s", (COLLECTION,)
        ).fetchone()
    assert row is not None
    assert row[0]["extent"] == lite.get_collection(COLLECTION)["extent"]  # type: ignore[index]


def test_iter_items_and_counts_equal_sqlite(loaded: tuple[PgstacStore, SQLiteStore]) -> None:
    pg, lite = loaded
    assert pg.count_items() == lite.count_items() == len(ITEMS)
    assert pg.count_items(COLLECTION) == len(ITEMS)
    assert pg.count_items("nothing") == 0
    assert list(pg.iter_items(COLLECTION)) == list(lite.iter_items(COLLECTION))
    # an abandoned stream gives its connection back
    for _ in range(12):
        stream = pg.iter_items()
        next(iter(stream))
        del stream
    assert pg.count_items() == len(ITEMS)


@pytest.mark.parametrize("seed", range(QUERIES))
def test_search_equals_sqlite(loaded: tuple[PgstacStore, SQLiteStore], seed: int) -> None:
    pg, lite = loaded
    request, _ = _random_request(random.Random(seed))
    got, matched = _all_pages(pg, request)
    expected, expected_matched = _all_pages(lite, request)
    assert matched == expected_matched
    assert got == expected
    assert pg.search(request).items == lite.search(request).items


@pytest.mark.parametrize(
    "request_",
    [
        SearchRequest(q=["central-italy"], limit=1000),
        SearchRequest(q=["Central-Italy", "crete"], limit=1000),
        SearchRequest(ids=[ITEMS[3]["id"], ITEMS[7]["id"], "missing"]),
        SearchRequest(collections=["nothing"]),
        SearchRequest(bbox=[170, 30, -170, 50], limit=1000),
        SearchRequest(bbox=[-5, 35, 0, 0, 45, 9000], limit=1000),
        SearchRequest(
            intersects={"type": "Point", "coordinates": [12.5, 42.1]},
            bbox=[10, 40, 15, 45],
            limit=50,
        ),
        SearchRequest(
            filter={
                "op": "like",
                "args": [{"property": "thisme:site"}, "C%"],
            },
            sortby=[SortField("thisme:site", "asc"), SortField("datetime", "desc")],
            limit=100,
        ),
        SearchRequest(sortby=[SortField("properties.platform", "desc")], limit=200),
    ],
    ids=lambda r: "request",
)
def test_more_searches_equal_sqlite(
    loaded: tuple[PgstacStore, SQLiteStore], request_: SearchRequest
) -> None:
    pg, lite = loaded
    assert _all_pages(pg, request_) == _all_pages(lite, request_)


def test_temporal_filter(loaded: tuple[PgstacStore, SQLiteStore]) -> None:
    pg, _ = loaded
    request = SearchRequest(
        filter={
            "op": "t_intersects",
            "args": [
                {"property": "datetime"},
                {"interval": ["2020-01-01T00:00:00Z", "2020-06-30T00:00:00Z"]},
            ],
        },
        limit=1000,
    )
    expected = [
        i["id"]
        for i in ITEMS
        if "2020-01-01T00:00:00Z" <= i["properties"]["datetime"] <= "2020-06-30T00:00:00Z"
    ]
    ids, matched = _all_pages(pg, request)
    assert matched == len(expected) > 0
    assert sorted(ids) == sorted(expected)


@pytest.mark.parametrize(
    "request_",
    [
        SearchRequest(limit=0),
        SearchRequest(bbox=[1, 2, 3]),
        SearchRequest(bbox=[0, 10, 1, 5]),
        SearchRequest(filter={"op": "nonsense", "args": [1, 2]}),
        SearchRequest(filter={"op": "=", "args": [{"property": "datetime"}, "not a date"]}),
        SearchRequest(intersects={"type": "Polygon", "coordinates": "x"}),
        SearchRequest(token="garbage"),
    ],
    ids=lambda r: "request",
)
def test_bad_searches_are_invalid_queries(
    loaded: tuple[PgstacStore, SQLiteStore], request_: SearchRequest
) -> None:
    pg, _ = loaded
    with pytest.raises(InvalidQuery):
        pg.search(request_)


def test_token_of_another_search_is_refused(loaded: tuple[PgstacStore, SQLiteStore]) -> None:
    pg, _ = loaded
    token = pg.search(SearchRequest(limit=2)).next_token
    assert token
    with pytest.raises(InvalidQuery, match="another search"):
        pg.search(SearchRequest(limit=2, q=["crete"], token=token))


def test_queryables_list_the_thisme_properties(loaded: tuple[PgstacStore, SQLiteStore]) -> None:
    pg, lite = loaded
    schema = pg.queryables(COLLECTION)
    for name in QUERYABLES:
        assert name in schema["properties"]
        assert name in lite.queryables(COLLECTION)["properties"]
    assert "datetime" in pg.queryables()["properties"]
    with pytest.raises(InvalidQuery):
        pg.queryables("nothing")


def test_concurrent_readers(loaded: tuple[PgstacStore, SQLiteStore]) -> None:
    pg, lite = loaded
    requests = [_random_request(random.Random(seed))[0] for seed in range(16)]
    expected = [_all_pages(lite, r) for r in requests]
    results: dict[int, object] = {}

    def work(n: int) -> None:
        try:
            results[n] = _all_pages(pg, requests[n])
        except Exception as err:  # reported below
            results[n] = err

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [results.get(n) for n in range(len(requests))] == expected


# --- harvest -----------------------------------------------------------------------------------
def test_cli_harvest_with_a_bad_database_url_is_one_line(tmp_path: Path) -> None:
    url = f"postgresql://postgres:{SECRET}@127.0.0.1:5432/thisme_no_such_db"
    env = {**os.environ, "THISME_STORE": url, "THISME_RESTO_URL": "http://127.0.0.1:9"}
    proc = subprocess.run(
        [sys.executable, "-m", "thisme_stac", "harvest", "--urlq", "q=%23Crete"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    err = proc.stderr.decode()
    assert proc.returncode != 0
    assert SECRET not in err
    assert SECRET not in proc.stdout.decode()
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error:"), err
    assert "'thisme_no_such_db'" in last
    assert "127.0.0.1:5432" in last


def test_copy_command_round_trip_is_idempotent(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.apiserver import build_store
    from thisme_stac.store import open_store

    source = tmp_path / "from.sqlite"
    items = build_store(source, step=40)
    back = tmp_path / "back.sqlite"
    with temporary_database() as url:

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "thisme_stac", "copy", *args],
                capture_output=True,
                text=True,
                timeout=300,
            )

        first = run("--from", str(source), "--to", url)
        assert first.returncode == 0, first.stderr
        assert f"copied: {len(items):,} new, 0 updated, 0 unchanged" in first.stderr
        again = run("--from", str(source), "--to", url)
        assert f"copied: 0 new, 0 updated, {len(items):,} unchanged" in again.stderr
        home = run("--from", url, "--to", str(back))
        assert home.returncode == 0, home.stderr
        assert "password" not in home.stderr
    a, b = open_store(str(source)), open_store(str(back))
    try:
        assert list(a.iter_items()) == list(b.iter_items())
        assert a.get_collection("SoilMoisture") == b.get_collection("SoilMoisture")
    finally:
        a.close()
        b.close()
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "thisme_stac",
            "copy",
            "--from",
            str(tmp_path / "none.sqlite"),
            "--to",
            str(back),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"error: no store at {tmp_path / 'none.sqlite'}"
