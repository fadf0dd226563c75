"""The embedded SQLite store: writes, transactions, search parameters, paging, concurrency."""

from __future__ import annotations

import copy
import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.stac_items import simulated_items
from thisme_stac.errors import ConfigError, StoreError
from thisme_stac.search_params import parse_filter
from thisme_stac.store import SearchRequest, SortField, open_store
from thisme_stac.store.sqlite import InvalidQuery, SQLiteStore
from thisme_stac.translate.collection import build_collection

ITEMS = simulated_items(step=7)  # ~2,800 items over all sites and years


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    db = SQLiteStore(tmp_path / "t.sqlite")
    db.upsert_collection(build_collection(None))
    db.upsert_items(ITEMS)
    return db


def _all(db: SQLiteStore, request: SearchRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        page = db.search(request)
        out += page.items
        if not page.next_token:
            return out
        request = replace(request, token=page.next_token)


def test_upsert_counts_new_updated_unchanged(tmp_path: Path) -> None:
    db = SQLiteStore(tmp_path / "u.sqlite")
    first = db.upsert_items(ITEMS[:100])
    assert (first.new, first.updated, first.unchanged) == (100, 0, 0)
    changed = copy.deepcopy(ITEMS[:10])
    for item in changed:
        item["properties"]["title"] = "changed"
    second = db.upsert_items(changed + ITEMS[10:120])
    assert (second.new, second.updated, second.unchanged) == (20, 10, 90)
    assert db.count_items() == 120
    assert db.get_item("SoilMoisture", ITEMS[0]["id"])["properties"]["title"] == "changed"


def test_failed_batch_writes_nothing_not_even_its_checkpoint(tmp_path: Path) -> None:
    db = SQLiteStore(tmp_path / "a.sqlite")
    db.upsert_items(ITEMS[:5], checkpoint=("k", "one"))
    broken = copy.deepcopy(ITEMS[5:10])
    broken[3]["properties"].pop("datetime")
    with pytest.raises(InvalidQuery):
        db.upsert_items(broken, checkpoint=("k", "two"))
    assert db.count_items() == 5
    assert db.get_checkpoint("k") == "one"


def test_extent_and_summaries_follow_the_items(store: SQLiteStore) -> None:
    collection = store.get_collection("SoilMoisture")
    assert collection is not None
    bbox = collection["extent"]["spatial"]["bbox"][0]
    assert bbox[0] == min(i["bbox"][0] for i in ITEMS)
    assert bbox[3] == max(i["bbox"][3] for i in ITEMS)
    start, end = collection["extent"]["temporal"]["interval"][0]
    assert start == min(i["properties"]["datetime"] for i in ITEMS)
    assert end == max(i["properties"]["datetime"] for i in ITEMS)
    sites = {i["properties"]["thisme:site"] for i in ITEMS}
    assert set(collection["summaries"]["thisme:site"]) == sites


def test_paging_returns_every_item_once_in_default_order(store: SQLiteStore) -> None:
    got = _all(store, SearchRequest(limit=97))
    assert len(got) == len(ITEMS)
    keys = [(i["properties"]["datetime"], i["id"]) for i in got]
    assert keys == sorted(keys, reverse=True)
    assert len({i["id"] for i in got}) == len(ITEMS)


def test_sortby_and_token_checks(store: SQLiteStore) -> None:
    request = SearchRequest(
        sortby=[SortField("sat:relative_orbit", "asc"), SortField("datetime", "desc")], limit=50
    )
    got = _all(store, request)
    assert len(got) == len(ITEMS)
    keys = [(i["properties"]["sat:relative_orbit"], i["properties"]["datetime"]) for i in got]
    assert keys == sorted(keys, key=lambda k: (k[0], [-ord(c) for c in k[1]]))
    token = store.search(request).next_token
    assert token
    with pytest.raises(InvalidQuery, match="another search"):
        store.search(SearchRequest(limit=50, token=token))
    with pytest.raises(InvalidQuery, match="token"):
        store.search(SearchRequest(limit=50, token="garbage!"))


def test_search_parameters(store: SQLiteStore) -> None:
    site = [i for i in ITEMS if i["properties"]["thisme:site"] == "Central-Italy"]
    by_q = _all(store, SearchRequest(q=["central-italy"], limit=500))
    assert {i["id"] for i in by_q} == {i["id"] for i in site}
    by_bbox = _all(store, SearchRequest(bbox=[12.5, 42.9, 12.6, 43.0], limit=500))
    assert {i["id"] for i in by_bbox} == {i["id"] for i in site}
    year = _all(
        store,
        SearchRequest(
            datetime=(datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 12, 31, 23, tzinfo=UTC)),
            limit=500,
        ),
    )
    assert year
    assert all(i["properties"]["datetime"].startswith("2020") for i in year)
    ids = [ITEMS[3]["id"], ITEMS[9]["id"]]
    assert {i["id"] for i in _all(store, SearchRequest(ids=ids))} == set(ids)
    cql = parse_filter("\"thisme:site\" = 'Central-Italy' AND \"sat:orbit_state\" = 'ascending'")
    page = store.search(SearchRequest(filter=cql, limit=10))
    expected = [i for i in site if i["properties"]["sat:orbit_state"] == "ascending"]
    assert page.number_matched == len(expected)
    assert all(i["properties"]["sat:orbit_state"] == "ascending" for i in page.items)


