"""The resto 5 simulator: catalogue rules, resto query semantics and paging, shapes, downloads."""

from __future__ import annotations

import io
import itertools
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import rasterio

from tests.conftest import RESTO5_CAPTURED, RESTO5_INGEST
from thisme_stac.simulator import GeneratedCatalogue, SimulatorServer, soil_moisture_field
from thisme_stac.simulator.catalogue import RESTO_NAMESPACE
from thisme_stac.simulator.render import uuid5_text
from thisme_stac.simulator.server import Resto, _Options
from thisme_stac.simulator.sites import SITES

PID_RE = re.compile(r"^SM_[A-Za-z0-9]+_\d{8}T\d{6}_S1[ABC]_R\d{3}$")


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(GeneratedCatalogue()) as server:
        yield server


def get(sim: SimulatorServer, path: str, **kw: Any) -> httpx.Response:
    return httpx.get(sim.url + path, timeout=30, **kw)


def test_catalogue_size_cadence_and_platforms() -> None:
    cat = GeneratedCatalogue()
    assert len(SITES) == 22
    assert len(cat) == 19_488  # 32 site-orbit tracks x 609 dates (6-day cadence, 2016-2025)
    ids = cat.product_ids("Central-Italy")
    assert all(PID_RE.match(p) for p in ids)
    assert len(ids) == len(set(ids)) == 2 * 609
    dates = sorted(
        {datetime.strptime(p.split("_")[2][:8], "%Y%m%d") for p in ids if p.endswith("R117")}
    )
    assert {(b - a).days for a, b in itertools.pairwise(dates)} == {6}
    for pid in ids:
        day = datetime.strptime(pid.split("_")[2], "%Y%m%dT%H%M%S")
        platform = pid.split("_")[3]
        if platform == "S1B":
            assert day < datetime(2021, 12, 23)
        if platform == "S1C":
            assert day >= datetime(2025, 4, 1)
    assert GeneratedCatalogue().product_ids() == cat.product_ids()  # deterministic


def test_recorded_fixture_products_are_in_the_catalogue() -> None:
    cat = GeneratedCatalogue()
    for path in sorted(RESTO5_INGEST.glob("SM_*.json")):
        feature = json.loads(path.read_text())
        assert cat.find(feature["properties"]["productIdentifier"]) is not None, path.name


def test_publish_until_adds_new_dates() -> None:
    cat = GeneratedCatalogue(end=datetime(2020, 1, 1, tzinfo=UTC))
    before = cat.count()
    cat.publish_until(datetime(2020, 2, 1, tzinfo=UTC))
    assert cat.count() - before == sum(
        1 for p in cat.product_ids() if p.split("_")[2].startswith("202001")
    )


def _structure(value: Any) -> Any:
    """Keys (in order) and value types, recursively; lists by their first element."""
    if isinstance(value, dict):
        return [(k, _structure(v)) for k, v in value.items()]
    if isinstance(value, list):
        return ["list", _structure(value[0]) if value else None]
    return type(value).__name__


def _href_shape(href: str) -> str:
    path, _, query = href.partition("?")
    keys = [p.split("=")[0] for p in query.split("&") if p]
    return re.sub(r"https?://[^/]+", "", path) + "?&" + "&".join(keys)


def test_search_page_matches_the_captured_resto5_structure(sim: SimulatorServer) -> None:
    for name, path in [
        ("search_page1.json", "/collections/SoilMoisture/features?q=%23Central-Italy&limit=3"),
        (
            "search_thisme_urlq_on_features.json",
            "/features?q=%23Central-Italy&collection=SoilMoisture",
        ),
    ]:
        captured = json.loads((RESTO5_CAPTURED / name).read_text())
        ours = get(sim, path).json()
        for feature in (ours["features"][0], captured["features"][0]):
            for key in ("orbitDirection", "relativeOrbitNumber", "polarisation", "sensorMode"):
                feature["properties"].pop(key, None)  # simulator extras, documented
        assert _structure(ours["properties"]) == _structure(captured["properties"])
        assert _structure(ours["features"][0]) == _structure(captured["features"][0])
        # the captured /features query had 6 hits (no next page); ours has a next link more
        captured_links = captured["properties"]["links"]
        assert [_href_shape(li["href"]) for li in ours["properties"]["links"]][
            : len(captured_links)
        ] == [_href_shape(li["href"]) for li in captured_links]
        assert [li["rel"] for li in ours["features"][0]["properties"]["links"]] == [
            li["rel"] for li in captured["features"][0]["properties"]["links"]
        ]


