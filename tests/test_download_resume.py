"""Downloader details against the scripted file server: If-Range, Retry-After, progress, auth."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.downloading import file_item
from thisme_stac.download import (
    DownloadOptions,
    NetrcAuth,
    Progress,
    Transfer,
    download_items,
)
from thisme_stac.download.sources import resto_items, resto_token_provider
from thisme_stac.resto.client import RestoClient
from thisme_stac.simulator import GeneratedCatalogue, SimulatorServer
from thisme_stac.simulator.fileserver import FileServer, content, content_sha256

LAYOUT = "{id}/{filename}"


def _options(dest: Path, **extra: Any) -> DownloadOptions:
    return DownloadOptions(dest=dest, layout=LAYOUT, backoff=0.01, **extra)


def _part(dest: Path, name: str) -> Path:
    return dest / name.rsplit(".", 1)[0] / f"{name}.part"


def test_generated_files_are_not_periodic_at_small_offsets() -> None:
    data = content("g.tif", 300_000)
    assert len(data) == 300_000
    assert content("g.tif", 5000)[1:] != data[1 + 4096 : 5000 + 4096]
    assert content("h.tif", 1000) != data[:1000]
    assert hashlib.sha256(data).hexdigest() == content_sha256("g.tif", 300_000)


@pytest.mark.parametrize("same_file", [True, False])
def test_resume_sends_if_range_and_restarts_when_the_file_changed(
    tmp_path: Path, same_file: bool
) -> None:
    with FileServer() as server:
        server.add("r.tif", size=500_000, etag='"v2"')
        part = _part(tmp_path, "r.tif")
        part.parent.mkdir(parents=True)
        part.write_bytes(content("r.tif", 123_456))
        part.with_name(part.name + ".etag").write_text('"v2"' if same_file else '"v1"')
        result = download_items([file_item(server, "r.tif")], _options(tmp_path))
        assert result.count("downloaded") == 1, result.transfers[0].error
        assert part.with_suffix("").read_bytes() == content("r.tif", 500_000)
        assert not part.exists()
        assert not part.with_name(part.name + ".etag").exists()
        (get,) = server.requests_for("r.tif")
        assert get.range == "bytes=123456-"
        assert get.if_range == ('"v2"' if same_file else '"v1"')
        assert get.status == (206 if same_file else 200)
        assert get.sent == (500_000 - 123_456 if same_file else 500_000)


def test_server_ignoring_range_restarts_from_zero(tmp_path: Path) -> None:
    with FileServer() as server:
        server.add("i.tif", size=200_000, ignore_range=True)
        part = _part(tmp_path, "i.tif")
        part.parent.mkdir(parents=True)
        part.write_bytes(content("i.tif", 50_000))
        result = download_items([file_item(server, "i.tif")], _options(tmp_path))
        assert result.count("downloaded") == 1
        assert part.with_suffix("").read_bytes() == content("i.tif", 200_000)
        assert [e.status for e in server.requests_for("i.tif")] == [200]


def test_a_complete_part_is_verified_and_kept_without_a_request(tmp_path: Path) -> None:
    with FileServer() as server:
        server.add("k.tif", size=70_000)
        part = _part(tmp_path, "k.tif")
        part.parent.mkdir(parents=True)
        part.write_bytes(content("k.tif", 70_000))
        result = download_items([file_item(server, "k.tif")], _options(tmp_path))
        assert result.count("downloaded") == 1
        assert not server.log
        assert part.with_suffix("").read_bytes() == content("k.tif", 70_000)
        # a wrong .part of the right size is thrown away and fetched again
        part.with_suffix("").unlink()
        part.write_bytes(b"x" * 70_000)
        result = download_items([file_item(server, "k.tif")], _options(tmp_path))
        assert result.count("downloaded") == 1
        assert [e.range for e in server.requests_for("k.tif")] == [None]
        assert part.with_suffix("").read_bytes() == content("k.tif", 70_000)


def test_same_size_damage_is_caught_by_the_manifest(tmp_path: Path) -> None:
    with FileServer() as server:
        server.add("m.tif", size=30_000)
        item = file_item(server, "m.tif", declared=False)
        first = download_items([item], _options(tmp_path))
        path = first.transfers[0].path
        assert download_items([item], _options(tmp_path)).count("skipped") == 1
        path.write_bytes(b"\0" * 30_000)  # same size, other bytes
        again = download_items([item], _options(tmp_path))
        assert again.count("downloaded") == 1
        assert path.read_bytes() == content("m.tif", 30_000)


def test_retry_after_is_honoured(tmp_path: Path) -> None:
    with FileServer() as server:
        server.add("t.tif", size=10_000, fail=[429], retry_after="1")
        started = time.monotonic()
        result = download_items([file_item(server, "t.tif")], _options(tmp_path))
        assert result.count("downloaded") == 1
        assert time.monotonic() - started >= 1.0
        assert [e.status for e in server.requests_for("t.tif")] == [429, 200]


def test_server_wide_failures_and_giving_up(tmp_path: Path) -> None:
    with FileServer() as server:
        server.add("a.tif", size=10_000)
        server.add("b.tif", size=10_000)
        server.fail_next(3, 503)
        items = [file_item(server, "a.tif"), file_item(server, "b.tif")]
        result = download_items(items, _options(tmp_path, concurrency=1))
        assert result.count("downloaded") == 2
        server.add("c.tif", size=10_000, fail=[500] * 5)
        result = download_items([file_item(server, "c.tif")], _options(tmp_path, retries=3))
        (transfer,) = result.failed
        assert transfer.error == "server answered 500"
        assert len(server.requests_for("c.tif")) == 3
        assert not list(tmp_path.rglob("c.tif*"))


@pytest.mark.parametrize(("concurrency", "per_host", "seen"), [(None, None, 4), (6, 2, 2)])
def test_concurrency_and_per_host_limits(
    tmp_path: Path, concurrency: int | None, per_host: int | None, seen: int
) -> None:
    with FileServer() as server:
        names = [f"c{i}.tif" for i in range(10)]
        for name in names:
            server.add(name, size=1000, latency=0.15)
        limits = {"concurrency": concurrency, "per_host": per_host} if concurrency else {}
        result = download_items([file_item(server, n) for n in names], _options(tmp_path, **limits))
        assert result.count("downloaded") == 10
        assert server.max_active == seen


def test_a_missing_file_fails_without_retries(tmp_path: Path) -> None:
    with FileServer() as server:
        item = {"id": "gone", "assets": {"d": {"href": server.file_url("gone.tif")}}}
        result = download_items([item], _options(tmp_path))
        assert "404" in str(result.failed[0].error)
        assert len(server.log) == 1


class Counting(Progress):
    def __init__(self) -> None:
        self.files = 0
        self.total: int | None = None
        self.sized_total: int | None = None
        self.bytes = 0
        self.done: list[str] = []

    def planned(self, files: int, total_bytes: int | None) -> None:
        self.files, self.total = files, total_bytes

    def sized(self, total_bytes: int) -> None:
        self.sized_total = total_bytes

    def advance(self, nbytes: int) -> None:
        self.bytes += nbytes

    def finished(self, transfer: Transfer) -> None:
        self.done.append(transfer.status)


def test_progress_hooks_add_up_across_resume_retry_and_skip(tmp_path: Path) -> None:
    with FileServer() as server:
        server.add("p1.tif", size=3_000_000, close_after=1_500_000)
        server.add("p2.tif", size=2_000_000)
        server.add("p3.tif", size=100_000)
        items = [file_item(server, n) for n in ("p1.tif", "p2.tif", "p3.tif")]
        part = _part(tmp_path, "p2.tif")
        part.parent.mkdir(parents=True)
        part.write_bytes(content("p2.tif", 700_000))
        download_items([items[2]], _options(tmp_path))
        hooks = Counting()
        result = download_items(items, _options(tmp_path), progress=hooks)
        assert [t.status for t in result.transfers] == ["downloaded", "downloaded", "skipped"]
        assert hooks.files == 3
        assert hooks.total == 5_100_000
        assert hooks.bytes == 5_100_000
        assert sorted(hooks.done) == ["downloaded", "downloaded", "skipped"]
        assert result.fetched_bytes == 5_000_000 - 700_000
        assert hooks.sized_total is None


def test_progress_total_is_completed_when_sizes_arrive(tmp_path: Path) -> None:
    with FileServer() as server:
        server.add("u1.tif", size=1000)
        server.add("u2.tif", size=2000)
        items = [file_item(server, "u1.tif", declared=False), file_item(server, "u2.tif")]
        hooks = Counting()
        download_items(items, _options(tmp_path), progress=hooks)
        assert hooks.total is None
        assert hooks.sized_total == 3000
        assert hooks.bytes == 3000


def test_dry_run_sizes_with_head_and_writes_nothing(tmp_path: Path) -> None:
    with FileServer() as server:
        server.add("h1.tif", size=12_345)
        server.add("h2.tif", size=999)
        items = [file_item(server, "h1.tif", declared=False), file_item(server, "h2.tif")]
        result = download_items(items, _options(tmp_path / "d", dry_run=True))
        assert [t.size for t in result.transfers] == [12_345, 999]
        assert result.total_bytes == 13_344
        assert {t.status for t in result.transfers} == {"planned"}
        assert [(e.method, e.path) for e in server.log] == [("HEAD", "/files/h1.tif")]
        assert not (tmp_path / "d").exists()


def test_content_disposition_cannot_choose_the_path(tmp_path: Path) -> None:
    with FileServer() as server:
        server.add("cd.tif", size=5000, content_disposition='attachment; filename="../../x"')
        dest = tmp_path / "a" / "b"
        result = download_items([file_item(server, "cd.tif")], _options(dest))
        assert result.count("downloaded") == 1
        assert result.transfers[0].path == (dest / "cd" / "cd.tif").resolve()
        assert not (tmp_path / "x").exists()
        assert not (tmp_path / "a" / "x").exists()


def test_files_served_from_a_directory(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f.bin").write_bytes(b"abc" * 1000)
    (tmp_path / "secret").write_text("no")
    with FileServer(root) as server:
        assert httpx.get(f"{server.url}/files/sub/f.bin").content == b"abc" * 1000
        assert httpx.get(f"{server.url}/files/../secret").status_code == 404
        assert httpx.get(f"{server.url}/files/sub%2F..%2F..%2Fsecret").status_code == 404
        ranged = httpx.get(f"{server.url}/files/sub/f.bin", headers={"Range": "bytes=2990-"})
        assert ranged.status_code == 206
        assert ranged.content == b"cabcabcabc"


def test_refused_token_is_renewed_by_one_login(tmp_path: Path) -> None:
    """Transfers refused with the same (expired) token at once cost one login, not one each."""
    catalogue = GeneratedCatalogue(end=datetime(2016, 2, 1, tzinfo=UTC))
    with SimulatorServer(catalogue, download_auth=True) as sim:
        with RestoClient(sim.url) as anonymous:
            items = list(resto_items(anonymous, "q=%23Central-Italy"))
        assert len(items) >= 4
        logins: list[bool] = []
        cached = {"Authorization": "Bearer expired.token"}

        def provider(refresh: bool) -> dict[str, str]:
            if refresh:
                logins.append(refresh)
                answer = httpx.get(f"{sim.url}/auth", auth=("admin@thisme.test", "thisme"))
                cached["Authorization"] = f"Bearer {answer.json()['token']}"
            return dict(cached)

        host = sim.url.removeprefix("http://")
        result = download_items(
            items, _options(tmp_path, concurrency=4), token_provider=provider, token_hosts=[host]
        )
        assert result.count("downloaded") == len(items)
        assert logins == [True]
        refused = [r for r in sim.requests if r.path.endswith("/download") and r.status == 401]
        assert 1 <= len(refused) <= 4


def test_resto_token_provider_and_netrc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalogue = GeneratedCatalogue(end=datetime(2016, 2, 1, tzinfo=UTC))
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login admin@thisme.test password thisme\n")
    netrc.chmod(0o600)
    auth = NetrcAuth(netrc)
    assert auth.credentials("127.0.0.1") == ("admin@thisme.test", "thisme")
    with SimulatorServer(catalogue, download_auth=True) as sim:
        with RestoClient(sim.url) as anonymous:
            items = list(resto_items(anonymous, "q=%23Central-Italy"))[:2]
        # netrc alone: Basic credentials on every download
        plain = download_items(items, _options(tmp_path / "n"), auth=auth)
        assert plain.count("downloaded") == 2
        # a resto account: Bearer tokens, which netrc does not override
        from pydantic import SecretStr

        with RestoClient(sim.url, username="admin@thisme.test", password=SecretStr("thisme")) as rc:
            host = sim.url.removeprefix("http://")
            result = download_items(
                items,
                _options(tmp_path / "t"),
                token_provider=resto_token_provider(rc),
                token_hosts=[host],
                auth=auth,
            )
        assert result.count("downloaded") == 2
        assert any(r.path == "/auth" for r in sim.requests)


def test_httpcore_read_size_knob_still_takes_effect() -> None:
    """The downloader raises httpcore's read size; this fails if that knob goes or stops working."""
    import asyncio

    from thisme_stac.download.core import BATCH, tune_httpcore_reads

    assert tune_httpcore_reads()

    async def largest_chunk(url: str) -> int:
        largest = 0
        async with httpx.AsyncClient() as client, client.stream("GET", url) as response:
            async for chunk in response.aiter_raw():
                largest = max(largest, len(chunk))
                await asyncio.sleep(0.002)  # let the socket buffer fill between reads
        return largest

    with FileServer() as server:
        url = server.add("k.tif", size=8 * BATCH)
        assert asyncio.run(largest_chunk(url)) > 64 * 1024


def test_output_files_left_by_a_killed_run_are_removed(tmp_path: Path) -> None:
    with FileServer() as server:
        server.add("o.tif", size=1000)
        stale = tmp_path / ".manifest.json.12345.tmp"
        stale.write_bytes(b"[")
        assert (
            download_items([file_item(server, "o.tif")], _options(tmp_path)).count("downloaded")
            == 1
        )
        assert not stale.exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["items.json", "manifest.json", "o"]