@pytest.mark.parametrize(
    "text",
    [
        "\"thisme:site\" = 'x'; DROP TABLE items; --'",
        '"a\'); DROP TABLE items; --" = 1',
        "title LIKE '%''; DELETE FROM items; --%'",
    ],
)
def test_injection_attempts_are_bound_or_refused(store: SQLiteStore, text: str) -> None:
    try:
        page = store.search(SearchRequest(filter=parse_filter(text)))
    except (InvalidQuery, ConfigError):
        pass
    else:
        assert page.items == []
    assert store.count_items() == len(ITEMS)


def test_invalid_filters_are_invalid_query(store: SQLiteStore) -> None:
    with pytest.raises(InvalidQuery):
        store.search(SearchRequest(filter={"op": "+", "args": [1, 2]}))
    with pytest.raises(InvalidQuery):
        store.search(SearchRequest(filter={"op": "=", "args": [{"property": 'x"y'}, 1]}))
    with pytest.raises(InvalidQuery):
        store.search(SearchRequest(limit=0))


def test_checkpoints_and_deletes(store: SQLiteStore) -> None:
    store.set_checkpoint("a", "1")
    assert store.get_checkpoint("a") == "1"
    store.set_checkpoint("a", None)
    assert store.get_checkpoint("a") is None
    assert store.delete_item("SoilMoisture", ITEMS[0]["id"])
    assert store.get_item("SoilMoisture", ITEMS[0]["id"]) is None
    assert not store.delete_item("SoilMoisture", ITEMS[0]["id"])
    assert store.delete_collection("SoilMoisture")
    assert store.count_items() == 0


def test_queryables_list_thisme_properties(store: SQLiteStore) -> None:
    schema = store.queryables("SoilMoisture")
    assert schema["properties"]["sat:relative_orbit"]["type"] == "integer"
    assert "thisme:site" in schema["properties"]


def test_reader_thread_never_sees_half_a_batch(tmp_path: Path) -> None:
    db = SQLiteStore(tmp_path / "c.sqlite")
    seen: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        try:
            while not done.is_set():
                seen.append(db.search(SearchRequest(limit=1)).number_matched or 0)
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=reader)
    thread.start()
    for start in range(0, 1000, 100):
        db.upsert_items(ITEMS[start : start + 100])
    done.set()
    thread.join()
    assert not errors
    assert seen
    assert all(n % 100 == 0 for n in seen)


def test_not_a_store_is_a_clean_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.sqlite"
    bogus.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"bogus\.sqlite.*not a database"):
        open_store(str(bogus))
    with pytest.raises(StoreError, match="no store"):
        open_store(str(tmp_path / "missing.sqlite"), create=False)


def test_schema_1_store_is_migrated_to_the_space_time_tree(tmp_path: Path) -> None:
    import sqlite3

    items = simulated_items(step=97)
    path = tmp_path / "old.sqlite"
    db = SQLiteStore(path)
    db.upsert_items(items)
    request = SearchRequest(
        bbox=(8.0, 38.0, 16.0, 46.0),
        datetime=(datetime(2019, 1, 1, tzinfo=UTC), datetime(2020, 6, 30, tzinfo=UTC)),
        limit=1000,
    )
    expected = [i["id"] for i in db.search(request).items]
    db.close()
    assert expected
    # rewrite the file as schema 1 had it: a 2-D tree
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE VIRTUAL TABLE old_tree USING rtree (id, minx, maxx, miny, maxy);"
        "INSERT INTO old_tree SELECT id, minx, maxx, miny, maxy FROM items_rtree;"
        "DROP TABLE items_rtree; ALTER TABLE old_tree RENAME TO items_rtree;"
        "PRAGMA user_version = 1;"
    )
    conn.close()
    db = SQLiteStore(path)
    columns = [r[1] for r in db._conn().execute("PRAGMA table_info(items_rtree)")]
    assert columns == ["id", "minx", "maxx", "miny", "maxy", "mint", "maxt"]
    assert [i["id"] for i in db.search(request).items] == expected
    db.close()


