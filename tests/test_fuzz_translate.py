"""Hostile resto input: hypothesis-generated malformed features and pages.

The translator must either produce a valid STAC item or raise ``TranslationError``; the resto
client must either yield pages or raise ``RestoError``; a harvest must keep every good feature
and count (and log, by name) every bad one. Anything else (another exception, a crash, a
half-written store) fails.
"""

from __future__ import annotations

import copy
import logging
import math
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.pgstac_db import temporary_database
from tests.reliability import record
from tests.restoserver import Reply, ScriptedServer, scripted_server
from thisme_stac.errors import RestoError, TranslationError
from thisme_stac.harvest import Harvester, checkpoint_key
from thisme_stac.resto.client import RestoClient
from thisme_stac.resto.query import parse_urlq
from thisme_stac.simulator import GeneratedCatalogue
from thisme_stac.simulator.server import Resto, _Options
from thisme_stac.store import Store, open_store
from thisme_stac.translate.collection import build_collection
from thisme_stac.translate.item import feature_to_item_dict
from thisme_stac.validate import validation_errors

pytestmark = pytest.mark.reliability

BASE = "http://127.0.0.1:5252"
QUERY = parse_urlq("q=%23Central-Italy")
FIRST_PAGE = "/features?q=%23Central-Italy&limit=500"
HUGE = "x" * 200_000


def _simulated_features(count: int) -> list[dict[str, Any]]:
    catalogue = GeneratedCatalogue()
    resto = Resto(catalogue, _Options())
    step = len(catalogue) // count
    return [resto.feature(p * step, BASE, with_sort=True) for p in range(count)]


GOOD = _simulated_features(40)

