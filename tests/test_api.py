"""The STAC API through real HTTP: pystac-client, bad input, paging, transactions, web behaviour."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import shapely
from pystac_client import Client, ConformanceClasses
from shapely.geometry import shape

from tests.apiserver import ApiServer, build_store, get, running_api

SITE = "Central-Italy"


@pytest.fixture(scope="module", params=["sqlite", "pgstac"])
def catalogue(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path | str, list[dict[str, Any]]]]:
    """The same items in each store; every test below runs against both."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("api") / "api.sqlite"
        yield path, build_store(path, step=3)
        return
    from tests.pgstac_db import temporary_database

    with temporary_database() as url:
        yield url, build_store(url, step=3)


@pytest.fixture(scope="module")
def items(catalogue: tuple[Path | str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return catalogue[1]


@pytest.fixture(scope="module")
def api(catalogue: tuple[Path | str, list[dict[str, Any]]]) -> Iterator[ApiServer]:
    with running_api(catalogue[0]) as server:
        yield server


def _ids(items: list[dict[str, Any]]) -> list[str]:
    return [i["id"] for i in items]


def _newest_first(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(items, key=lambda i: (i["properties"]["datetime"], i["id"]), reverse=True)


# --- pystac-client -----------------------------------------------------------------------------
def test_pystac_client_open_and_conformance(api: ApiServer) -> None:
    client = Client.open(api.url)
    assert client.id == "thisme"
    for cls in (
        ConformanceClasses.CORE,
        ConformanceClasses.COLLECTIONS,
        ConformanceClasses.FEATURES,
        ConformanceClasses.ITEM_SEARCH,
        ConformanceClasses.FILTER,
        ConformanceClasses.SORT,
        ConformanceClasses.FIELDS,
        ConformanceClasses.COLLECTION_SEARCH,
    ):
        assert client.conforms_to(cls), cls
    assert client.get_self_href() == api.url


def test_pystac_client_bbox_datetime_paging_and_matched(
    api: ApiServer, items: list[dict[str, Any]]
) -> None:
    client = Client.open(api.url)
    site_items = [i for i in items if i["properties"]["thisme:site"] == SITE]
    box = shape(site_items[0]["geometry"]).bounds
    search = client.search(
        collections=["SoilMoisture"],
        bbox=box,
        datetime="2019-01-01/2021-12-31",
        limit=20,
        max_items=70,
    )
    expected = _newest_first(
        [
            i
            for i in items
            if shape(i["geometry"]).intersects(shapely.box(*box))
            and "2019-01-01" <= i["properties"]["datetime"][:10] <= "2021-12-31"
        ]
    )
    assert len(expected) > 70, "the query must span more than three pages"
    got = list(search.items_as_dicts())
    assert _ids(got) == _ids(expected)[:70]
    assert search.matched() == len(expected)
    pages = list(
        client.search(bbox=box, datetime="2019-01-01/2021-12-31", limit=20, max_items=70).pages()
    )
    assert len(pages) >= 4


def test_pystac_client_intersects_and_sortby(api: ApiServer, items: list[dict[str, Any]]) -> None:
    client = Client.open(api.url)
    geom = shapely.box(12.0, 42.0, 13.0, 43.0)
    search = client.search(
        intersects=geom.__geo_interface__, sortby=["+datetime"], limit=50, max_items=200
    )
    expected = sorted(
        [i for i in items if shape(i["geometry"]).intersects(geom)],
        key=lambda i: (i["properties"]["datetime"], i["id"]),
    )
    assert expected
    assert _ids(list(search.items_as_dicts())) == _ids(expected)[:200]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_pystac_client_filter(api: ApiServer, items: list[dict[str, Any]], method: str) -> None:
    client = Client.open(api.url)
    if method == "GET":
        flt: Any = f"\"thisme:site\" = '{SITE}' AND \"sat:orbit_state\" = 'ascending'"
        lang = "cql2-text"
    else:
        flt = {
            "op": "and",
            "args": [
                {"op": "=", "args": [{"property": "thisme:site"}, SITE]},
                {"op": "=", "args": [{"property": "sat:orbit_state"}, "ascending"]},
            ],
        }
        lang = "cql2-json"
    search = client.search(method=method, filter=flt, filter_lang=lang, limit=100)
    expected = _newest_first(
        [
            i
            for i in items
            if i["properties"]["thisme:site"] == SITE
            and i["properties"]["sat:orbit_state"] == "ascending"
        ]
    )
    assert expected
    assert _ids(list(search.items_as_dicts())) == _ids(expected)
    assert search.matched() == len(expected)


def test_pystac_client_collection_and_items(api: ApiServer, items: list[dict[str, Any]]) -> None:
    client = Client.open(api.url)
    collection = client.get_collection("SoilMoisture")
    assert collection.id == "SoilMoisture"
    assert SITE in collection.summaries.lists["thisme:site"]
    first = next(collection.get_items())
    assert first.id == _newest_first(items)[0]["id"]
    item = collection.get_item(items[5]["id"])
    assert item is not None
    assert item.to_dict()["properties"] == items[5]["properties"]
    assert item.get_self_href() == f"{api.url}collections/SoilMoisture/items/{items[5]['id']}"
    assert [c.id for c in client.get_collections()] == ["SoilMoisture"]


def test_free_text_finds_a_site(api: ApiServer, items: list[dict[str, Any]]) -> None:
    expected = [i for i in items if i["properties"]["thisme:site"] == SITE]
    doc = get(api, f"/search?q={SITE}&limit=1000").json()
    assert doc["numberMatched"] == len(expected)
    assert sorted(f["id"] for f in doc["features"]) == sorted(_ids(expected))
    assert get(api, "/search?q=Atlantis").json()["numberMatched"] == 0


def _free_text(item: dict[str, Any]) -> str:
    props = item["properties"]
    return " | ".join(
        [*props.get("keywords", []), props.get("title", ""), props.get("description", "")]
    ).lower()


@pytest.mark.parametrize(
    ("q", "terms"),
    [
        ("ital", ["ital"]),  # a substring, not only whole words
        ("%23Central-Italy", ["central-italy"]),  # the THISME hashtag
        ("%22Central-Italy%22", ["central-italy"]),  # a quoted phrase
        ("cEnTrAl-ITALY", ["central-italy"]),  # case-insensitive
        ("Crete,ital", ["crete", "ital"]),  # several terms: any of them
        ("central italy", ["central italy"]),  # a space is a character like any other
        ("50%25", ["50%"]),  # LIKE wildcards are literal
        ("((", ["(("]),  # no query syntax to get wrong
    ],
)
def test_free_text_is_a_case_insensitive_substring_of_any_term(
    api: ApiServer, items: list[dict[str, Any]], q: str, terms: list[str]
) -> None:
    expected = _newest_first([i for i in items if any(t in _free_text(i) for t in terms)])
    doc = get(api, f"/search?q={q}&limit=200").json()
    assert doc["numberMatched"] == len(expected)
    assert _ids(doc["features"]) == _ids(expected)[:200]


def test_free_text_post_takes_a_list_of_terms(api: ApiServer, items: list[dict[str, Any]]) -> None:
    response = httpx.post(
        f"{api.url}search", json={"q": ["#Crete", '"central-italy"'], "limit": 500}, timeout=60
    )
    assert response.status_code == 200, response.text
    sites = {"Crete", "Central-Italy"}
    expected = _newest_first([i for i in items if i["properties"]["thisme:site"] in sites])
    assert len(expected) > 0
    doc = response.json()
    assert doc["numberMatched"] == len(expected)
    assert _ids(doc["features"]) == _ids(expected)[:500]


# --- brute-force reference ---------------------------------------------------------------------
def _random_body(rng: random.Random, sites: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = {"limit": rng.choice([5, 40, 150])}
    if rng.random() < 0.4:
        west, south = rng.uniform(-10, 36), rng.uniform(30, 50)
        body["bbox"] = [west, south, west + rng.uniform(0.1, 10), south + rng.uniform(0.1, 6)]
    if rng.random() < 0.4:
        year = rng.randrange(2016, 2025)
        body["datetime"] = f"{year}-0{rng.randrange(1, 9)}-01T00:00:00Z/{year + 1}-01-01T00:00:00Z"
    conditions = []
    if rng.random() < 0.5:
        conditions.append({"op": "=", "args": [{"property": "thisme:site"}, rng.choice(sites)]})
    if rng.random() < 0.3:
        state = rng.choice(["ascending", "descending"])
        conditions.append({"op": "=", "args": [{"property": "sat:orbit_state"}, state]})
    if rng.random() < 0.3:
        low = rng.randrange(1, 170)
        conditions.append(
            {"op": "between", "args": [{"property": "sat:relative_orbit"}, low, low + 40]}
        )
    if rng.random() < 0.2:
        lon, lat = rng.uniform(-8, 35), rng.uniform(31, 49)
        poly = shapely.box(lon, lat, lon + 3, lat + 2).__geo_interface__
        conditions.append({"op": "s_intersects", "args": [{"property": "geometry"}, poly]})
    if conditions:
        body["filter"] = (
            conditions[0]
            if len(conditions) == 1
            else {"op": rng.choice(["and", "or"]), "args": conditions}
        )
    if rng.random() < 0.3:
        body["sortby"] = [
            {"field": "properties.sat:relative_orbit", "direction": "asc"},
            {"field": "datetime", "direction": "desc"},
        ]
    return body


def _condition(item: dict[str, Any], cond: dict[str, Any]) -> bool:
    op, args = cond["op"], cond["args"]
    if op in ("and", "or"):
        results = [_condition(item, c) for c in args]
        return all(results) if op == "and" else any(results)
    if op == "s_intersects":
        return bool(_shape(item).intersects(shape(args[1])))
    value = item["properties"].get(args[0]["property"])
    if op == "=":
        return bool(value == args[1])
    return bool(args[1] <= value <= args[2])


_SHAPES: dict[str, Any] = {}


def _shape(item: dict[str, Any]) -> Any:
    key = item["id"]
    if key not in _SHAPES:
        _SHAPES[key] = shape(item["geometry"])
    return _SHAPES[key]


def _reference(items: list[dict[str, Any]], body: dict[str, Any]) -> list[str]:
    out = []
    box = shapely.box(*body["bbox"]) if "bbox" in body else None
    for item in items:
        if box is not None and not _shape(item).intersects(box):
            continue
        if "datetime" in body:
            start, end = body["datetime"].split("/")
            when = item["properties"]["datetime"]
            if not start.replace("T00:00:00Z", "") <= when[:10] < end[:10]:
                continue
        if "filter" in body and not _condition(item, body["filter"]):
            continue
        out.append(item)
    if "sortby" in body:
        out = sorted(out, key=lambda i: (i["properties"]["datetime"], i["id"]), reverse=True)
        out = sorted(out, key=lambda i: i["properties"]["sat:relative_orbit"])
    else:
        out = _newest_first(out)
    return _ids(out)


def test_search_equals_brute_force(api: ApiServer, items: list[dict[str, Any]]) -> None:
    sites = sorted({i["properties"]["thisme:site"] for i in items})
    rng = random.Random(20261125)
    with httpx.Client(base_url=api.url, timeout=30) as http:
        for _ in range(200):
            body = _random_body(rng, sites)
            expected = _reference(items, body)
            got: list[str] = []
            page = http.post("search", json=body)
            pages = 0
            while True:
                assert page.status_code == 200, (body, page.text)
                doc = page.json()
                assert doc["numberMatched"] == len(expected), body
                got += [f["id"] for f in doc["features"]]
                nxt = [link for link in doc["links"] if link["rel"] == "next"]
                pages += 1
                if not nxt or pages >= 3:
                    break
                page = http.post(nxt[0]["href"], json=nxt[0]["body"])
            assert got == expected[: len(got)], body
            if pages < 3 or not nxt:
                assert len(got) == len(expected), body


# --- paging and links --------------------------------------------------------------------------
def test_get_paging_has_no_next_on_last_page(api: ApiServer, items: list[dict[str, Any]]) -> None:
    expected = _ids(_newest_first([i for i in items if i["properties"]["thisme:site"] == SITE]))
    url: str | None = f"{api.url}search?filter=thisme:site='{SITE}'&limit=100"
    got: list[str] = []
    while url:
        doc = httpx.get(url, timeout=30).json()
        got += [f["id"] for f in doc["features"]]
        assert doc["numberReturned"] == len(doc["features"])
        nxt = [link["href"] for link in doc["links"] if link["rel"] == "next"]
        url = nxt[0] if nxt else None
    assert got == expected


def test_landing_links_follow_the_url_and_proxy_headers(api: ApiServer) -> None:
    doc = get(api, "/").json()
    rels = {link["rel"]: link for link in doc["links"]}
    assert rels["self"]["href"] == api.url
    assert rels["root"]["href"] == api.url
    searches = [link for link in doc["links"] if link["rel"] == "search"]
    assert {link["method"] for link in searches} == {"GET", "POST"}
    assert rels["service-doc"]["href"] == f"{api.url}api.html"
    forwarded = get(
        api,
        "/",
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "stac.example.org"},
    ).json()
    self_href = next(link["href"] for link in forwarded["links"] if link["rel"] == "self")
    assert self_href == "https://stac.example.org/"
    item = get(api, "/search?limit=1", headers={"Forwarded": "proto=https;host=thisme.fr"}).json()
    item_self = next(link["href"] for link in item["features"][0]["links"] if link["rel"] == "self")
    assert item_self.startswith("https://thisme.fr/collections/SoilMoisture/items/")


def test_root_path_is_in_every_link(catalogue: tuple[Path | str, list[dict[str, Any]]]) -> None:
    with running_api(catalogue[0], root_path="/stac") as server:
        doc = httpx.get(f"{server.url}stac/", timeout=30)
        assert doc.status_code == 200, doc.text
        hrefs = [link["href"] for link in doc.json()["links"]]
        assert all(h.startswith(f"{server.url}stac/") for h in hrefs), hrefs
        page = httpx.get(f"{server.url}stac/collections/SoilMoisture/items?limit=1", timeout=30)
        assert page.status_code == 200
        links = page.json()["features"][0]["links"]
        own = [link for link in links if link["rel"] in ("self", "parent", "collection", "root")]
        assert len(own) == 4
        assert all(link["href"].startswith(f"{server.url}stac/") for link in own), own


def test_cors_default_and_restricted(catalogue: tuple[Path | str, list[dict[str, Any]]]) -> None:
    with running_api(catalogue[0]) as server:
        preflight = httpx.options(
            f"{server.url}search",
            headers={
                "Origin": "https://radiantearth.github.io",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] in (
            "*",
            "https://radiantearth.github.io",
        )
    with running_api(catalogue[0], cors_origins=["https://thisme.fr"]) as server:
        allowed = get(server, "/", headers={"Origin": "https://thisme.fr"})
        assert allowed.headers.get("access-control-allow-origin") == "https://thisme.fr"
        other = get(server, "/", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_fields_keep_geojson_media_type(api: ApiServer) -> None:
    response = get(api, "/search?limit=2&fields=id,properties.thisme:site,-geometry")
    assert response.headers["content-type"] == "application/geo+json"
    feature = response.json()["features"][0]
    assert set(feature) == {"id", "properties"}
    assert set(feature["properties"]) == {"thisme:site"}
    default = get(api, "/search?limit=1&fields=").json()["features"][0]
    assert set(default) >= {"id", "geometry", "assets", "links"}
    assert set(default["properties"]) == {"datetime"}
    post = httpx.post(
        f"{api.url}search", json={"limit": 1, "fields": {"exclude": ["assets"]}}, timeout=30
    )
    assert post.headers["content-type"] == "application/geo+json"
    assert "assets" not in post.json()["features"][0]
    assert "properties" in post.json()["features"][0]


def test_queryables_list_real_properties(api: ApiServer) -> None:
    response = get(api, "/queryables")
    assert response.headers["content-type"] == "application/schema+json"
    props = response.json()["properties"]
    assert props["thisme:site"]["type"] == "string"
    assert props["sat:relative_orbit"]["type"] == "integer"
    assert props["sat:orbit_state"]["enum"] == ["ascending", "descending"]
    assert get(api, "/collections/SoilMoisture/queryables").status_code == 200
    assert get(api, "/collections/nope/queryables").status_code == 404


# --- bad input -----------------------------------------------------------------------------------
BAD_GETS = [
    ("/search?bbox=1,2,3", 400, "bbox"),
    ("/search?bbox=a,b,c,d", 400, "bbox"),
    ("/search?bbox=0,50,10,40", 400, "bbox"),
    ("/search?datetime=yesterday", 400, "datetime"),
    ("/search?datetime=2020-01-01/2019-01-01", 400, ""),
    ("/search?filter=site%20%3D", 400, "cql2"),
    ("/search?filter=%22thisme:site%22%20LIKE%205", 400, ""),
    ("/search?sortby=-nonsense", 400, "sort"),
    ("/search?limit=0", 400, "limit"),
    ("/search?limit=-3", 400, "limit"),
    ("/search?limit=ten", 400, "limit"),
    ("/search?token=forged", 400, "token"),
    ("/search?intersects=%7Bnot%20json", 400, "intersects"),
    ("/search?filter-lang=cql3&filter=id%3D%27x%27", 400, ""),
    ("/collections/nothing", 404, "nothing"),
    ("/collections/nothing/items", 404, "nothing"),
    ("/collections/SoilMoisture/items/nothing", 404, "nothing"),
    ("/collections/SoilMoisture/items?bbox=1,2", 400, "bbox"),
]


@pytest.mark.parametrize(("path", "status", "word"), BAD_GETS)
def test_bad_get_requests_are_json_errors(
    api: ApiServer, path: str, status: int, word: str
) -> None:
    response = get(api, path)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"code", "description"}
    assert word.lower() in body["description"].lower()


BAD_POSTS: list[Any] = [
    b"{not json",
    b"[1, 2, 3]",
    b'"a string"',
    {"limit": "many"},
    {"bbox": [1, 2, 3]},
    {"bbox": [0, 0, 1, 1], "intersects": {"type": "Point", "coordinates": [0, 0]}},
    {"intersects": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}},
    {"filter": {"op": "frobnicate", "args": []}},
    {"filter": {"op": "=", "args": [{"property": "x; DROP TABLE items"}, 1]}},
    {"filter": "thisme:site = 'x'"},
    {"sortby": [{"field": "nope", "direction": "asc"}]},
    {"sortby": [{"field": "datetime", "direction": "sideways"}]},
    {"datetime": "2020-13-45T00:00:00Z"},
    {"collections": "SoilMoisture"},
]


@pytest.mark.parametrize("body", BAD_POSTS)
def test_bad_post_search_is_400_json(api: ApiServer, body: Any) -> None:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    response = httpx.post(
        f"{api.url}search",
        content=content,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert set(response.json()) >= {"code", "description"}


def test_limit_above_maximum_is_served_as_the_maximum(api: ApiServer) -> None:
    doc = get(api, "/search?limit=100000").json()
    assert doc["numberReturned"] == api.settings.max_limit
    assert any(link["rel"] == "next" for link in doc["links"])


def test_injection_attempts_execute_nothing(api: ApiServer, items: list[dict[str, Any]]) -> None:
    attempts = [
        "/search?filter=%22thisme:site%22%3D%27%27%27;%20DROP%20TABLE%20items;--%27",
        "/search?ids=a%27)%20OR%20(%271%27%3D%271",
        "/search?q=%27%20OR%201%3D1%20--",
        "/search?sortby=datetime;DROP%20TABLE%20items",
    ]
    for path in attempts:
        response = get(api, path)
        assert response.status_code in (200, 400), (path, response.text)
        if response.status_code == 200:
            assert response.json()["numberMatched"] == 0, path
    assert get(api, "/search?limit=1").json()["numberMatched"] == len(items)


# --- transactions --------------------------------------------------------------------------------
def test_transactions_absent_without_key(api: ApiServer, items: list[dict[str, Any]]) -> None:
    response = httpx.post(f"{api.url}collections/SoilMoisture/items", json=items[0], timeout=30)
    assert response.status_code == 405
    assert "transaction" not in " ".join(get(api, "/conformance").json()["conformsTo"])


def test_transactions_need_the_key(tmp_path: Path, items: list[dict[str, Any]]) -> None:
    path = tmp_path / "tx.sqlite"
    build_store(path, step=400)
    key = "s3cret-key-for-tests"
    new = orjson.loads(orjson.dumps(items[0]))
    new["id"] = "SM_TEST_ITEM"
    with running_api(path, api_key=key) as server:
        url = f"{server.url}collections/SoilMoisture/items"
        assert httpx.post(url, json=new).status_code == 401
        assert httpx.post(url, json=new, headers={"X-API-Key": "wrong"}).status_code == 403
        created = httpx.post(url, json=new, headers={"X-API-Key": key})
        assert created.status_code == 201, created.text
        assert httpx.post(url, json=new, headers={"X-API-Key": key}).status_code == 409
        assert get(server, f"/collections/SoilMoisture/items/{new['id']}").status_code == 200
        found = get(server, "/search?ids=SM_TEST_ITEM").json()
        assert found["numberMatched"] == 1

        patched = httpx.patch(
            f"{url}/{new['id']}",
            json={"properties": {"thisme:note": "checked"}},
            headers={
                "Authorization": f"Bearer {key}",
                "Content-Type": "application/merge-patch+json",
            },
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["properties"]["thisme:note"] == "checked"
        assert patched.json()["properties"]["datetime"] == new["properties"]["datetime"]

        new["properties"]["thisme:note"] = "replaced"
        put = httpx.put(f"{url}/{new['id']}", json=new, headers={"X-API-Key": key})
        assert put.status_code == 200, put.text
        assert put.json()["properties"]["thisme:note"] == "replaced"

        assert httpx.delete(f"{url}/{new['id']}").status_code == 401
        assert httpx.delete(f"{url}/{new['id']}", headers={"X-API-Key": key}).status_code == 204
        assert get(server, f"/collections/SoilMoisture/items/{new['id']}").status_code == 404
        assert httpx.delete(f"{url}/{new['id']}", headers={"X-API-Key": key}).status_code == 404


# --- command line --------------------------------------------------------------------------------
def test_serve_command_serves_and_fails_cleanly(
    catalogue: tuple[Path | str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    import subprocess
    import sys
    import time

    missing = subprocess.run(
        [sys.executable, "-m", "thisme_stac", "serve", "--store", str(tmp_path / "none.sqlite")],
        capture_output=True,
        timeout=60,
    )
    assert missing.returncode == 1
    assert missing.stderr.decode().strip().splitlines() == [
        f"error: no store at {tmp_path / 'none.sqlite'}"
    ]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "thisme_stac",
            "serve",
            "--store",
            str(catalogue[0]),
            "--port",
            str(port),
        ],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                landing = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert landing.status_code == 200
        assert landing.json()["id"] == "thisme"
    finally:
        process.terminate()
        _, err = process.communicate(timeout=20)
    assert f"at http://localhost:{port}/" in err.decode()
    assert "Traceback" not in err.decode()