def test_paging_a_site_gives_the_ground_truth_and_an_empty_last_page(sim: SimulatorServer) -> None:
    truth = sim.catalogue.product_ids("Central-Italy")
    url = sim.url + "/collections/SoilMoisture/features?q=%23Central-Italy&limit=203"
    got: list[str] = []
    pages: list[dict[str, Any]] = []
    while url:
        page = httpx.get(url, timeout=30).json()
        pages.append(page)
        got += [f["properties"]["productIdentifier"] for f in page["features"]]
        nxt = [li["href"] for li in page["properties"]["links"] if li["rel"] == "next"]
        assert all(".json?&" in h and "lt=" in h for h in nxt)
        url = nxt[0] if nxt else ""
    assert got == truth
    assert len(truth) % 203 == 0  # 1218 = 6 x 203: a full last page, then an empty one
    assert pages[-1]["features"] == []
    assert pages[-1]["properties"]["totalResults"] == 0
    assert [li["rel"] for li in pages[-1]["properties"]["links"]] == ["self", "search", "first"]
    assert pages[1]["properties"]["startIndex"] == 1


def test_page_and_cursor_quirk(sim: SimulatorServer) -> None:
    page2 = get(sim, "/collections/SoilMoisture/features?q=%23Central-Italy&limit=3&page=2").json()
    assert page2["properties"]["startIndex"] == 4
    nxt = next(li["href"] for li in page2["properties"]["links"] if li["rel"] == "next")
    assert "page=2" in nxt
    assert "lt=" in nxt
    skipped = httpx.get(nxt, timeout=30).json()["features"]
    truth = sim.catalogue.product_ids("Central-Italy")
    assert [f["properties"]["productIdentifier"] for f in skipped] == truth[9:12]


@pytest.mark.parametrize(
    ("query", "count"),
    [
        ("q=%23central-italy", 1218),
        ("q=%23CentralItaly", 1218),
        ("q=%23Central-Italy+%23platform%3AS1B", None),
        ("q=%23Central-Italy+-%23platform%3AS1A", None),
        ("q=%23Central-Italy+%23year%3A2020", None),
        ("q=Central-Italy", 0),
        ("pid=SM_CentralItaly_20200103T170619_S1A_R117", 1),
        ("box=12.3,42.7,12.4,42.8", 1218),
        ("q=%23Central-Italy&startDate=2020-01-01&completionDate=2020-01-31T23:59:59Z", None),
    ],
)
def test_query_semantics(sim: SimulatorServer, query: str, count: int | None) -> None:
    body = get(sim, f"/collections/SoilMoisture/features?{query}&limit=500").json()
    total = body["properties"]["totalResults"]
    props = [f["properties"] for f in body["features"]]
    if count is not None:
        assert total == count
    if "platform%3AS1B" in query:
        assert total > 0
        assert all(p["platform"] == "S1B" for p in props)
    if "-%23platform" in query:
        assert total > 0
        assert all(p["platform"] != "S1A" for p in props)
    if "year%3A2020" in query:
        assert total == 2 * 61
        assert all(p["startDate"].startswith("2020") for p in props)
    if "startDate" in query:
        assert total == 10
        assert all(p["startDate"].startswith("2020-01") for p in props)


def test_updated_filter_and_sort(sim: SimulatorServer) -> None:
    body = get(sim, "/collections/SoilMoisture/features?q=%23Crete&limit=5&sort=-startDate").json()
    starts = [f["properties"]["startDate"] for f in body["features"]]
    assert starts == sorted(starts)
    last = body["features"][-1]["properties"]["updated"]
    newer = get(sim, f"/collections/SoilMoisture/features?q=%23Crete&updated={last}").json()
    assert all(f["properties"]["updated"] >= last for f in newer["features"])


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("limit=1000", 400, 'Value for "limit" must be lower than 501'),
        ("limit=abc", 400, 'Value for "limit" must be numeric'),
        ("limit=0", 400, 'Value for "limit" must be greater than 0'),
        ("page=100", 400, "Offset pagination is limited to 1000 elements"),
        ("startDate=2020/01/01", 400, 'Value for "startDate" must follow the pattern'),
        ("sort=-title", 400, "Invalid sorting key"),
    ],
)
def test_errors_like_resto(sim: SimulatorServer, query: str, status: int, message: str) -> None:
    response = get(sim, f"/collections/SoilMoisture/features?{query}")
    assert response.status_code == status
    body = response.json()
    assert list(body) == ["ErrorMessage", "ErrorCode"]
    assert body["ErrorMessage"].startswith(message)
    assert body["ErrorCode"] == status


