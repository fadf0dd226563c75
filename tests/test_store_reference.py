"""The SQLite store against a brute-force reference (shapely + Python) on generated queries."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import shapely
from shapely.geometry import shape

from tests.stac_items import simulated_items
from thisme_stac.store import SearchRequest, SortField
from thisme_stac.store.sqlite import SQLiteStore

ITEMS = simulated_items(step=11)
SITES = sorted({i["properties"]["thisme:site"] for i in ITEMS})
QUERIES = 250


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _random_request(rng: random.Random) -> tuple[SearchRequest, dict[str, Any]]:
    spec: dict[str, Any] = {}
    kwargs: dict[str, Any] = {"limit": rng.choice([7, 50, 1000])}
    if rng.random() < 0.4:
        west, south = rng.uniform(-10, 36), rng.uniform(30, 50)
        spec["bbox"] = kwargs["bbox"] = [
            west,
            south,
            west + rng.uniform(0.1, 12),
            south + rng.uniform(0.1, 6),
        ]
    if rng.random() < 0.4:
        start = datetime(2016, 1, 1, tzinfo=UTC) + timedelta(days=rng.randrange(0, 3600))
        end = start + timedelta(days=rng.randrange(1, 900))
        spec["datetime"] = kwargs["datetime"] = (start, end)
    conditions: list[dict[str, Any]] = []
    if rng.random() < 0.4:
        site = rng.choice(SITES)
        conditions.append({"op": "=", "args": [{"property": "thisme:site"}, site]})
    if rng.random() < 0.3:
        state = rng.choice(["ascending", "descending"])
        conditions.append({"op": "=", "args": [{"property": "sat:orbit_state"}, state]})
    if rng.random() < 0.3:
        low = rng.randrange(1, 170)
        conditions.append(
            {"op": "between", "args": [{"property": "sat:relative_orbit"}, low, low + 40]}
        )
    if rng.random() < 0.2:
        conditions.append(
            {"op": "in", "args": [{"property": "platform"}, ["sentinel-1b", "sentinel-1c"]]}
        )
    if rng.random() < 0.2:
        lon, lat = rng.uniform(-8, 35), rng.uniform(31, 49)
        poly = shapely.box(lon, lat, lon + 3, lat + 2).__geo_interface__
        conditions.append({"op": "s_intersects", "args": [{"property": "geometry"}, poly]})
    if conditions:
        spec["filter"] = conditions
        kwargs["filter"] = (
            conditions[0]
            if len(conditions) == 1
            else {
                "op": rng.choice(["and", "or"]) if len(conditions) > 1 else "and",
                "args": conditions,
            }
        )
        spec["logic"] = kwargs["filter"]["op"] if len(conditions) > 1 else "and"
    if rng.random() < 0.2:
        spec["q"] = kwargs["q"] = [rng.choice(SITES).lower()]
    if rng.random() < 0.3:
        spec["sortby"] = kwargs["sortby"] = [
            SortField("sat:relative_orbit", "asc"),
            SortField("datetime", "asc"),
        ]
    return SearchRequest(**kwargs), spec


def _matches_condition(item: dict[str, Any], cond: dict[str, Any]) -> bool:
    props = item["properties"]
    op, args = cond["op"], cond["args"]
    if op == "s_intersects":
        return bool(shape(item["geometry"]).intersects(shape(args[1])))
    value = props.get(args[0]["property"])
    if op == "=":
        return bool(value == args[1])
    if op == "between":
        return bool(args[1] <= value <= args[2])
    return value in args[1]


def _reference(spec: dict[str, Any]) -> list[str]:
    out = []
    for item in ITEMS:
        props = item["properties"]
        if "bbox" in spec and not shape(item["geometry"]).intersects(shapely.box(*spec["bbox"])):
            continue
        if "datetime" in spec:
            start, end = spec["datetime"]
            if not start <= _dt(props["datetime"]) <= end:
                continue
        if "filter" in spec:
            results = [_matches_condition(item, c) for c in spec["filter"]]
            if not (all(results) if spec["logic"] == "and" else any(results)):
                continue
        if "q" in spec and spec["q"][0] not in " ".join(props["keywords"]).lower():
            continue
        out.append(item)
    if "sortby" in spec:
        out.sort(
            key=lambda i: (
                i["properties"]["sat:relative_orbit"],
                i["properties"]["datetime"],
                i["id"],
            )
        )
    else:
        out.sort(key=lambda i: (i["properties"]["datetime"], i["id"]), reverse=True)
    return [i["id"] for i in out]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> SQLiteStore:
    path: Path = tmp_path_factory.mktemp("ref") / "ref.sqlite"
    db = SQLiteStore(path)
    db.upsert_items(ITEMS)
    return db


@pytest.mark.parametrize("seed", range(QUERIES))
def test_store_equals_brute_force(store: SQLiteStore, seed: int) -> None:
    request, spec = _random_request(random.Random(seed))
    expected = _reference(spec)
    got: list[str] = []
    page = store.search(request)
    assert page.number_matched == len(expected)
    while True:
        got += [i["id"] for i in page.items]
        if not page.next_token:
            break
        page = store.search(replace(request, token=page.next_token))
    assert got == expected