ABSURD_DATES = [
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "0001-01-01",
    "9999-12-31T23:59:59.999999Z",
    "2020-13-45T00:00:00Z",
    "2020-02-30",
    "+275760-09-13T00:00:00Z",
    "-0001-01-01T00:00:00Z",
    "2020-01-03T17:06:19.000000Z" * 1000,
    "1e309",
    "NaN",
    "",
    " ",
    "2020-01-03T25:00:00Z",
    "2020-01-03T17:06:19+99:00",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from([HUGE, "\x00", "\ud7ff\u202e", "#Central-Italy " * 5000, *ABSURD_DATES])
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
TOP_KEYS = ["geometry", "properties", "id", "type", "bbox", "links", "assets"]
PROP_KEYS = [
    "productIdentifier",
    "startDate",
    "completionDate",
    "published",
    "updated",
    "links",
    "description",
    "title",
    "platform",
    "instrument",
    "quicklook",
    "thumbnail",
    "relativeOrbitNumber",
    "orbitDirection",
    "polarisation",
    "sensorMode",
    "hashtags",
    "keywords",
    "resolution",
    "services",
    "processingLevel",
    "productType",
]
_DELETE = object()


valid_positions = st.lists(st.floats(-90, 90), min_size=2, max_size=3)
hostile_coordinates = st.sampled_from([-180, 180, 1e-300, 1e308, math.nan, math.inf, 12, True])
positions = (
    valid_positions
    | valid_positions
    | valid_positions
    | st.lists(hostile_coordinates, max_size=4)
    | json_values
)
GEOMETRY_DEPTH = {
    "Point": 0,
    "MultiPoint": 1,
    "LineString": 1,
    "MultiLineString": 2,
    "Polygon": 2,
    "MultiPolygon": 3,
}


def _nested(depth: int) -> st.SearchStrategy[Any]:
    if depth == 0:
        return positions
    return st.lists(_nested(depth - 1), max_size=3 if depth == 1 else 2)


def _close_rings(coords: Any, depth: int) -> None:
    if not isinstance(coords, list):
        return
    if depth == 2:
        for ring in coords:
            if isinstance(ring, list) and ring:
                ring.append(copy.deepcopy(ring[0]))
    elif depth == 3:
        for polygon in coords:
            _close_rings(polygon, 2)


@st.composite
def geometries(draw: st.DrawFn) -> dict[str, Any]:
    """GeoJSON-like geometries: right or wrong nesting, short lines, open or closed rings,
    2-4 numbers per position, values in and out of range."""
    kind = draw(st.sampled_from(sorted(GEOMETRY_DEPTH)))
    depth = GEOMETRY_DEPTH[kind] if draw(st.integers(0, 3)) else draw(st.integers(0, 3))
    coords = draw(_nested(depth))
    if draw(st.booleans()):
        _close_rings(coords, depth)
    return {"type": kind, "coordinates": coords}


@st.composite
def mutations(draw: st.DrawFn) -> tuple[str, ...]:
    """One change to a feature: (kind, *where)."""
    kind = draw(
        st.sampled_from(
            ["top", "prop", "coord", "ring", "geomtype", "geometry", "date", "delete", "delete"]
        )
    )
    if kind in ("top", "delete"):
        return (kind, draw(st.sampled_from(TOP_KEYS + [f"p.{k}" for k in PROP_KEYS])))
    if kind == "prop":
        return (kind, draw(st.sampled_from(PROP_KEYS)))
    if kind == "date":
        dates = ["startDate", "completionDate", "published", "updated"]
        return (kind, draw(st.sampled_from(dates)))
    return (kind,)


def _set(feature: dict[str, Any], key: str, value: Any) -> None:
    target = feature
    if key.startswith("p."):
        props = feature.get("properties")
        if not isinstance(props, dict):
            return
        target, key = props, key[2:]
    if value is _DELETE:
        target.pop(key, None)
    else:
        target[key] = value


@st.composite
def hostile_features(draw: st.DrawFn, index: int = 0) -> Any:
    """A simulator feature with 1-4 hostile changes, or (sometimes) not a feature at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values.filter(lambda v: not isinstance(v, dict)))
    feature = copy.deepcopy(GOOD[draw(st.integers(0, len(GOOD) - 1))])
    for change in draw(st.lists(mutations(), min_size=1, max_size=4)):
        kind = change[0]
        if kind == "delete":
            _set(feature, change[1], _DELETE)
        elif kind == "top":
            _set(feature, change[1], draw(json_values))
        elif kind == "prop":
            _set(feature, f"p.{change[1]}", draw(json_values))
        elif kind == "date":
            _set(feature, f"p.{change[1]}", draw(st.sampled_from(ABSURD_DATES)))
        elif kind == "geometry":
            feature["geometry"] = draw(geometries())
        geometry = feature.get("geometry")
        if not isinstance(geometry, dict) or not isinstance(geometry.get("coordinates"), list):
            continue
        ring = geometry["coordinates"][0] if geometry["coordinates"] else None
        if kind == "coord" and isinstance(ring, list) and ring:
            where = draw(st.integers(0, len(ring) - 1))
            ring[where] = draw(
                st.sampled_from([[math.nan, 1.0], [1e308, 0.0], [200.0, 95.0], ["1", "2"], [1.0]])
                | json_values
            )
        elif kind == "ring" and isinstance(ring, list) and len(ring) > 1:
            ring.pop()
        elif kind == "geomtype":
            geometry["type"] = draw(
                st.sampled_from(["Point", "MultiPolygon", "GeometryCollection", "Circle", None])
            )
    return _unique_ids(feature, index)


def _unique_ids(feature: Any, index: int) -> Any:
    """Prefix string ids with the feature's position: hostile features never collide by id."""
    if not isinstance(feature, dict):
        return feature
    if isinstance(feature.get("id"), str):
        feature["id"] = f"{index}:{feature['id']}"
    props = feature.get("properties")
    if isinstance(props, dict) and isinstance(props.get("productIdentifier"), str):
        props["productIdentifier"] = f"{index}:{props['productIdentifier']}"
    return feature


def _translate(feature: Any) -> dict[str, Any] | TranslationError:
    try:
        return feature_to_item_dict(feature)
    except TranslationError as err:
        return err


FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)


STORES = ["sqlite", pytest.param("pgstac", marks=pytest.mark.pgstac)]


@contextmanager
def _store(kind: str, tmp_path: Path) -> Iterator[Store]:
    """An empty store of ``kind`` holding the SoilMoisture collection."""
    with ExitStack() as stack:
        if kind == "sqlite":
            url = str(tmp_path / "fuzz.sqlite")
        else:
            url = stack.enter_context(temporary_database())
        store = open_store(url)
        try:
            store.upsert_collection(build_collection(None))
            yield store
        finally:
            store.close()


