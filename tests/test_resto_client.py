"""RestoClient against recorded resto responses (scripted server) and the simulator."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import orjson
import pytest
from pydantic import SecretStr

from tests.conftest import RESTO2, RESTO5_CAPTURED
from tests.restoserver import Reply, ScriptedServer, scripted_server
from thisme_stac.errors import RestoError
from thisme_stac.resto.client import RestoClient, redact, token_expiry
from thisme_stac.resto.query import parse_urlq
from thisme_stac.simulator import GeneratedCatalogue, SimulatorServer

SEED = "q=%23Central-Italy&collection=SoilMoisture"
P1 = "/collections/SoilMoisture/features?q=%23Central-Italy&limit=3"


def _captured(name: str) -> bytes:
    return (RESTO5_CAPTURED / name).read_bytes()


def _serve_captured_pages(server: ScriptedServer) -> None:
    page1 = json.loads(_captured("search_page1.json"))
    page2 = json.loads(_captured("search_page2.json"))
    next1 = page1["properties"]["links"][-1]["href"].removeprefix("http://127.0.0.1:5252")
    next2 = page2["properties"]["links"][-1]["href"].removeprefix("http://127.0.0.1:5252")
    server.serve_fixture(P1, _captured("search_page1.json"))
    server.serve_fixture(next1, _captured("search_page2.json"))
    server.serve_fixture(next2, _captured("search_page3_empty.json"))


def _ids(name: str) -> list[str]:
    return [f["id"] for f in json.loads(_captured(name))["features"]]


def test_follows_next_links_to_the_empty_page() -> None:
    with scripted_server() as server, RestoClient(server.url) as client:
        _serve_captured_pages(server)
        pages = list(client.search_pages(parse_urlq(SEED), limit=3))
    assert [len(p.features) for p in pages] == [3, 3, 0]
    got = [f["id"] for p in pages for f in p.features]
    assert got == _ids("search_page1.json") + _ids("search_page2.json")
    assert pages[0].total_results == 6
    assert pages[-1].next_url is None
    assert not any("page=" in path for path, _ in server.log)


def test_urlq_on_features_route_and_short_page_stop() -> None:
    with scripted_server() as server, RestoClient(server.url) as client:
        server.serve_fixture(
            "/features?q=%23Central-Italy&limit=20",
            _captured("search_thisme_urlq_on_features.json"),
        )
        pages = list(client.search_pages(parse_urlq("q=%23Central-Italy"), limit=20))
    assert len(pages) == 1
    assert len(pages[0].features) == 6


def test_resto2_pages_stop_on_the_empty_page_despite_total_results() -> None:
    pages_in = [
        json.loads((RESTO2 / f).read_bytes())
        for f in ("search_page1.json", "search_page2.json", "search_page3_empty.json")
    ]
    base = "https://thisme.example.invalid/resto"
    with scripted_server() as server:
        first = "/api/collections/SoilMoisture/search.json?q=%23Central-Italy&maxRecords=3"
        server.serve_fixture(first, json.dumps(pages_in[0]).replace(base, server.url).encode())
        for page, nxt in zip(pages_in[1:], pages_in[:-1], strict=True):
            href = next(li["href"] for li in nxt["properties"]["links"] if li["rel"] == "next")
            path = href.removeprefix(base)
            server.serve_fixture(path, json.dumps(page).replace(base, server.url).encode())
        with RestoClient(server.url, flavour="2") as client:
            pages = list(client.search_pages(parse_urlq(SEED), limit=3))
    assert [p.flavour for p in pages] == ["2", "2", "2"]
    assert sum(len(p.features) for p in pages) == 6
    assert pages[-1].features == []


def test_resto6_stac_shape() -> None:
    items = [
        {
            "type": "Feature",
            "id": f"SM_X_{n}",
            "stac_version": "1.0.0",
            "properties": {"productIdentifier": f"SM_X_{n}"},
        }
        for n in range(3)
    ]
    with scripted_server() as server:
        p2 = "/collections/SoilMoisture/items?next=abc"
        page1 = {
            "type": "FeatureCollection",
            "numberMatched": 4,
            "features": items[:2],
            "links": [{"rel": "next", "href": server.url + p2}],
        }
        page2 = {
            "type": "FeatureCollection",
            "numberMatched": 4,
            "features": [items[1], items[2]],
            "links": [],
        }
        server.serve_fixture("/collections/SoilMoisture/items?limit=2", orjson.dumps(page1))
        server.serve_fixture(p2, orjson.dumps(page2))
        with RestoClient(server.url, flavour="6") as client:
            pages = list(client.search_pages(parse_urlq("collection=SoilMoisture"), limit=2))
    assert [p.flavour for p in pages] == ["6", "6"]
    assert [f["id"] for p in pages for f in p.features] == ["SM_X_0", "SM_X_1", "SM_X_2"]
    assert pages[1].duplicates == 1


def test_retries_transient_failures() -> None:
    truncated = _captured("search_page1.json")[:200]
    with scripted_server() as server, RestoClient(server.url, backoff=0.01) as client:
        _serve_captured_pages(server)
        server.fail_next(
            P1,
            Reply(503, b"<html>busy</html>"),
            Reply(429, b"{}", {"Retry-After": "1"}),
            Reply(drop=True),
            Reply(200, truncated),
        )
        started = time.monotonic()
        pages = list(client.search_pages(parse_urlq(SEED), limit=3))
        elapsed = time.monotonic() - started
    assert sum(len(p.features) for p in pages) == 6
    assert elapsed >= 1.0, "Retry-After was not honoured"
    assert sum(1 for path, _ in server.log if path == P1) == 5


def test_gives_up_with_one_line_errors() -> None:
    with scripted_server() as server:
        server.fail_next(P1, *[Reply(503, b"oops")] * 3)
        with (
            RestoClient(server.url, retries=3, backoff=0.01) as client,
            pytest.raises(RestoError, match="503") as err,
        ):
            list(client.search_pages(parse_urlq(SEED), limit=3))
        assert "\n" not in str(err.value)
        server.fail_next(P1, Reply(400, _captured("error_400_limit.json")))
        with RestoClient(server.url) as client, pytest.raises(RestoError) as err:
            list(client.search_pages(parse_urlq(SEED), limit=3))
        assert "must be lower than 501" in str(err.value)
        assert err.value.status == 400
        server.fail_next(P1, *[Reply(200, b"<html>proxy</html>")] * 2)
        with (
            RestoClient(server.url, retries=2, backoff=0.01) as client,
            pytest.raises(RestoError, match="non-JSON"),
        ):
            list(client.search_pages(parse_urlq(SEED), limit=3))


def test_unknown_collection_and_unreachable_server() -> None:
    with SimulatorServer(GeneratedCatalogue()) as sim, RestoClient(sim.url) as client:
        with pytest.raises(RestoError, match="unknown collection 'Nope'"):
            client.describe_collection("Nope")
        url = sim.url
    with (
        RestoClient(url, retries=2, backoff=0.01) as client,
        pytest.raises(RestoError, match=f"cannot reach resto at {url}"),
    ):
        client.hello()


def test_token_auth_refresh_and_no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    password = "s3cret-Pa55word"
    caplog.set_level(logging.DEBUG)
    with SimulatorServer(
        GeneratedCatalogue(), users={"u@thisme.test": password}, token_lifetime=2
    ) as sim:
        with RestoClient(sim.url, username="u@thisme.test", password=SecretStr(password)) as client:
            headers = client.auth_headers()
            token = headers["Authorization"].removeprefix("Bearer ")
            assert token_expiry(token) is not None
            time.sleep(2.2)  # the token expires; the next call refreshes it
            pages = list(client.search_pages(parse_urlq(SEED), limit=500))
            assert sum(len(p.features) for p in pages) > 500
            assert repr(client).count(password) == 0
        with (
            RestoClient(sim.url, token=SecretStr("bad.token")) as client,
            pytest.raises(RestoError, match="401") as err,
        ):
            client.hello()
        auth_calls = [r for r in sim.requests if r.path == "/auth"]
    assert len(auth_calls) >= 2
    text = caplog.text + str(err.value)
    assert password not in text
    assert token not in text


def test_redact_hides_tokens() -> None:
    assert "abc" not in redact("http://u:p@h:1/x?_bearer=abc&q=%23A")
    assert redact("http://u:p@h:1/x?q=1").startswith("http://h:1/x")


def test_page_size_bounds() -> None:
    with RestoClient("http://127.0.0.1:9") as client, pytest.raises(RestoError, match=r"1\.\.500"):
        next(client.search_pages(parse_urlq(SEED), limit=1000))


def test_rejects_non_http_base() -> None:
    with pytest.raises(RestoError, match="http"):
        RestoClient(str(Path("/tmp")))
