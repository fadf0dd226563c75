"""Replay the recorded resto 5.0.0 requests against the simulator holding the same nine products.

Compared for every capture: HTTP status, keys and their order at every level, value types, link
rels and href shapes, error bodies, and the computable values (ids, order, hashtags, bbox,
centroid, bbox3857). Ingestion-time values (published, updated, sort_idx) are compared by type.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import RESTO5_CAPTURED
from thisme_stac.simulator import GeneratedCatalogue, SimulatorServer

RECORDED_BASE = "http://127.0.0.1:5252"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(GeneratedCatalogue(size="fixtures")) as server:
        yield server


def _captured(name: str) -> Any:
    return json.loads((RESTO5_CAPTURED / name).read_text())


def _structure(value: Any) -> Any:
    if isinstance(value, dict):
        return [(k, _structure(v)) for k, v in value.items()]
    if isinstance(value, list):
        return ["list", [_structure(v) for v in value[:1]]]
    return "number" if type(value) in (int, float) else type(value).__name__


def _href_shape(href: str) -> str:
    """Path without host, then the query keys in order (cursor digits are not compared)."""
    path, _, query = href.partition("?")
    keys = [part.split("=")[0] for part in query.split("&")]
    return re.sub(r"^https?://[^/]+", "", path) + "?" + "&".join(keys)


def _links(links: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(li["rel"], li.get("type", ""), _href_shape(li["href"])) for li in links]


def _compare_feature(ours: dict[str, Any], recorded: dict[str, Any]) -> None:
    assert _structure(ours) == _structure(recorded)
    assert ours["id"] == recorded["id"]
    assert ours["bbox"] == recorded["bbox"]
    assert ours["geometry"] == recorded["geometry"]
    mine, theirs = ours["properties"], recorded["properties"]
    for key in (
        "productIdentifier",
        "title",
        "description",
        "startDate",
        "completionDate",
        "platform",
        "instrument",
        "productType",
        "processingLevel",
        "hashtags",
        "likes",
        "comments",
        "status",
        "collection",
    ):
        assert mine[key] == theirs[key], key
    assert mine["centroid"] == pytest.approx(theirs["centroid"], abs=1e-3)
    ours_3857 = [float(v) for v in mine["bbox3857"].split(",")]
    theirs_3857 = [float(v) for v in theirs["bbox3857"].split(",")]
    assert ours_3857 == pytest.approx(theirs_3857, abs=1.0)
    assert _links(mine["links"]) == _links(theirs["links"])


def _compare_page(ours: dict[str, Any], recorded: dict[str, Any]) -> None:
    assert _structure(ours["properties"]) == _structure(recorded["properties"])
    for key in ("totalResults", "exactCount", "startIndex"):
        assert ours["properties"][key] == recorded["properties"][key], key

    def inputs(page: dict[str, Any]) -> dict[str, str]:
        echoed = page["properties"]["query"]["inputFilters"]
        return {k: "<cursor>" if k in ("lt", "gt") else v for k, v in echoed.items()}

    assert inputs(ours) == inputs(recorded)
    assert _links(ours["properties"]["links"]) == _links(recorded["properties"]["links"])
    assert [f["id"] for f in ours["features"]] == [f["id"] for f in recorded["features"]]
    for mine, theirs in zip(ours["features"], recorded["features"], strict=True):
        _compare_feature(mine, theirs)


def _get(sim: SimulatorServer, href: str) -> httpx.Response:
    return httpx.get(href.replace(RECORDED_BASE, sim.url), timeout=30)


def test_search_pages_by_cursor(sim: SimulatorServer) -> None:
    url = f"{sim.url}/collections/SoilMoisture/features?q=%23Central-Italy&limit=3"
    for name in ("search_page1.json", "search_page2.json", "search_page3_empty.json"):
        recorded = _captured(name)
        response = httpx.get(url, timeout=30)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/json"
        ours = response.json()
        _compare_page(ours, recorded)
        nxt = [li["href"] for li in ours["properties"]["links"] if li["rel"] == "next"]
        url = nxt[0] if nxt else ""
    assert url == ""


@pytest.mark.parametrize(
    ("name", "path"),
    [
        (
            "search_page2_by_page_param.json",
            "/collections/SoilMoisture/features?q=%23Central-Italy&limit=3&page=2",
        ),
        (
            "search_page3_empty_by_page_param.json",
            "/collections/SoilMoisture/features?q=%23Central-Italy&limit=3&page=3",
        ),
        (
            "search_thisme_urlq_on_features.json",
            "/features?q=%23Central-Italy&collection=SoilMoisture",
        ),
    ],
)
def test_other_searches(sim: SimulatorServer, name: str, path: str) -> None:
    response = httpx.get(sim.url + path, timeout=30)
    assert response.status_code == 200
    _compare_page(response.json(), _captured(name))


def test_single_feature(sim: SimulatorServer) -> None:
    recorded = _captured("feature_803d03a9.json")
    ours = httpx.get(f"{sim.url}/features/{recorded['id']}", timeout=30).json()
    _compare_feature(ours, recorded)


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("hello.json", "/"),
        ("collections.json", "/collections"),
        ("collection_SoilMoisture.json", "/collections/SoilMoisture"),
    ],
)
def test_documents(sim: SimulatorServer, name: str, path: str) -> None:
    ours = httpx.get(sim.url + path, timeout=30).json()
    recorded = _captured(name)
    assert _structure(ours) == _structure(recorded)
    if "statistics" in recorded:
        assert ours["statistics"] == recorded["statistics"]


@pytest.mark.parametrize(
    ("name", "path", "status", "headers"),
    [
        ("error_404_unknown_collection.json", "/collections/Unknown/features", 404, {}),
        ("error_400_limit.json", "/collections/SoilMoisture/features?limit=1000", 400, {}),
        ("error_400_offset.json", "/collections/SoilMoisture/features?page=100", 400, {}),
        (
            "error_400_date_pattern.json",
            "/collections/SoilMoisture/features?startDate=2020/01/01",
            400,
            {},
        ),
        (
            "error_401_bad_token.json",
            "/collections/SoilMoisture/features",
            401,
            {"Authorization": "Bearer invalid.token"},
        ),
    ],
)
def test_errors(
    sim: SimulatorServer, name: str, path: str, status: int, headers: dict[str, str]
) -> None:
    response = httpx.get(sim.url + path, headers=headers, timeout=30)
    assert response.status_code == status
    assert response.content == (RESTO5_CAPTURED / name).read_bytes().strip()


def test_response_headers_match_the_capture(sim: SimulatorServer) -> None:
    recorded = (RESTO5_CAPTURED / "search_page1.headers.txt").read_text().splitlines()
    names = {line.split(":")[0] for line in recorded[1:] if ":" in line}
    response = httpx.get(f"{sim.url}/collections/SoilMoisture/features?limit=3", timeout=30)
    for name in names - {"Transfer-Encoding", "Connection"}:
        assert name in response.headers, name