@pytest.mark.parametrize("kind", STORES)
def test_translator_yields_valid_storable_items_or_translation_errors(
    kind: str, tmp_path: Path
) -> None:
    seen: Counter[str] = Counter()
    with _store(kind, tmp_path) as store:
        _check_features(store, seen)
    assert seen["rejected"] > 50
    assert seen["accepted"] > 10
    record(
        "input",
        f"hypothesis: malformed resto features through the translator into the store ({kind})",
        runs=seen["runs"],
        rejected=seen["rejected"],
        accepted=seen["accepted"],
    )


def _check_features(store: Store, seen: Counter[str]) -> None:

    @FUZZ
    @given(feature=hostile_features())
    def check(feature: Any) -> None:
        outcome = _translate(feature)
        seen["runs"] += 1
        if isinstance(outcome, TranslationError):
            seen["rejected"] += 1
            assert len(str(outcome)) < 300, "the message names the feature briefly"
            return
        seen["accepted"] += 1
        orjson.dumps(outcome)
        assert validation_errors(outcome) == [], outcome["id"]
        store.upsert_items([outcome])  # what the translator accepts, the store takes

    check()


@pytest.mark.parametrize("kind", STORES)
def test_generated_geometries_are_rejected_or_storable(kind: str, tmp_path: Path) -> None:
    seen: Counter[str] = Counter()
    with _store(kind, tmp_path) as store:
        _check_geometries(store, seen)
    assert seen["accepted"] > 20
    assert seen["rejected"] > 20
    record(
        "input",
        f"hypothesis: generated GeoJSON geometries through the translator into the store ({kind})",
        runs=seen["runs"],
        rejected=seen["rejected"],
        accepted=seen["accepted"],
    )


def _check_geometries(store: Store, seen: Counter[str]) -> None:
    @FUZZ
    @given(geometry=geometries())
    def check(geometry: dict[str, Any]) -> None:
        feature = copy.deepcopy(GOOD[0])
        feature["geometry"] = geometry
        outcome = _translate(feature)
        seen["runs"] += 1
        if isinstance(outcome, TranslationError):
            seen["rejected"] += 1
            return
        seen["accepted"] += 1
        assert validation_errors(outcome) == [], geometry
        store.upsert_items([outcome])

    check()


# --- pages ------------------------------------------------------------------------------------
next_hrefs = (
    st.sampled_from(
        [
            "",
            "page2",
            "ftp://127.0.0.1/x",
            "http://[::1",
            "http://127.0.0.1:99999/x",
            "http://127.0.0.1:5252/features.json?&lt=1",
            "http://127.0.0.1:5252/\x00",
            HUGE,
        ]
    )
    | json_values
)
links = st.lists(
    st.fixed_dictionaries({"rel": st.sampled_from(["next", "self", None]), "href": next_hrefs})
    | json_values,
    max_size=3,
)
pages = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"type": st.just("FeatureCollection")},
        optional={
            "features": json_values | st.lists(hostile_features(), max_size=5),
            "properties": json_values
            | st.fixed_dictionaries(
                {},
                optional={"links": links | json_values, "totalResults": json_values},
            ),
            "links": links,
            "context": json_values,
            "numberMatched": json_values,
            "stac_version": st.just("1.0.0"),
        },
    ),
)


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    with scripted_server() as scripted:
        yield scripted