def _indexes(db: SQLiteStore) -> set[str]:
    rows = db._conn().execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%'"
    )
    return {name for (name,) in rows}


def test_deferred_indexes_only_for_an_empty_store_and_rebuilt(tmp_path: Path) -> None:
    from thisme_stac.store.sqlite import INDEXES

    path = tmp_path / "bulk.sqlite"
    db = SQLiteStore(path)
    assert _indexes(db) >= set(INDEXES)
    assert db.defer_indexes() is True
    assert not _indexes(db) & set(INDEXES)
    db.upsert_items(ITEMS)
    request = SearchRequest(q=["Central-Italy"], sortby=[SortField("datetime", "asc")], limit=50)
    without = _all(db, request)
    assert db.defer_indexes() is False  # not empty any more
    db.ensure_indexes()
    assert _indexes(db) >= set(INDEXES)
    assert without
    assert _all(db, request) == without
    db.close()

    # a load stopped before its end: the next opening for writing builds the indexes
    db = SQLiteStore(path)
    for name in INDEXES:
        db._conn().execute(f"DROP INDEX {name}")
    db.close()
    reader = SQLiteStore(path, readonly=True)
    assert not _indexes(reader) & set(INDEXES)
    reader.close()
    db = SQLiteStore(path)
    assert _indexes(db) >= set(INDEXES)
    db.close()


def test_new_stores_use_16k_pages_and_older_files_keep_theirs(tmp_path: Path) -> None:
    import sqlite3

    from thisme_stac.store.sqlite import PAGE_SIZE

    fresh = SQLiteStore(tmp_path / "new.sqlite")
    fresh.upsert_items(ITEMS[:50])
    assert fresh._conn().execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE
    fresh.close()

    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA page_size = 4096")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE placeholder (x)")
    conn.close()
    old = SQLiteStore(path)
    result = old.upsert_items(ITEMS[:50])
    assert result.new == 50
    assert old._conn().execute("PRAGMA page_size").fetchone()[0] == 4096
    assert old.count_items() == 50
    old.close()


@pytest.mark.parametrize(
    "op", ["t_intersects", "anyinteracts", "t_before", "t_after", "t_during", "t_disjoint"]
)
def test_temporal_operators_match_python(tmp_path: Path, op: str) -> None:
    items = simulated_items(step=53)
    db = SQLiteStore(tmp_path / "t.sqlite")
    db.upsert_items(items)
    low, high = "2019-03-01T00:00:00Z", "2020-07-01T00:00:00Z"
    expr = {"op": op, "args": [{"property": "datetime"}, {"interval": [low, high]}]}
    got = {i["id"] for i in db.search(SearchRequest(filter=expr, limit=10_000)).items}

    def keep(item: dict[str, Any]) -> bool:
        when = item["properties"]["datetime"]
        return {
            "t_intersects": low <= when <= high,
            "anyinteracts": low <= when <= high,
            "t_before": when < low,
            "t_after": when > high,
            "t_during": low < when < high,
            "t_disjoint": when < low or when > high,
        }[op]

    expected = {i["id"] for i in items if keep(i)}
    assert expected
    assert got == expected
    db.close()


def test_rectangle_fast_path_agrees_with_shapely() -> None:
    import random

    import shapely

    from thisme_stac.store.sqlite import _rectangle, _spatial

    rng = random.Random(11)
    steps = [0, 0.5, 1, 2, 3, 4]
    checked = 0
    for _ in range(5000):
        x1, x2 = sorted(rng.sample(steps, 2))
        y1, y2 = sorted(rng.sample(steps, 2))
        q1, q2 = sorted(rng.sample(steps, 2))
        r1, r2 = sorted(rng.sample(steps, 2))
        if x1 >= x2 or y1 >= y2 or q1 >= q2 or r1 >= r2:
            continue
        item, query = shapely.box(x1, y1, x2, y2), shapely.box(q1, r1, q2, r2)
        assert _rectangle(shapely.to_wkb(item)) == (x1, y1, x2, y2)
        got = _spatial("intersects", shapely.to_wkb(item), shapely.to_wkb(query))
        assert got == int(item.intersects(query)), (item, query)
        checked += 1
    assert checked == 5000
    triangle = shapely.Polygon([(0, 0), (4, 0), (0, 4)])
    assert _rectangle(shapely.to_wkb(triangle)) is None
    assert (
        _spatial("intersects", shapely.to_wkb(triangle), shapely.to_wkb(shapely.box(3, 3, 5, 5)))
        == 0
    )
