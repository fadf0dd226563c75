"""Bodies read past h11 (``direct_body``): when that path is taken, and that every behaviour of
the usual path holds on it, from the plain socket in a worker thread and from httpcore's stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import h11
import httpx
import orjson
import pytest

from tests.downloading import file_item, kill_when_part_has
from thisme_stac.download import DownloadOptions, core, download_items
from thisme_stac.download.core import DirectBody, direct_body
from thisme_stac.simulator.fileserver import FileServer, content, content_sha256

BIG = core.DIRECT_MIN + 123_457  # read past h11 with the default threshold


def _options(dest: Path, **extra: Any) -> DownloadOptions:
    return DownloadOptions(dest=dest, layout="{id}/{filename}", backoff=0.01, **extra)


@contextlib.asynccontextmanager
async def _streamed(url: str, **headers: str) -> AsyncIterator[httpx.Response]:
    async with httpx.AsyncClient() as client, client.stream("GET", url, headers=headers) as r:
        yield r


def _decide(url: str, min_length: int | None = None) -> DirectBody | None:
    async def decide() -> DirectBody | None:
        async with _streamed(url) as response:
            return direct_body(response, min_length)

    return asyncio.run(decide())


@pytest.fixture(params=["socket", "stream"])
def taken(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every body with a Content-Length read past h11 (from the socket, or from httpcore's
    stream as over TLS); the list collects the DirectBody of each response."""
    monkeypatch.setattr(core, "DIRECT_MIN", 1)
    if request.param == "stream":
        monkeypatch.setattr(core, "_asyncio_reader", lambda stream: None)
    bodies: list[Any] = []
    original = core.direct_body

    def spy(response: httpx.Response, min_length: int | None = None) -> DirectBody | None:
        body = original(response, min_length)
        if body is not None:
            assert (body.socket is not None) == (request.param == "socket")
            bodies.append(body)
        return body

    monkeypatch.setattr(core, "direct_body", spy)
    return bodies


# --- the private ways in (they fail here first if httpx, httpcore, h11 or anyio change) ---------
def test_h11_state_and_the_asyncio_reader_are_found() -> None:
    async def look(url: str) -> None:
        async with _streamed(url) as response:
            stream = response.extensions["network_stream"]
            state = core._h11_connection(response, stream)
            assert isinstance(state, h11.Connection)
            assert core._h11_connection(response, object()) is None  # another connection's
            assert state.their_state is h11.SEND_BODY
            reader = core._asyncio_reader(response.extensions["network_stream"])
            assert reader is not None
            transport, queue = reader
            assert isinstance(transport, asyncio.Transport)
            assert isinstance(queue, deque)
            assert response.extensions["network_stream"].get_extra_info("socket") is not None

    with FileServer() as server:
        asyncio.run(look(server.add("g.tif", size=BIG)))


# --- which bodies ------------------------------------------------------------------------------
def test_large_plain_bodies_are_read_from_the_socket() -> None:
    with FileServer() as server:
        body = _decide(server.add("l.tif", size=BIG))
        assert body is not None
        assert body.socket is not None
        assert sum(map(len, body.buffered)) + body.left == BIG
        assert _decide(server.add("s.tif", size=core.DIRECT_MIN - 1)) is None


@pytest.mark.parametrize(
    ("switches", "direct"),
    [
        ({}, True),
        ({"content_encoding": "identity"}, True),
        ({"chunked": True}, False),
        ({"content_encoding": "gzip"}, False),
        ({"content_encoding": "br"}, False),
    ],
)
def test_only_identity_bodies_with_a_length_are_read_past_h11(
    switches: dict[str, Any], direct: bool
) -> None:
    with FileServer() as server:
        url = server.add("u.tif", size=BIG, **switches)
        assert (_decide(url) is not None) is direct


def test_bodies_without_httpcore_underneath_take_the_usual_path() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": "10"}, content=b"0123456789")

    async def decide() -> DirectBody | None:
        transport = httpx.MockTransport(answer)
        async with (
            httpx.AsyncClient(transport=transport) as client,
            client.stream("GET", "http://example.test/f") as response,
        ):
            return direct_body(response, 1)

    assert asyncio.run(decide()) is None


def test_a_started_body_is_not_taken_over() -> None:
    async def decide(url: str) -> DirectBody | None:
        async with _streamed(url) as response:
            async for _ in response.aiter_raw():
                break
            return direct_body(response, 1)

    with FileServer() as server:
        assert asyncio.run(decide(server.add("b.tif", size=BIG))) is None


def test_the_usual_path_downloads_chunked_bodies_on_one_connection(tmp_path: Path) -> None:
    with FileServer() as server:
        server.add("c.tif", size=BIG, chunked=True)
        server.add("d.tif", size=1000, chunked=True)
        items = [file_item(server, "c.tif"), file_item(server, "d.tif")]
        result = download_items(items, _options(tmp_path, concurrency=1))
        assert result.count("downloaded") == 2, [t.error for t in result.transfers]
        assert result.transfers[0].path.read_bytes() == content("c.tif", BIG)
        assert server.connections == 1  # kept alive (a body read past h11 closes it)


# --- every behaviour on the direct path ---------------------------------------------------------
def test_direct_download_is_complete_and_its_connection_is_not_reused(
    tmp_path: Path, taken: list[Any]
) -> None:
    with FileServer() as server:
        for name in ("a.tif", "b.tif"):
            server.add(name, size=3_000_000 + len(taken))
        items = [file_item(server, "a.tif"), file_item(server, "b.tif", declared=False)]
        result = download_items(items, _options(tmp_path, concurrency=1))
        assert result.count("downloaded") == 2
        for transfer in result.transfers:
            name = Path(transfer.href).name
            data = content(name, 3_000_000)
            assert transfer.path.read_bytes() == data
            assert transfer.sha256 == hashlib.sha256(data).hexdigest()
        assert len(taken) == 2
        assert result.fetched_bytes == 6_000_000
        assert server.connections == 2  # h11 still expected the first body: not reused