def test_page_parsing_yields_pages_or_resto_errors(server: ScriptedServer) -> None:
    seen: Counter[str] = Counter()

    @settings(FUZZ, max_examples=200)
    @given(page=pages, raw=st.booleans())
    def check(page: Any, raw: bool) -> None:
        body = orjson.dumps(page)
        if raw:  # not JSON: cut short, with a stray byte
            body = body[: max(1, len(body) // 2)] + b"\xff"
        server.routes.clear()
        server.routes[FIRST_PAGE] = Reply(200, body.replace(BASE.encode(), server.url.encode()))
        seen["runs"] += 1
        message = ""
        with RestoClient(server.url, retries=1) as client:
            try:
                for got in client.search_pages(QUERY, limit=500):
                    assert got.raw_count == len(got.features) + got.duplicates + len(got.rejected)
                seen["parsed"] += 1
            except RestoError as err:
                message = str(err)
                seen["refused"] += 1
        assert "\n" not in message

    check()
    record(
        "input",
        "hypothesis: malformed resto search pages through the client",
        runs=seen["runs"],
        parsed=seen["parsed"],
        refused=seen["refused"],
    )


def test_harvest_keeps_good_features_and_counts_every_bad_one(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    seen: Counter[str] = Counter()

    @settings(FUZZ, max_examples=60)
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        count = data.draw(st.integers(1, 12))
        features: list[Any] = []
        for n in range(count):
            if data.draw(st.booleans()):
                features.append(_unique_ids(copy.deepcopy(GOOD[n % len(GOOD)]), n))
            else:
                features.append(data.draw(hostile_features(index=n)))
        features = orjson.loads(orjson.dumps(features))  # as they travel (NaN becomes null)
        outcomes = [_translate(f) for f in features]
        good = {o["id"] for o in outcomes if isinstance(o, dict)}
        bad = [o for o in outcomes if not isinstance(o, dict)]
        named = [o for o, f in zip(outcomes, features, strict=True) if isinstance(f, dict)]
        page = {"type": "FeatureCollection", "properties": {"links": []}, "features": features}
        server.routes.clear()
        server.routes[FIRST_PAGE] = Reply(200, orjson.dumps(page))
        caplog.clear()
        with tempfile.TemporaryDirectory() as tmp:
            store = open_store(str(Path(tmp) / "fuzz.sqlite"))
            try:
                with (
                    caplog.at_level(logging.WARNING, logger="thisme_stac"),
                    RestoClient(server.url, retries=1) as client,
                ):
                    report = Harvester(client, store).harvest(QUERY)
                stored = {item["id"] for item in store.iter_items()}
            finally:
                store.close()
        assert report.complete, report.error
        assert report.fetched == count
        assert report.skipped == len(bad)
        assert report.new == len(good)
        assert report.duplicates == 0
        assert stored == good
        logged = [r.getMessage() for r in caplog.records if "skipped a feature" in r.getMessage()]
        assert len(logged) == len(bad)
        for err in named:
            if isinstance(err, TranslationError):
                assert any(str(err) in line for line in logged), str(err)
        assert sum("is not a JSON object" in line for line in logged) == sum(
            not isinstance(f, dict) for f in features
        )
        seen["runs"] += 1
        seen["features"] += count
        seen["bad"] += len(bad)
        seen["good"] += len(good)

    check()
    assert seen["bad"] > 20
    assert seen["good"] > 20
    record(
        "input",
        "hypothesis: harvest of pages mixing good and malformed features (SQLite)",
        runs=seen["runs"],
        features=seen["features"],
        bad_counted=seen["bad"],
        good_kept=seen["good"],
    )


def test_an_updated_date_in_the_future_does_not_poison_incremental_harvests(
    server: ScriptedServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    features = [_unique_ids(copy.deepcopy(f), n) for n, f in enumerate(GOOD[:3])]
    features[1]["properties"]["updated"] = "9999-12-31T23:59:59Z"
    page = {"type": "FeatureCollection", "properties": {"links": []}, "features": features}
    server.routes.clear()
    server.routes[FIRST_PAGE] = Reply(200, orjson.dumps(page))
    store = open_store(str(tmp_path / "future.sqlite"))
    try:
        with caplog.at_level(logging.WARNING), RestoClient(server.url) as client:
            report = Harvester(client, store).harvest(QUERY)
        state = orjson.loads(store.get_checkpoint(checkpoint_key(server.url, QUERY)) or "{}")
    finally:
        store.close()
    assert report.complete
    assert report.new == 3
    legit = max(features[n]["properties"]["updated"] for n in (0, 2))
    assert state["hwm"] == legit
    assert any("in the future" in r.getMessage() for r in caplog.records)
    record("input", "a resto 'updated' in year 9999 (incremental mark kept sane)", runs=1)
