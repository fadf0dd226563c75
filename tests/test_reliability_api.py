"""Reliability of the STAC API: load, reads during a harvest, hostile input, secrets.

Every test here is a trial recorded for ``docs/reliability.md`` (``tests.reliability.record``),
against a real uvicorn process on 127.0.0.1 over a real store (SQLite, and pgstac where the
store matters).

"No torn page" for keyset paging, as checked while a harvest writes to the store:

* every page is whole: ``numberReturned == len(features)``, each feature a valid STAC item;
* a walk (first page, then its ``next`` links) is strictly ordered by the sort key, so it holds
  no id twice;
* it holds every item that was stored before its first page was asked (nothing skipped) and
  nothing that was not stored after its last page came back (nothing invented). Items written
  during the walk appear when their key lies ahead of the cursor, and only then.
"""

from __future__ import annotations

import math
import os
import random
import re
import select
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.apiserver import ApiServer, build_store, running_api
from tests.reliability import record
from thisme_stac.validate import validation_errors

pytestmark = pytest.mark.reliability

COLLECTION = "SoilMoisture"


@pytest.fixture(scope="module", params=["sqlite", "pgstac"])
def catalogue(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    """(store kind, store location, items): the same items in each store."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("reliability") / "api.sqlite"
        yield "sqlite", str(path), build_store(path, step=10)
        return
    from tests.pgstac_db import temporary_database

    with temporary_database() as url:
        yield "pgstac", url, build_store(url, step=10)


@pytest.fixture(scope="module")
def api(catalogue: tuple[str, str, list[dict[str, Any]]]) -> Iterator[ApiServer]:
    with running_api(catalogue[1]) as server:
        yield server


def _responsive(server: ApiServer) -> bool:
    """A normal request is answered right after a hostile one."""
    try:
        search = httpx.get(f"{server.url}search", params={"limit": 1}, timeout=30)
    except httpx.HTTPError:
        return False
    return search.status_code == 200 and search.json()["numberReturned"] == 1


def _is_json_error(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and {"code", "description"} <= set(body)


# --- load ---------------------------------------------------------------------------------------
def test_load_mixed_queries_without_errors(
    api: ApiServer, catalogue: tuple[str, str, list[dict[str, Any]]]
) -> None:
    """6 s at concurrency 16 on the mix of benchmarks/load.py (the benchmark runs it longer)."""
    from benchmarks.load import measure

    assert api.process is not None
    figures = measure(api.url, api.process.pid, seconds=6, concurrency=16)
    assert figures["requests"] > 50, figures
    assert figures["errors"] == 0, figures["error_examples"]
    assert all(kind["requests"] > 0 for kind in figures["kinds"].values()), figures
    record(
        "api",
        f"load: mixed queries, 6 s at concurrency 16 ({catalogue[0]})",
        runs=figures["requests"],
        errors=figures["errors"],
        requests_per_s=figures["requests_per_s"],
        p50_ms=figures["p50_ms"],
        p99_ms=figures["p99_ms"],
        server_peak_rss_mb=figures["server_peak_rss_mb"],
    )


# --- injection ----------------------------------------------------------------------------------
DROP = "'; DROP TABLE items; --"
INJECTION_GETS = [
    f"/search?filter=\"thisme:site\" = '{DROP}'",
    "/search?filter=\"thisme:site\" = '' OR 1=1 --'",
    "/search?filter=\"thisme:site\" = 'x' /* */ OR \"thisme:site\" LIKE '%'",
    "/search?filter=\"thisme:site\\\"') OR 1=1 --\" = 'x'",
    '/search?filter="x; DELETE FROM items" = 1',
    "/search?filter=\"thisme:site\" = 'x' UNION SELECT * FROM items",
    "/search?filter=\"thisme:site\" = 'x'; SELECT pg_sleep(5)",
    "/search?filter=\"thisme:site\" = 'x\u2019 OR 1=1'",
    "/search?filter=\"thisme:site\" = 'x%00'' OR 1=1 --'",
    '/search?filter={"op":"=","args":[{"property":"thisme:site"},"x\' OR \'1\'=\'1"]}'
    "&filter-lang=cql2-json",
    "/search?filter=sqlite_version() = 1",
    "/search?filter=\"thisme:site\" LIKE '%' ESCAPE '' OR 1=1",
    f"/search?ids=a{DROP}",
    "/search?ids=a') OR ('1'='1",
    f"/search?collections={DROP}",
    "/search?q=' OR 1=1 --",
    "/search?q=%') OR 1=1 --",
    "/search?q=\\' OR 1=1 --",
    "/search?sortby=datetime;DROP TABLE items",
    '/search?sortby=-properties.x") DESC; DROP TABLE items; --',
    "/search?fields=properties.x'); DROP TABLE items; --",
    f"/search?datetime=2020-01-01T00:00:00Z{DROP}",
    "/search?bbox=0,0,1,1);DROP TABLE items;--",
    f"/search?token={DROP}",
    "/search?token=WyJ4IiwgWyInOyBEUk9QIFRBQkxFIGl0ZW1zOyAtLSJdXQ",
    f"/collections/SoilMoisture{DROP}",
    f"/collections/SoilMoisture/items/x{DROP}",
    f"/collections/SoilMoisture/items?filter=id = '{DROP}'",
    f"/collections/{DROP}/items",
]
INJECTION_POSTS: list[dict[str, Any]] = [
    {"filter": {"op": "=", "args": [{"property": "thisme:site"}, DROP]}},
    {"filter": {"op": "=", "args": [{"property": f"thisme:site{DROP}"}, "x"]}},
    {"filter": {"op": f"={DROP}", "args": [{"property": "thisme:site"}, "x"]}},
    {"filter": {"op": "like", "args": [{"property": "thisme:site"}, "%' OR '1'='1"]}},
    {"filter": {"op": "in", "args": [{"property": "id"}, [DROP, "x') OR ('1'='1"]]}},
    {"filter": {"op": "s_intersects", "args": [{"property": "geometry"}, DROP]}},
    {"filter": {"op": "t_intersects", "args": [{"property": "datetime"}, {"timestamp": DROP}]}},
    {"filter": {"op": "=", "args": [{"op": "casei", "args": [{"property": DROP}]}, "x"]}},
    {"ids": [DROP], "collections": [DROP]},
    {"q": [DROP, "' OR 1=1 --"]},
    {"sortby": [{"field": f"datetime{DROP}", "direction": "asc"}]},
    {"fields": {"include": [f"properties.x{DROP}"]}},
    {"token": DROP},
]


def _store_intact(kind: str, location: str, count: int) -> bool:
    """The store still has its tables and every item, read outside the API."""
    if kind == "sqlite":
        with sqlite3.connect(f"file:{location}?mode=ro", uri=True) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            items = conn.execute("SELECT count(*) FROM items").fetchone()[0]
        return {"items", "collections"} <= tables and items == count
    import psycopg

    with psycopg.connect(location) as conn:
        row = conn.execute("SELECT count(*) FROM pgstac.items").fetchone()
    return row is not None and row[0] == count


def test_sql_and_cql2_injection_executes_nothing(
    api: ApiServer, catalogue: tuple[str, str, list[dict[str, Any]]]
) -> None:
    kind, location, items = catalogue
    unexpected: list[str] = []
    with httpx.Client(base_url=api.url, timeout=30) as http:
        answers = [(path, http.get(path)) for path in INJECTION_GETS]
        answers += [
            (orjson.dumps(b).decode(), http.post("search", json=b)) for b in INJECTION_POSTS
        ]
        for what, response in answers:
            if response.status_code in (400, 404):
                ok = _is_json_error(response)
            elif response.status_code != 200 or "features" not in response.json():
                ok = False
            elif "fields" in what:  # a property of that name is just not there
                ok = all(f.get("properties") == {} for f in response.json()["features"])
            else:
                ok = response.json()["numberReturned"] == 0
            if not ok:
                unexpected.append(f"{what} -> {response.status_code} {response.text[:200]}")
        matched = http.get("search", params={"limit": 1}).json()["numberMatched"]
    assert not unexpected, "\n".join(unexpected)
    assert matched == len(items)
    assert _store_intact(kind, location, len(items))
    record(
        "input",
        f"SQL / CQL2 injection attempts ({kind})",
        runs=len(answers),
        lost=len(items) - matched,
        errors=len(unexpected),
    )


# --- bboxes and limits --------------------------------------------------------------------------
#: (GET path or POST body, expected status). NaN / Infinity are sent as the literals that
#: Python's json module (FastAPI's parser) accepts.
EXTREMES: list[tuple[str | bytes, int]] = [
    ("/search?bbox=-200,0,10,10", 400),
    ("/search?bbox=0,-91,10,10", 400),
    ("/search?bbox=0,10,10,0", 400),
    ("/search?bbox=nan,0,10,10", 400),
    ("/search?bbox=inf,0,10,10", 400),
    ("/search?bbox=1e400,0,10,10", 400),
    ("/search?bbox=0,0,10", 400),
    ("/search?bbox=0,0,0,10,10,10,10", 400),
    ("/search?bbox=-180,-90,180,90", 200),
    ("/search?bbox=170,-10,-170,10", 200),
    ("/search?bbox=0,0,-1000,10,10,1000", 200),
    ("/search?limit=99999999999999999999999999999999", 200),
    ("/search?limit=1e400", 400),
    ("/search?limit=-1", 400),
    ("/collections?limit=99999999999999999999", 200),
    ("/collections?offset=99999999999999999999", 200),
    (b'{"bbox": [NaN, 0, 10, 10]}', 400),
    (b'{"bbox": [Infinity, 0, 10, 10]}', 400),
    (b'{"bbox": [-Infinity, 0, 10, 10]}', 400),
    (b'{"bbox": [1e400, 0, 10, 10]}', 400),
    (b'{"bbox": [-181, 0, 10, 10]}', 400),
    (b'{"bbox": [0, 10, 10, 0]}', 400),
    (b'{"bbox": [0, 0, 10, 10, 20]}', 400),
    (b'{"bbox": [0, 0, 10, 10, 10, 0]}', 400),
    (b'{"bbox": ["0", "0", "a", "b"]}', 400),
    (b'{"bbox": [0, 0, 0, 10, 10, 10]}', 200),
    (b'{"limit": 99999999999999999999999999999999}', 200),
    (b'{"limit": 1e400}', 400),
    (b'{"limit": NaN}', 400),
    (b'{"limit": 0}', 400),
    (b'{"limit": 2.5}', 400),
    (b'{"datetime": "99999-01-01T00:00:00Z/.."}', 400),
    (b'{"datetime": "0000-01-01T00:00:00Z/.."}', 400),
]


def _send(http: httpx.Client, request: str | bytes) -> httpx.Response:
    if isinstance(request, str):
        return http.get(request)
    return http.post("search", content=request, headers={"Content-Type": "application/json"})


def test_huge_limits_and_bboxes(
    api: ApiServer, catalogue: tuple[str, str, list[dict[str, Any]]]
) -> None:
    wrong: list[str] = []
    with httpx.Client(base_url=api.url, timeout=60) as http:
        for request, status in EXTREMES:
            response = _send(http, request)
            ok = response.status_code == status
            if status == 400:
                ok = ok and _is_json_error(response)
            elif "features" in response.json():
                body = response.json()
                ok = ok and body["numberReturned"] == len(body["features"])
                ok = ok and body["numberReturned"] <= api.settings.max_limit
            if not ok:
                wrong.append(f"{request!r} -> {response.status_code} {response.text[:200]}")
    assert not wrong, "\n".join(wrong)
    assert _responsive(api)
    record(
        "input",
        f"huge limits, out-of-range / inverted / 3D / NaN / Infinity bboxes ({catalogue[0]})",
        runs=len(EXTREMES),
        errors=len(wrong),
    )


# --- deep nesting -------------------------------------------------------------------------------
def _nested_not(depth: int) -> str:
    leaf = '{"op":"=","args":[{"property":"thisme:site"},"x"]}'
    return '{"op":"not","args":[' * depth + leaf + "]}" * depth


def _nested_and(depth: int) -> str:
    leaf = '{"op":"=","args":[{"property":"thisme:site"},"x"]}'
    return '{"op":"and","args":[' * depth + leaf + ("," + leaf + "]}") * depth


SITE_EQ = "\"thisme:site\" = 'x'"
#: (name, GET path or POST body): each must be a 400 JSON error (or 413/414 past the limits).
NESTED: list[tuple[str, str | bytes]] = [
    ("body: 100,000 nested arrays", b'{"limit": 1, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    (
        "body: 100,000 nested objects",
        b'{"limit": 1, "x": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_000 + b"}",
    ),
    ("body: 100,000 nested arrays as bbox", b'{"bbox": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    ("cql2-json: 100 nested not", f'{{"filter": {_nested_not(100)}}}'.encode()),
    ("cql2-json: 900 nested not", f'{{"filter": {_nested_not(900)}}}'.encode()),
    ("cql2-json: 100,000 nested not", f'{{"filter": {_nested_not(100_000)}}}'.encode()),
    ("cql2-json: 50,000 nested and", f'{{"filter": {_nested_and(50_000)}}}'.encode()),
    (
        "cql2-json: and of 20,000 terms",
        orjson.dumps({"filter": {"op": "and", "args": [orjson.loads(_nested_not(0))] * 20_000}}),
    ),
    (
        "cql2-json: in with 20,000 values",
        orjson.dumps({"filter": {"op": "in", "args": [{"property": "id"}, ["x"] * 20_000]}}),
    ),
    (
        "cql2-json: 200 nested casei",
        (
            '{"filter": {"op": "=", "args": ['
            + '{"op": "casei", "args": [' * 200
            + '{"property": "id"}'
            + "]}" * 200
            + ', "x"]}}'
        ).encode(),
    ),
    (
        "cql2-json GET: 500 nested not",
        f"/search?filter-lang=cql2-json&filter={_nested_not(500)}",
    ),
    ("cql2-text: 5,000 nested parentheses", "/search?filter=" + "(" * 5000 + SITE_EQ + ")" * 5000),
    ("cql2-text: 3,000 nested NOT (", "/search?filter=" + "NOT (" * 3000 + SITE_EQ + ")" * 3000),
    ("cql2-text: 5,000 chained NOT", "/search?filter=" + "NOT " * 5000 + SITE_EQ),
    ("cql2-text: 1,500 AND terms", "/search?filter=" + " AND ".join(["id='x'"] * 1500)),
    (
        "cql2-text: 10,000 unary minus",
        '/search?filter="sat:relative_orbit" = ' + "-" * 10_000 + "1",
    ),
    ("q: 5,000 terms", "/search?q=" + ",".join(f"t{n}" for n in range(5000))),
    ("ids: 20,000 values", orjson.dumps({"ids": [f"x{n}" for n in range(20_000)]})),
    ("collections: 20,000 values", orjson.dumps({"collections": [f"c{n}" for n in range(20_000)]})),
]


@pytest.mark.parametrize(("name", "request_"), NESTED, ids=[n for n, _ in NESTED])
def test_deeply_nested_and_oversized_queries_are_400(
    api: ApiServer, catalogue: tuple[str, str, list[dict[str, Any]]], name: str, request_: Any
) -> None:
    with httpx.Client(base_url=api.url, timeout=60) as http:
        response = _send(http, request_)
    assert response.status_code in (400, 413, 414), (name, response.status_code, response.text)
    assert _is_json_error(response), response.text
    assert _responsive(api)
    record(
        "input",
        f"deeply nested or oversized queries ({catalogue[0]})",
        runs=1,
        status=response.status_code,
        case=name,
    )


# --- geometries ---------------------------------------------------------------------------------
def _circle(vertices: int) -> list[list[float]]:
    ring = [
        [10 + math.cos(2 * math.pi * n / vertices), 45 + math.sin(2 * math.pi * n / vertices)]
        for n in range(vertices)
    ]
    return [*ring, ring[0]]


BAD_GEOMETRIES: list[tuple[str, bytes, tuple[int, ...]]] = [
    (
        "unclosed ring",
        orjson.dumps({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}),
        (400,),
    ),
    (
        "self-intersecting ring (bow tie)",
        orjson.dumps(
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
        ),
        (400,),
    ),
    (
        "ring of 2 points",
        orjson.dumps({"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}),
        (400,),
    ),
    (
        "polygon nested one level too shallow",
        orjson.dumps({"type": "Polygon", "coordinates": [[0, 0], [1, 0], [1, 1], [0, 0]]}),
        (400,),
    ),
    (
        "polygon nested one level too deep",
        orjson.dumps({"type": "Polygon", "coordinates": [[[[0, 0], [1, 0], [1, 1], [0, 0]]]]}),
        (400,),
    ),
    ("coordinates a number", b'{"type": "Polygon", "coordinates": 7}', (400,)),
    ("coordinates missing", b'{"type": "Polygon"}', (400,)),
    ("empty point", b'{"type": "Point", "coordinates": []}', (400,)),
    ("point of 5 numbers", b'{"type": "Point", "coordinates": [1, 2, 3, 4, 5]}', (400,)),
    ("unknown type", b'{"type": "Circle", "coordinates": [1, 2]}', (400,)),
    ("NaN coordinate", b'{"type": "Point", "coordinates": [NaN, 45]}', (400,)),
    ("Infinity coordinate", b'{"type": "Point", "coordinates": [Infinity, 45]}', (400,)),
    (
        "NaN in a ring",
        b'{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [NaN, 1], [0, 0]]]}',
        (400,),
    ),
    (
        "1,000,000 vertices (over the body limit)",
        orjson.dumps({"type": "Polygon", "coordinates": [_circle(1_000_000)]}),
        (413,),
    ),
]


@pytest.mark.parametrize(
    ("name", "geometry", "statuses"), BAD_GEOMETRIES, ids=[g[0] for g in BAD_GEOMETRIES]
)
def test_invalid_intersects_geometries_are_refused(
    api: ApiServer,
    catalogue: tuple[str, str, list[dict[str, Any]]],
    name: str,
    geometry: bytes,
    statuses: tuple[int, ...],
) -> None:
    body = b'{"intersects": ' + geometry + b"}"
    with httpx.Client(base_url=api.url, timeout=60) as http:
        post = _send(http, body)
        bad_filter = b'{"filter": {"op": "s_intersects", "args": [{"property": "geometry"}, '
        in_filter = _send(http, bad_filter + geometry + b"]}}")
    for response in (post, in_filter):
        assert response.status_code in statuses, (name, response.status_code, response.text)
        assert _is_json_error(response), response.text
    assert _responsive(api)
    record(
        "input",
        f"invalid geometries in intersects and in s_intersects ({catalogue[0]})",
        runs=2,
        status=post.status_code,
        case=name,
    )


def test_large_valid_geometry_is_answered(api: ApiServer) -> None:
    """100,000 vertices fit in the body limit: a real answer, then the server goes on."""
    body = orjson.dumps({"intersects": {"type": "Polygon", "coordinates": [_circle(100_000)]}})
    assert len(body) < api.settings.max_body_bytes
    with httpx.Client(base_url=api.url, timeout=120) as http:
        response = _send(http, body)
    assert response.status_code == 200, response.text
    assert _responsive(api)


# --- sizes of bodies, targets and headers -------------------------------------------------------
def _exchange(
    port: int, head: bytes, body: Iterable[bytes] = (), timeout: float = 30
) -> tuple[int, bytes, int]:
    """Send ``head`` then ``body`` chunks on a raw socket, stopping as soon as the server answers
    (or stops reading). Returns (status, response body, body bytes sent)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        sock.settimeout(2)
        for chunk in body:
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(chunk)
            except (TimeoutError, BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        sock.settimeout(timeout)
        data = b""
        while True:
            try:
                part = sock.recv(1 << 16)
            except ConnectionResetError:
                break
            if not part:
                break
            data += part
            header, found, rest = data.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", header)
            if found and length and len(rest) >= int(length.group(1)):
                break
    status_line, _, _ = data.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 "), data[:200]
    return int(status_line.split()[1]), data.partition(b"\r\n\r\n")[2], sent


def _chunks(total: int, size: int = 1 << 16) -> Iterator[bytes]:
    for _ in range(total // size):
        yield b"a" * size


def _chunked(total: int, size: int = 1 << 16) -> Iterator[bytes]:
    for _ in range(total // size):
        yield f"{size:x}\r\n".encode() + b"a" * size + b"\r\n"
    yield b"0\r\n\r\n"


def test_oversized_bodies_are_413_without_being_read(
    api: ApiServer, catalogue: tuple[str, str, list[dict[str, Any]]]
) -> None:
    limit = api.settings.max_body_bytes
    declared = 50 * 2**20
    head = (
        f"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    ).encode()
    status, body, sent = _exchange(api.port, head, _chunks(declared))
    assert status == 413, body
    assert orjson.loads(body)["code"] == "PayloadTooLarge"
    assert sent < declared // 2, f"{sent} bytes were taken before the answer"
    assert _responsive(api)

    chunked_head = (
        b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    status, body, sent_chunked = _exchange(api.port, chunked_head, _chunked(declared))
    assert status == 413, body
    assert orjson.loads(body)["code"] == "PayloadTooLarge"
    assert sent_chunked < declared // 2
    assert _responsive(api)

    just_under = b'{"limit": 1, "x": "' + b"a" * (limit - 100) + b'"}'
    with httpx.Client(base_url=api.url, timeout=60) as http:
        accepted = _send(http, just_under)
    assert accepted.status_code == 200, accepted.text
    record(
        "input",
        f"oversized bodies: 50 MB declared, 50 MB chunked (limit 4 MiB) ({catalogue[0]})",
        runs=2,
        taken_bytes_declared=sent,
        taken_bytes_chunked=sent_chunked,
    )


def test_huge_query_strings_and_headers_are_refused(
    api: ApiServer, catalogue: tuple[str, str, list[dict[str, Any]]]
) -> None:
    """Over the limits: 414 / 431 JSON. A request line over 64 KiB is refused by uvicorn's
    HTTP parser itself (a plain-text 400) before the application sees it."""
    get = b"GET /search?q="
    trials = {
        "48 kB query string": (get + b"a" * 48_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        "48 kB path": (
            b"GET /collections/" + b"a" * 48_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            414,
        ),
        "1 MB query string": (get + b"a" * 2**20 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        "1 MB header": (
            b"GET /search HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2**20 + b"\r\n\r\n",
            431,
        ),
        "5,000 headers": (
            b"GET /search HTTP/1.1\r\nHost: x\r\n"
            + b"".join(f"X-H{n}: {'a' * 20}\r\n".encode() for n in range(5000))
            + b"\r\n",
            431,
        ),
    }
    for name, (head, expected) in trials.items():
        status, body, _ = _exchange(api.port, head)
        assert status == expected, (name, status, body[:200])
        if expected != 400:
            assert set(orjson.loads(body)) >= {"code", "description"}, name
        assert _responsive(api), name
    record(
        "input",
        f"huge query strings, paths and headers: 414 / 431 / 400 ({catalogue[0]})",
        runs=len(trials),
    )


# --- reads while a harvest writes -----------------------------------------------------------------
def _ids_in_store(path: Path, site: str | None) -> set[str]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as conn:
        if site is None:
            rows = conn.execute("SELECT id FROM items")
        else:
            rows = conn.execute("SELECT id FROM items WHERE site = ?", (site,))
        return {r[0] for r in rows}


REQUIRED = {"type", "stac_version", "id", "collection", "geometry", "bbox", "properties", "assets"}


def _page_problems(doc: dict[str, Any], check_schema: bool) -> list[str]:
    """Why a page is torn: counts that disagree, features that are not whole STAC items."""
    problems: list[str] = []
    features = doc.get("features")
    if not isinstance(features, list):
        return ["no features array"]
    if doc.get("numberReturned") != len(features):
        problems.append(f"numberReturned {doc.get('numberReturned')} != {len(features)} features")
    for feature in features:
        missing = REQUIRED - set(feature)
        if missing or feature["collection"] != COLLECTION or feature["type"] != "Feature":
            problems.append(f"{feature.get('id')}: not a whole item (missing {sorted(missing)})")
        elif not feature["properties"].get("datetime") or "data" not in feature["assets"]:
            problems.append(f"{feature['id']}: no datetime or no data asset")
    if check_schema and features:
        for feature in (features[0], features[-1]):
            errors = validation_errors(feature)
            if errors:
                problems.append(f"{feature['id']}: {errors[0][:200]}")
    return problems


class Walker:
    """Reader threads against the API during a harvest; they collect what they saw."""

    def __init__(self, url: str, store: Path, sites: list[str]) -> None:
        self.url = url
        self.store = store
        self.sites = sites
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.walks = self.pages = self.reads = self.requests = 0
        self.skipped = self.invented = self.duplicated = 0
        self.problems: list[str] = []

    def problem(self, text: str) -> None:
        with self.lock:
            if len(self.problems) < 20:
                self.problems.append(text)

    def get(self, http: httpx.Client, url: str, **params: Any) -> dict[str, Any] | None:
        with self.lock:
            self.requests += 1
        try:
            response = http.get(url, params=params or None)
        except httpx.HTTPError as err:
            self.problem(f"{url}: {type(err).__name__} {err}")
            return None
        if response.status_code != 200:
            self.problem(f"{response.url} -> {response.status_code} {response.text[:200]}")
            return None
        doc: dict[str, Any] = response.json()
        return doc

    def walk(self, http: httpx.Client, rng: random.Random) -> None:
        """One keyset walk (GET or POST) checked against store snapshots around it."""
        site = None if rng.random() < 0.15 else rng.choice(self.sites)
        before = _ids_in_store(self.store, site)
        seen: list[str] = []
        keys: list[tuple[str, str]] = []
        limit = rng.choice([50, 200]) if site else 1000
        body: dict[str, Any] = {"limit": limit}
        if site:
            body["filter"] = {"op": "=", "args": [{"property": "thisme:site"}, site]}
        use_post = rng.random() < 0.5
        doc: dict[str, Any] | None
        if use_post:
            response = http.post("search", json=body)
            doc = response.json() if response.status_code == 200 else None
            if doc is None:
                self.problem(f"POST search -> {response.status_code} {response.text[:200]}")
        else:
            params: dict[str, Any] = {"limit": limit}
            if site:
                params["filter"] = f"\"thisme:site\" = '{site}'"
            doc = self.get(http, "search", **params)
        pages = 0
        while doc is not None:
            pages += 1
            for problem in _page_problems(doc, check_schema=pages <= 3):
                self.problem(problem)
            for feature in doc["features"]:
                seen.append(feature["id"])
                keys.append((feature["properties"]["datetime"], feature["id"]))
            nxt = [link for link in doc["links"] if link["rel"] == "next"]
            if not nxt:
                break
            if use_post:
                with self.lock:
                    self.requests += 1
                response = http.post(nxt[0]["href"], json=nxt[0]["body"])
                doc = response.json() if response.status_code == 200 else None
                if doc is None:
                    self.problem(f"POST next -> {response.status_code} {response.text[:200]}")
            else:
                doc = self.get(http, nxt[0]["href"])
        after = _ids_in_store(self.store, site)
        if keys != sorted(keys, reverse=True) or len(set(keys)) != len(keys):
            self.problem(f"walk over {site or 'everything'} is not strictly ordered")
        with self.lock:
            self.walks += 1
            self.pages += pages
            self.duplicated += len(seen) - len(set(seen))
            self.skipped += len(before - set(seen))
            self.invented += len(set(seen) - after)

    def read_items(self, http: httpx.Client, rng: random.Random) -> None:
        ids = sorted(_ids_in_store(self.store, None))
        for item_id in rng.sample(ids, min(len(ids), 20)):
            doc = self.get(http, f"collections/{COLLECTION}/items/{item_id}")
            if doc is not None and doc.get("id") != item_id:
                self.problem(f"item {item_id}: got {doc.get('id')}")
            with self.lock:
                self.reads += 1

    def run(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=self.url, timeout=60) as http:
            while not self.stop.is_set():
                if rng.random() < 0.7:
                    self.walk(http, rng)
                else:
                    self.read_items(http, rng)


def _all_items(url: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    next_url: str | None = f"{url}search?limit=1000"
    with httpx.Client(timeout=60) as http:
        while next_url:
            doc = http.get(next_url).json()
            for feature in doc["features"]:
                assert feature["id"] not in found
                feature.pop("links")
                found[feature["id"]] = feature
            links = [link["href"] for link in doc["links"] if link["rel"] == "next"]
            next_url = links[0] if links else None
    return found


def _cli(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "thisme_stac", *argv], env=env, capture_output=True, timeout=300
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_reads_during_a_harvest_see_no_torn_pages(tmp_path: Path) -> None:
    from thisme_stac.simulator import GeneratedCatalogue, SimulatorServer

    store = tmp_path / "live.sqlite"
    catalogue = GeneratedCatalogue(end=datetime(2021, 1, 1, tzinfo=UTC))  # ~10k maps
    sites = ["Central-Italy", "Montpellier", "Beauce"]
    with SimulatorServer(catalogue, port=0) as sim:
        env = {**os.environ, "THISME_RESTO_URL": sim.url, "THISME_STORE": str(store)}
        first = _cli("harvest", "--urlq", f"q=%23{sites[0]}&collection={COLLECTION}", env=env)
        assert first.returncode == 0, first.stderr.decode()[-2000:]

        port = _free_port()
        serve = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "thisme_stac",
                "serve",
                "--store",
                str(store),
                "--port",
                str(port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        url = f"http://127.0.0.1:{port}/"
        try:
            _wait_for(url, serve)
            walker = Walker(url, store, sites)
            readers = [threading.Thread(target=walker.run, args=(n,)) for n in range(2)]
            started = time.monotonic()
            for reader in readers:
                reader.start()
            harvest = _cli(
                "harvest", "--collection", COLLECTION, "--page-size", "50", "--json", env=env
            )
            harvest_seconds = time.monotonic() - started
            walker.stop.set()
            for reader in readers:
                reader.join(120)
            assert harvest.returncode == 0, harvest.stderr.decode()[-2000:]
            report = orjson.loads(harvest.stdout)
            served = _all_items(url)
        finally:
            serve.terminate()
            _, serve_err = serve.communicate(timeout=30)
    assert not walker.problems, "\n".join(walker.problems)
    assert walker.walks >= 3, walker.walks
    assert walker.reads > 0
    assert (walker.skipped, walker.invented, walker.duplicated) == (0, 0, 0)
    assert b"Traceback" not in serve_err, serve_err.decode()[-3000:]

    # after the harvest the API serves exactly what was harvested: every map the simulator has
    stored = {item["id"]: item for item in _store_items(store)}
    assert report["complete"] is True
    assert report["failed"] == 0
    assert len(stored) == len(catalogue)
    assert set(served) == set(stored)
    differing = [
        i
        for i, item in stored.items()
        if served[i] != {k: v for k, v in item.items() if k != "links"}
    ]
    assert not differing, differing[:5]
    record(
        "api",
        "API reads while a harvest writes to the same SQLite store",
        runs=walker.walks + walker.reads,
        lost=walker.skipped,
        duplicated=walker.duplicated,
        errors=len(walker.problems),
        walks=walker.walks,
        pages=walker.pages,
        item_reads=walker.reads,
        requests=walker.requests,
        harvested=report["new"] + report["unchanged"] + report["updated"],
        harvest_seconds=round(harvest_seconds, 1),
        served_after=len(served),
    )


def _store_items(path: Path) -> list[dict[str, Any]]:
    from thisme_stac.store import open_store

    store = open_store(str(path), create=False)
    try:
        return list(store.iter_items())
    finally:
        store.close()


def _wait_for(url: str, process: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            if httpx.get(f"{url}_mgmt/ping", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {seconds} s")


# --- secrets --------------------------------------------------------------------------------------
def _with_password(url: str, password: str) -> str:
    return re.sub(r"^postgresql://([^@/]+)@", rf"postgresql://\1:{password}@", url)


def _serve(
    store: str, env: dict[str, str], port: int, out: Path
) -> tuple[subprocess.Popen[bytes], Any]:
    handle = out.open("ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "thisme_stac",
            "-vv",
            "serve",
            "--store",
            store,
            "--port",
            str(port),
            "--log-level",
            "debug",
        ],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    return process, handle


def test_no_password_or_key_in_logs_errors_or_answers(tmp_path: Path) -> None:
    """The API on a pgstac URL with a password and with an API key; requests that work, that
    fail, that are refused, then the database goes away under it and a server that cannot
    connect at all: neither secret appears in anything printed or answered."""
    from psycopg import sql

    from tests.pgstac_db import admin_connection, temporary_database

    password = "pw-" + os.urandom(12).hex()
    key = "key-" + os.urandom(16).hex()
    log = tmp_path / "server.log"
    answers: list[bytes] = []
    with temporary_database() as plain_url:
        items = build_store(plain_url, step=200)
        url = _with_password(plain_url, password)
        assert password in url
        env = {**os.environ, "THISME_API_KEY": key}
        port = _free_port()
        base = f"http://127.0.0.1:{port}/"
        server, handle = _serve(url, env, port, log)
        try:
            _wait_for(base, server)
            new = orjson.loads(orjson.dumps(items[0]))
            new["id"] = "SM_SECRET_TEST"
            item_url = f"{base}collections/{COLLECTION}/items"
            with httpx.Client(timeout=60) as http:
                requests: list[Callable[[], httpx.Response]] = [
                    lambda: http.get(base),
                    lambda: http.get(f"{base}search?limit=2"),
                    lambda: http.get(f"{base}search?filter=nonsense ="),
                    lambda: http.get(f"{base}search?token=forged"),
                    lambda: http.get(f"{base}collections/nope/items/x"),
                    lambda: http.post(item_url, json=new),
                    lambda: http.post(item_url, json=new, headers={"X-API-Key": "wrong"}),
                    lambda: http.post(item_url, json=new, headers={"X-API-Key": key}),
                    lambda: http.post(item_url, json=new, headers={"X-API-Key": key}),
                    lambda: http.delete(
                        f"{item_url}/{new['id']}", headers={"Authorization": f"Bearer {key}"}
                    ),
                    lambda: http.post(item_url, content=b"{", headers={"X-API-Key": key}),
                    lambda: http.get(f"{base}_mgmt/health"),
                ]
                statuses = []
                for send in requests:
                    response = send()
                    statuses.append(response.status_code)
                    answers.append(str(response.headers).encode() + response.content)
                assert statuses[:9] == [200, 200, 400, 400, 404, 401, 403, 201, 409], statuses
                # the database disappears under the running server
                with admin_connection() as admin:
                    admin.execute(
                        sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
                            sql.Identifier(plain_url.rsplit("/", 1)[1])
                        )
                    )
                failing = []
                for path in ("search?limit=1", "_mgmt/health"):
                    response = http.get(base + path)
                    failing.append(response.status_code)
                    answers.append(str(response.headers).encode() + response.content)
                assert all(status >= 500 for status in failing), failing
        finally:
            server.terminate()
            server.wait(30)
            handle.close()
    # servers that cannot start: nothing listens there; a database that does not exist
    starts = []
    for broken in (
        _with_password("postgresql://postgres@127.0.0.1:9/thisme", password),
        _with_password(plain_url, password),  # dropped above
        f"postgresql://127.0.0.1:5432/nothing?password={password}&user=postgres",
    ):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "thisme_stac",
                "-vv",
                "serve",
                "--store",
                broken,
                "--port",
                str(_free_port()),
            ],
            env={**os.environ, "THISME_API_KEY": key},
            capture_output=True,
            timeout=120,
        )
        starts.append(done.returncode)
        answers.append(done.stdout + done.stderr)
    assert all(code != 0 for code in starts), starts
    printed = log.read_bytes()
    everything = printed + b"".join(answers)
    assert b"STAC API on" in printed
    assert len(everything) > 2000
    leaks = everything.count(password.encode()) + everything.count(key.encode())
    assert leaks == 0, [
        line
        for line in everything.splitlines()
        if password.encode() in line or key.encode() in line
    ][:5]
    record(
        "input",
        "password of the pgstac URL and API key in logs, errors and answers",
        runs=len(answers),
        errors=leaks,
        captured_bytes=len(everything),
    )
