"""The bulk downloader against real servers on 127.0.0.1: the simulator, a scripted file server."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.downloading import kill_when_part_has
from thisme_stac.download import Downloader, DownloadOptions, download_items
from thisme_stac.download.layout import local_path, sanitise
from thisme_stac.errors import ConfigError
from thisme_stac.simulator import GeneratedCatalogue, SimulatorServer
from thisme_stac.simulator.fileserver import FileServer, content
from thisme_stac.simulator.geotiff import geotiff_bytes

SEED = "q=%23Central-Italy&collection=SoilMoisture"
END = datetime(2017, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(GeneratedCatalogue(end=END)) as server:
        yield server


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "thisme_stac", "download", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def _item(server: FileServer, name: str, *, checksum: bool = True, **extra: Any) -> dict[str, Any]:
    behaviour = server.files[name]
    asset: dict[str, Any] = {
        "href": f"{server.url}/files/{name}",
        "type": "image/tiff; application=geotiff",
        "roles": ["data"],
    }
    if checksum:
        data = content(name, behaviour.size)
        asset["file:size"] = len(data)
        asset["file:checksum"] = "1220" + hashlib.sha256(data).hexdigest()
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": extra.pop("id", name.rsplit(".", 1)[0]),
        "collection": "SoilMoisture",
        "geometry": {"type": "Point", "coordinates": [12.5, 42.9]},
        "bbox": [12.5, 42.9, 12.5, 42.9],
        "properties": {"datetime": "2020-01-03T17:06:19Z", "thisme:site": "Central-Italy"},
        "links": [],
        "assets": {"data": asset},
        **extra,
    }


def _write_items(path: Path, items: list[dict[str, Any]]) -> Path:
    path.write_bytes(orjson.dumps({"type": "FeatureCollection", "features": items}))
    return path


# --- the THISME workflow -------------------------------------------------------------------------
def test_seed_query_downloads_exactly_the_simulator_products(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    result = _cli("--resto-url", sim.url, "-urlq", SEED, "--dest", str(tmp_path), "--quiet")
    assert result.returncode == 0, result.stderr
    catalogue = sim.catalogue
    expected = {}
    for pos in catalogue.positions("Central-Italy"):
        record = catalogue.record(int(pos))
        expected[record["pid"]] = geotiff_bytes(record["site"].bbox, record["start"])
    files = {p.stem: p for p in tmp_path.rglob("*.tif")}
    assert set(files) == set(expected)
    for pid, data in expected.items():
        assert files[pid].read_bytes() == data, pid
        assert files[pid].parent == tmp_path / "SoilMoisture" / "Central-Italy" / pid
    assert not list(tmp_path.rglob("*.part"))
    manifest = orjson.loads((tmp_path / "manifest.json").read_bytes())
    assert {e["status"] for e in manifest} == {"downloaded"}
    assert all(e["sha256"] == hashlib.sha256(expected[e["id"]]).hexdigest() for e in manifest)
    local = orjson.loads((tmp_path / "items.json").read_bytes())
    for feature in local["features"]:
        href = feature["assets"]["data"]["href"]
        assert href.startswith("./")
        assert (tmp_path / href).read_bytes() == expected[feature["id"]]
    again = _cli("--resto-url", sim.url, "-urlq", SEED, "--dest", str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert "skipped" in again.stderr
    assert f"{len(expected):,}" in again.stderr


def test_dry_run_fetches_nothing(sim: SimulatorServer, tmp_path: Path) -> None:
    dest = tmp_path / "dry"
    result = _cli("--resto-url", sim.url, "--urlq", SEED, "--dest", str(dest), "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == sim.catalogue.count("Central-Italy")
    assert "total" in result.stderr
    assert not dest.exists()


def test_expired_tokens_are_refreshed(tmp_path: Path) -> None:
    with SimulatorServer(
        GeneratedCatalogue(end=datetime(2016, 3, 1, tzinfo=UTC)),
        download_auth=True,
        token_lifetime=1,
    ) as sim:
        anonymous = _cli("--resto-url", sim.url, "--urlq", SEED, "--dest", str(tmp_path / "a"))
        assert anonymous.returncode == 1
        assert "access refused" in anonymous.stderr
        env = {
            "THISME_USERNAME": "admin@thisme.test",
            "THISME_PASSWORD": "thisme",
            "THISME_TOKEN": "stale-token",  # refused with 401: a new one is obtained
        }
        dest = tmp_path / "b"
        result = _cli(
            "--resto-url",
            sim.url,
            "--urlq",
            SEED,
            "--dest",
            str(dest),
            "--concurrency",
            "1",
            env=env,
        )
        assert result.returncode == 0, result.stderr
        count = sim.catalogue.count("Central-Italy")
        assert len(list(dest.rglob("*.tif"))) == count
        logins = [r for r in sim.requests if r.path.startswith("/auth")]
        assert len(logins) >= 2
        assert "thisme" not in result.stderr.replace("thisme-stac", "").replace("THISME", "")


# --- resume, verification, retries --------------------------------------------------------------
def test_kill_9_then_rerun_resumes_with_range(tmp_path: Path) -> None:
    with FileServer() as server:
        size = 6_000_000
        server.add("big.tif", size=size, throttle=2_000_000)
        items = _write_items(tmp_path / "items.json", [_item(server, "big.tif")])
        dest = tmp_path / "out"
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "thisme_stac",
                "download",
                str(items),
                "--dest",
                str(dest),
                "--quiet",
            ],
        )
        part = dest / "SoilMoisture" / "Central-Italy" / "big" / "big.tif.part"
        kept = kill_when_part_has(process, part, 1_000_001)
        assert 0 < kept < size
        assert not part.with_suffix("").exists()
        etag = part.with_name(part.name + ".etag").read_text()
        server.files["big.tif"].throttle = None
        result = _cli(str(items), "--dest", str(dest), "--quiet")
        assert result.returncode == 0, result.stderr
        final = part.with_suffix("")
        assert final.read_bytes() == content("big.tif", size)
        gets = server.requests_for("big.tif")
        assert len(gets) == 2
        assert gets[-1].range == f"bytes={kept}-"
        assert gets[-1].if_range == etag  # the ETag of the first run's answer
        assert gets[-1].status == 206
        assert gets[-1].sent == size - kept  # nothing on disk was fetched twice
        manifest = orjson.loads((dest / "manifest.json").read_bytes())
        assert manifest[0]["sha256"] == hashlib.sha256(content("big.tif", size)).hexdigest()


def test_corrupt_local_file_is_fetched_again(tmp_path: Path) -> None:
    with FileServer() as server:
        server.add("a.tif", size=50_000)
        item = _item(server, "a.tif")
        options = DownloadOptions(dest=tmp_path)
        first = download_items([item], options)
        assert first.count("downloaded") == 1
        path = first.transfers[0].path
        assert download_items([item], options).count("skipped") == 1
        path.write_bytes(b"garbage" + path.read_bytes()[7:])
        third = download_items([item], options)
        assert third.count("downloaded") == 1
        assert path.read_bytes() == content("a.tif", 50_000)


def test_unverifiable_existing_file_is_fetched_again(tmp_path: Path) -> None:
    with FileServer() as server:
        server.add("n.tif", size=20_000)
        item = _item(server, "n.tif", checksum=False)
        path = local_path(
            tmp_path, "{collection}/{site}/{id}/{filename}", item, "data", item["assets"]["data"]
        )
        path.parent.mkdir(parents=True)
        path.write_bytes(b"left by someone else")
        result = download_items([item], DownloadOptions(dest=tmp_path))
        assert result.count("downloaded") == 1
        assert path.read_bytes() == content("n.tif", 20_000)
        # now the manifest vouches for it
        assert download_items([item], DownloadOptions(dest=tmp_path)).count("skipped") == 1


def test_wrong_bytes_are_detected_and_never_kept(tmp_path: Path) -> None:
    with FileServer() as server:
        server.add("w.tif", size=40_000)
        item = _item(server, "w.tif")  # checksum of the right bytes
        server.files["w.tif"].wrong_bytes = True
        items = _write_items(tmp_path / "items.json", [item])
        result = _cli(str(items), "--dest", str(tmp_path / "out"), "--retries", "2")
        assert result.returncode == 1
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: 1 file(s) failed: w/data")
        assert "checksum" in last
        assert not list((tmp_path / "out").rglob("*.tif"))
        assert not list((tmp_path / "out").rglob("*.part"))


def test_server_errors_and_dropped_connections_are_retried(tmp_path: Path) -> None:
    with FileServer() as server:
        server.add("r.tif", size=300_000, fail=[500, 503, 429], retry_after="0")
        server.add("c.tif", size=300_000, close_after=100_000)
        server.add("s.tif", size=300_000, stall_after=50_000)
        items = [_item(server, n) for n in ("r.tif", "c.tif", "s.tif")]
        result = download_items(
            items, DownloadOptions(dest=tmp_path, timeout=1.0, backoff=0.05, retries=6)
        )
        assert result.count("downloaded") == 3, [t.error for t in result.transfers]
        for transfer in result.transfers:
            name = Path(transfer.href).name
            assert transfer.path.read_bytes() == content(name, 300_000)
        ranged = [e for e in server.log if e.path.endswith("c.tif") and e.range]
        assert ranged
        assert ranged[0].range != "bytes=0-"


# --- hostile names -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("item_id", "href"),
    [
        ("../../escape", "/files/x.tif"),
        ("/etc/passwd", "/files/x.tif"),
        ("CON", "/files/x.tif"),
        ("a/../../b", "/files/..%2F..%2Fevil.tif"),
        ("x" * 300, "/files/" + "y" * 300 + ".tif"),
        ("C:\\windows", "/files/aux.tif"),
        ("..", "/files/.."),
    ],
)
def test_hostile_names_stay_inside_dest(tmp_path: Path, item_id: str, href: str) -> None:
    item = {
        "id": item_id,
        "collection": "../coll",
        "properties": {"thisme:site": "../../site"},
        "assets": {"data": {"href": "http://127.0.0.1" + href, "type": "image/tiff"}},
    }
    dest = tmp_path / "dest"
    path = local_path(
        dest, "{collection}/{site}/{id}/{filename}", item, "data", item["assets"]["data"]
    )
    assert path.is_relative_to(dest.resolve())
    assert all(len(part.encode()) <= 120 for part in path.relative_to(dest.resolve()).parts)
    for part in path.relative_to(dest.resolve()).parts:
        assert part not in ("", ".", "..")
        assert part.split(".")[0].upper() not in {"CON", "AUX", "NUL", "PRN"}


def test_hostile_item_downloads_inside_dest(tmp_path: Path) -> None:
    with FileServer() as server:
        server.add("evil.tif", size=1000)
        item = _item(server, "evil.tif", id="../../../outside")
        item["collection"] = "/abs"
        result = download_items([item], DownloadOptions(dest=tmp_path / "d"))
        assert result.count("downloaded") == 1
        assert result.transfers[0].path.is_relative_to((tmp_path / "d").resolve())
        assert not (tmp_path / "outside").exists()


def test_sanitise_and_layout_errors() -> None:
    assert sanitise("a/b\\c:d") == "a_b_c_d"
    assert sanitise("lpt1.txt") == "_lpt1.txt"
    assert sanitise(" . ") == "_"
    with pytest.raises(ConfigError, match="nope"):
        Downloader(DownloadOptions(layout="{nope}/{filename}"))
    with pytest.raises(ConfigError, match="filename"):
        Downloader(DownloadOptions(layout="{collection}/{id}"))


def test_sync_facade_inside_a_running_loop(tmp_path: Path) -> None:
    with FileServer() as server:
        server.add("j.tif", size=10_000)
        item = _item(server, "j.tif")

        async def notebook_cell() -> int:
            return download_items([item], DownloadOptions(dest=tmp_path)).count("downloaded")

        assert asyncio.run(notebook_cell()) == 1


def test_bad_sources_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    cases = [
        ((), "error: give exactly one of: an ItemCollection file (or -), --urlq, --stac"),
        ((str(tmp_path / "bad.json"),), f"error: {tmp_path / 'bad.json'} is neither JSON"),
        ((str(tmp_path / "missing.json"),), f"error: cannot read {tmp_path / 'missing.json'}"),
        (("--stac", "ftp://x"), "error: STAC API URL must start with http:// or https://"),
    ]
    for args, start in cases:
        result = _cli(*args, "--dest", str(tmp_path / "o"))
        assert result.returncode == 1
        assert result.stderr.strip().startswith(start), result.stderr
        assert "Traceback" not in result.stderr