def test_dropped_connection_resumes_where_it_stopped(tmp_path: Path, taken: list[Any]) -> None:
    with FileServer() as server:
        size = 3_000_000
        server.add("c.tif", size=size, close_after=1_234_567)
        result = download_items([file_item(server, "c.tif")], _options(tmp_path))
        assert result.count("downloaded") == 1, result.transfers[0].error
        assert result.transfers[0].path.read_bytes() == content("c.tif", size)
        gets = server.requests_for("c.tif")
        assert [g.range for g in gets] == [None, "bytes=1234567-"]
        assert sum(g.sent for g in gets) == size  # every byte received was kept
        assert len(taken) == 2


def test_stall_times_out_and_resumes(tmp_path: Path, taken: list[Any]) -> None:
    with FileServer() as server:
        size = 2_000_000
        server.add("s.tif", size=size, stall_after=700_000, stall_seconds=3.0)
        started = time.monotonic()
        result = download_items([file_item(server, "s.tif")], _options(tmp_path, timeout=0.5))
        assert result.count("downloaded") == 1, result.transfers[0].error
        assert time.monotonic() - started < 2.5  # the timeout, not the stall, ended the wait
        assert result.transfers[0].path.read_bytes() == content("s.tif", size)
        gets = server.requests_for("s.tif")
        assert gets[-1].range == "bytes=700000-"
        assert taken


def test_wrong_bytes_fail_and_are_not_kept(tmp_path: Path, taken: list[Any]) -> None:
    with FileServer() as server:
        server.add("w.tif", size=1_500_000)
        item = file_item(server, "w.tif")
        server.files["w.tif"].wrong_bytes = True
        result = download_items([item], _options(tmp_path, retries=2))
        assert result.count("failed") == 1
        assert "checksum" in (result.transfers[0].error or "")
        assert not list(tmp_path.rglob("*.tif*"))
        assert len(taken) == 1  # a checksum mismatch is final


def test_part_is_resumed_with_if_range_and_retry_after_is_honoured(
    tmp_path: Path, taken: list[Any]
) -> None:
    with FileServer() as server:
        size = 2_500_000
        server.add("r.tif", size=size, close_after=1_000_000)
        item = file_item(server, "r.tif")
        first = download_items([item], _options(tmp_path, retries=1))
        assert first.count("failed") == 1
        part = tmp_path / "r" / "r.tif.part"
        assert part.stat().st_size == 1_000_000
        server.files["r.tif"].fail = [503]
        server.files["r.tif"].retry_after = "1"
        started = time.monotonic()
        second = download_items([item], _options(tmp_path))
        assert second.count("downloaded") == 1, second.transfers[0].error
        assert time.monotonic() - started >= 1.0
        assert second.transfers[0].path.read_bytes() == content("r.tif", size)
        last = server.requests_for("r.tif")[-1]
        assert (last.range, last.status, last.sent) == ("bytes=1000000-", 206, size - 1_000_000)
        assert last.if_range is not None


def test_cancelled_download_stops_writing_and_resumes(tmp_path: Path, taken: list[Any]) -> None:
    async def cancel_midway(item: dict[str, Any], part: Path) -> None:
        task = asyncio.create_task(core.Downloader(_options(tmp_path)).run([item]))
        deadline = time.monotonic() + 30
        while not (part.exists() and part.stat().st_size > 500_000):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    with FileServer() as server:
        size = 3_000_000
        server.add("k.tif", size=size, throttle=2_000_000)
        item = file_item(server, "k.tif")
        part = tmp_path / "k" / "k.tif.part"
        asyncio.run(cancel_midway(item, part))
        kept = part.stat().st_size
        time.sleep(0.3)
        assert part.stat().st_size == kept  # no thread writes after the cancellation
        assert 0 < kept < size
        server.files["k.tif"].throttle = None
        result = download_items([item], _options(tmp_path))
        assert result.count("downloaded") == 1, result.transfers[0].error
        assert result.transfers[0].path.read_bytes() == content("k.tif", size)
        assert server.requests_for("k.tif")[-1].range == f"bytes={kept}-"


def test_kill_9_mid_body_then_rerun_resumes_with_range(tmp_path: Path) -> None:
    with FileServer() as server:
        server.add("big.tif", size=BIG, throttle=8_000_000)
        items = tmp_path / "items.json"
        feature = file_item(server, "big.tif")
        items.write_bytes(orjson.dumps({"type": "FeatureCollection", "features": [feature]}))
        dest = tmp_path / "out"
        command = [sys.executable, "-m", "thisme_stac", "download", str(items), "--dest", str(dest)]
        process = subprocess.Popen([*command, "--layout", "{id}/{filename}", "--quiet"])
        part = dest / "big" / "big.tif.part"
        kept = kill_when_part_has(process, part, 3 * core.BATCH)
        assert 0 < kept < BIG
        server.files["big.tif"].throttle = None
        again = subprocess.run(
            [*command, "--layout", "{id}/{filename}", "--quiet"], capture_output=True, text=True
        )
        assert again.returncode == 0, again.stderr
        final = dest / "big" / "big.tif"
        digest = hashlib.sha256(final.read_bytes()).hexdigest()
        assert digest == content_sha256("big.tif", BIG)
        gets = server.requests_for("big.tif")
        assert [g.range for g in gets] == [None, f"bytes={kept}-"]
        assert gets[-1].sent == BIG - kept