def test_captured_error_bodies_are_reproduced(sim: SimulatorServer) -> None:
    for name, path in [
        ("error_404_unknown_collection.json", "/collections/Unknown/features"),
        ("error_400_limit.json", "/collections/SoilMoisture/features?limit=1000"),
        ("error_400_offset.json", "/collections/SoilMoisture/features?page=100"),
        ("error_400_date_pattern.json", "/collections/SoilMoisture/features?startDate=2020/01/01"),
    ]:
        assert get(sim, path).json() == json.loads((RESTO5_CAPTURED / name).read_text())
    bad = get(sim, "/collections/SoilMoisture/features", headers={"Authorization": "Bearer x.y"})
    assert bad.status_code == 401
    assert bad.json() == json.loads((RESTO5_CAPTURED / "error_401_bad_token.json").read_text())


def test_feature_by_uuid_and_pid(sim: SimulatorServer) -> None:
    pid = "SM_CentralItaly_20200103T170619_S1A_R117"
    by_pid = get(sim, f"/features/{pid}").json()
    assert by_pid["id"] == "803d03a9-dd63-5608-a152-ea09bf9376b3"  # resto's uuid5, as captured
    assert get(sim, f"/features/{by_pid['id']}").json()["properties"]["productIdentifier"] == pid
    assert get(sim, "/features/SM_Nowhere_20200103T170619_S1A_R117").status_code == 404


def test_download_is_a_georeferenced_soil_moisture_map_with_ranges(sim: SimulatorServer) -> None:
    pid = "SM_CentralItaly_20200103T170619_S1A_R117"
    feature = get(sim, f"/features/{pid}").json()
    href = next(li["href"] for li in feature["properties"]["links"] if li["rel"] == "download")
    whole = httpx.get(href, timeout=30)
    assert whole.status_code == 200
    assert whole.headers["Accept-Ranges"] == "bytes"
    data = whole.content
    part = httpx.get(href, headers={"Range": "bytes=100-"}, timeout=30)
    assert part.status_code == 206
    assert part.content == data[100:]
    assert part.headers["Content-Range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
    assert httpx.get(href, headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    with rasterio.open(io.BytesIO(data)) as src:
        assert src.crs.to_epsg() == 4326
        assert tuple(round(v, 6) for v in src.bounds) == tuple(feature["bbox"])
        assert src.nodata == 0
        values = src.read(1)
    start = int(datetime(2020, 1, 3, 17, 6, 19, tzinfo=UTC).timestamp())
    field = soil_moisture_field(tuple(feature["bbox"]), start)
    valid = ~np.isnan(field)
    assert np.array_equal(values == 0, ~valid)
    assert np.allclose(values[valid] * 0.2, field[valid], atol=0.1)
    assert any(r.range == "bytes=100-" and r.status == 206 for r in sim.requests)


def test_auth_token_and_protected_downloads() -> None:
    with SimulatorServer(GeneratedCatalogue(), download_auth=True) as sim:
        href = f"{sim.url}/features/SM_CentralItaly_20200103T170619_S1A_R117/download"
        assert httpx.get(href).status_code == 403
        assert httpx.get(sim.url + "/auth", auth=("admin@thisme.test", "wrong")).status_code == 401
        token = httpx.get(sim.url + "/auth", auth=("admin@thisme.test", "thisme")).json()["token"]
        assert token.count(".") == 1  # resto's rJWT has no header segment
        ok = httpx.get(href, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        assert ok.content[:2] in (b"II", b"MM")


def test_opensearch_description(sim: SimulatorServer) -> None:
    import xml.etree.ElementTree as ET

    response = get(sim, "/services/osdd/SoilMoisture")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/xml"
    root = ET.fromstring(response.content)  # noqa: S314 - our own server on loopback
    ns = {"os": "http://a9.com/-/spec/opensearch/1.1/"}
    assert root.findtext("os:ShortName", namespaces=ns) == "SoilMoisture"
    assert get(sim, "/services/osdd/Unknown").status_code == 404


@pytest.mark.parametrize("size", ["thisme", "1m", "fixtures"])
def test_page_rendering_equals_the_feature_documents(size: str) -> None:
    catalogue = GeneratedCatalogue(size=size)
    resto = Resto(catalogue, _Options())
    step = max(1, len(catalogue) // 3000)
    positions = np.arange(0, len(catalogue), step, dtype=np.int64)
    for base in ("http://127.0.0.1:5252", "http://localhost:80/api"):
        for with_sort in (True, False):
            rendered = resto.pages.features(positions, base, with_sort=with_sort)
            expected = [
                orjson.dumps(resto.feature(int(p), base, with_sort=with_sort)) for p in positions
            ]
            assert rendered == expected


def test_uuid5_text_matches_the_uuid_module() -> None:
    for name in ("SM_CentralItaly_20200103T170619_S1A_R117", "", "é#x"):
        assert uuid5_text(name) == str(uuid.uuid5(RESTO_NAMESPACE, name))
