"""Downloader reliability trials (issue 8): kill -9, network faults, hostile names, secrets.

Each trial asserts on its own figures, then records them for docs/reliability.md.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from tests.reliability import record
from thisme_stac.download import DownloadOptions, download_items
from thisme_stac.simulator import GeneratedCatalogue, SimulatorServer
from thisme_stac.simulator.fileserver import FileServer, content_sha256

pytestmark = pytest.mark.reliability

LAYOUT = "{collection}/{id}/{filename}"
OUTPUTS = ("manifest.json", "items.json")


def _item(server: FileServer, name: str, *, declared: bool = True) -> dict[str, Any]:
    size = server.files[name].size
    asset: dict[str, Any] = {"href": server.file_url(quote(name, safe="")), "roles": ["data"]}
    if declared:
        asset["file:size"] = size
        asset["file:checksum"] = "1220" + content_sha256(name, size)
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": name.rsplit(".", 1)[0],
        "collection": "trial",
        "geometry": None,
        "properties": {"datetime": "2020-01-01T00:00:00Z"},
        "links": [],
        "assets": {"data": asset},
    }


def _tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root``."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "thisme_stac", *args]


# --- kill -9 at random moments, then rerun ------------------------------------------------------
def test_kill_9_at_random_moments_converges_to_an_uninterrupted_run(tmp_path: Path) -> None:
    rng = random.Random(8)
    with FileServer() as server:
        names = [f"s{i:02d}.tif" for i in range(40)]
        for index, name in enumerate(names):
            server.add(name, size=100_000 + 9_973 * index, latency=0.02)
        server.add("big.tif", size=12_000_000)
        big = server.files["big.tif"]
        items = [_item(server, n, declared=i % 2 == 0) for i, n in enumerate(names)]
        items.append(_item(server, "big.tif"))
        source = tmp_path / "items.json"
        source.write_bytes(orjson.dumps({"type": "FeatureCollection", "features": items}))

        reference = tmp_path / "reference"  # uninterrupted (and unthrottled: the same bytes)
        done = download_items(items, DownloadOptions(dest=reference, layout=LAYOUT))
        assert done.count("downloaded") == len(items)
        expected = _tree(reference)
        reference_manifest = orjson.loads((reference / "manifest.json").read_bytes())
        big.throttle = 4_000_000  # about 3 s per run: the kills land mid-transfer
        sent_before = sum(e.sent for e in server.requests_for("big.tif"))

        trials = killed_running = lost = 0
        for chain in range(3):  # each chain: kills one after the other, then a full rerun
            dest = tmp_path / f"chain{chain}"
            argv = _cli("download", str(source), "--dest", str(dest), "--layout", LAYOUT, "--quiet")
            for _ in range(4):
                process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                time.sleep(rng.uniform(0.6, 1.8))
                killed_running += process.poll() is None
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=30)
                trials += 1
            final = subprocess.run(argv, capture_output=True, text=True, timeout=120)
            assert final.returncode == 0, final.stderr
            got = _tree(dest)
            assert got.keys() == expected.keys()  # nothing missing, no .part / .etag / temp file
            lost += sum(got[path] != sha for path, sha in expected.items() if path not in OUTPUTS)
            assert got["items.json"] == expected["items.json"]
            manifest = orjson.loads((dest / "manifest.json").read_bytes())
            assert all(e["status"] in ("downloaded", "skipped") for e in manifest)
            assert [(e["path"], e["sha256"], e["size"]) for e in manifest] == [
                (e["path"], e["sha256"], e["size"]) for e in reference_manifest
            ]
        assert lost == 0
        assert trials >= 10
        assert killed_running >= 8  # most kills landed while the command was at work
        fetched = sum(e.sent for e in server.requests_for("big.tif")) - sent_before
    record(
        "download",
        "kill -9 at random moments (40 small files + one 12 MB file), then rerun",
        runs=trials,
        lost=lost,
        killed_while_running=killed_running,
        files=len(items),
        big_file_bytes_fetched_again=fetched - 3 * big.size,
    )


# --- network faults -----------------------------------------------------------------------------
def test_stalls_drops_server_errors_and_wrong_bytes(tmp_path: Path) -> None:
    soon = email.utils.formatdate(time.time() + 1, usegmt=True)
    faults: dict[str, dict[str, Any]] = {
        "stall.tif": {"stall_after": 1_000_000, "stall_seconds": 4.0},
        "drop.tif": {"close_after": 1_500_000},
        "e5xx.tif": {"fail": [500, 502, 503]},
        "e429.tif": {"fail": [429], "retry_after": "1"},
        "e503date.tif": {"fail": [503], "retry_after": soon},
        "wrong.tif": {"wrong_bytes": True},
    }
    with FileServer() as server:
        for name, switches in faults.items():
            server.add(name, size=3_000_000, **switches)
        items = [_item(server, name) for name in faults]
        options = DownloadOptions(dest=tmp_path, layout=LAYOUT, timeout=1.0, backoff=0.05)
        started = time.monotonic()
        result = download_items(items, options)
        seconds = time.monotonic() - started
        by_name = {t.path.name: t for t in result.transfers}
        good = [name for name in faults if name != "wrong.tif"]
        for name in good:
            transfer = by_name[name]
            assert transfer.status == "downloaded", transfer.error
            assert transfer.sha256 == content_sha256(name, 3_000_000)
        wrong = by_name["wrong.tif"]
        assert wrong.status == "failed"
        assert "checksum" in str(wrong.error)
        assert not wrong.path.exists()
        assert not list(tmp_path.rglob("*.part"))
        for name in ("stall.tif", "drop.tif"):  # resumed with Range, not fetched again
            requests = server.requests_for(name)
            assert requests[-1].range is not None
            assert sum(e.sent for e in requests) == 3_000_000
        assert seconds >= 1.0  # Retry-After (delta and HTTP date) waited for
        lost = sum(by_name[name].status != "downloaded" for name in good)
    record(
        "download",
        "stalled body, dropped connection, 5xx, 429/503 with Retry-After (delta, date), "
        "wrong bytes",
        runs=len(faults),
        lost=lost,
        wrong_bytes_detected=int(wrong.status == "failed"),
    )


# --- path traversal -----------------------------------------------------------------------------
def _hostile(escape: Path) -> list[str]:
    return [
        "..",
        "../",
        "../../../escaped",
        "..\\..\\escaped",
        "a/../../escaped",
        f"{escape}/abs",
        f"{escape}\\abs",
        "/etc/cron.d/x",
        "C:\\Windows\\System32\\x",
        "C:escaped",
        "\\\\server\\share\\x",
        "CON",
        "nul.tif",
        "COM1.txt",
        "lpt¹",
        "a\x00b",
        "..\x00/x",
        "\x7f\x1b[31m",
        "x" * 5000,
        "é" * 300,
        "．．／．．／escaped",  # fullwidth dots and solidus
        "\u2025/escaped",  # two-dot leader
        "\u202egnp.exe",  # right-to-left override
        "..%2F..%2Fescaped",
        "%2e%2e%2fescaped",
        " .. ",
        "...",
        "~/.ssh/authorized_keys",
        "$HOME/x",
        "name:stream",
    ]


def _disposition(name: str) -> str:
    """The name as servers send it: raw UTF-8 bytes in ``filename``, RFC 5987 ``filename*``."""
    raw = "".join(c for c in name if " " <= c != "\x7f").replace('"', "")
    mangled = raw.encode().decode("latin-1")
    return f"attachment; filename=\"{mangled}\"; filename*=UTF-8''{quote(name, safe='')}"


def test_hostile_ids_hrefs_and_content_disposition_stay_inside_dest(tmp_path: Path) -> None:
    jail = tmp_path / "jail"
    dest = jail / "a" / "b" / "dest"
    jail.mkdir()
    hostile = _hostile(jail)
    top = sorted(os.listdir("/"))
    home = sorted(os.listdir(Path.home()))
    with FileServer() as server:
        items = []
        for index, name in enumerate(hostile):
            served = f"f{index}-{name}"
            server.add(
                served,
                size=1000 + index,
                content_disposition=_disposition(name),
            )
            item = _item(server, served)
            item["id"] = name
            item["collection"] = hostile[-1 - index]
            item["properties"]["thisme:site"] = name
            items.append(item)
        before = set(tmp_path.rglob("*"))
        layout = "{collection}/{site}/{id}/{filename}"
        result = download_items(items, DownloadOptions(dest=dest, layout=layout))
        assert result.count("downloaded") == len(items), [t.error for t in result.failed]
    written = {p for p in tmp_path.rglob("*") if p not in before}
    outside = [p for p in written if not p.is_relative_to(dest) and p not in dest.parents]
    assert outside == []
    assert sorted(os.listdir("/")) == top
    assert sorted(os.listdir(Path.home())) == home
    for transfer in result.transfers:
        parts = transfer.path.relative_to(dest.resolve()).parts
        assert all(len(p.encode()) <= 120 and p not in ("", ".", "..") for p in parts)
        assert not any("\x00" in p or "/" in p or "\\" in p for p in parts)
    record(
        "input",
        "path traversal through item ids, collections, sites, hrefs, Content-Disposition",
        runs=len(hostile) * 4,
        errors=len(outside),
        hostile_names=len(hostile),
    )


# --- secrets never shown ------------------------------------------------------------------------
def test_no_password_or_token_in_output_or_manifest(tmp_path: Path) -> None:
    user, password = "alice@example.test", "S3cret-pass-7781"
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    catalogue = GeneratedCatalogue(end=datetime(2016, 2, 1, tzinfo=UTC))
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {user} password {password}\n")
    netrc.chmod(0o600)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("THISME_")}
    runs: list[tuple[str, subprocess.CompletedProcess[str], Path]] = []
    with SimulatorServer(catalogue, download_auth=True, users={user: password}) as sim:
        urlq = ["-vv", "download", "--resto-url", sim.url, "--urlq", "q=%23Central-Italy"]
        cases = {
            "token from env": {"THISME_USERNAME": user, "THISME_PASSWORD": password},
            "token, account from netrc": {"NETRC": str(netrc)},
            "wrong password": {"THISME_USERNAME": user, "THISME_PASSWORD": "wrong-" + password},
            "stale token": {
                "THISME_USERNAME": user,
                "THISME_PASSWORD": password,
                "THISME_TOKEN": "stale.secret-token-value",
            },
        }
        for label, env in cases.items():
            dest = tmp_path / label.replace(" ", "-").replace(",", "")
            done = subprocess.run(
                _cli(*urlq, "--dest", str(dest)),
                capture_output=True,
                text=True,
                timeout=120,
                env={**base_env, "HOME": str(tmp_path), **env},
            )
            runs.append((label, done, dest))
        with FileServer() as files:  # netrc Basic credentials sent to a plain file server
            files.add("n.tif", size=5000)
            source = tmp_path / "items.json"
            item = _item(files, "n.tif")
            missing = _item(files, "n.tif")
            missing["id"] = "missing"
            missing["assets"]["data"]["href"] = f"{files.url}/files/absent.tif?token=hidden-value"
            source.write_bytes(
                orjson.dumps({"type": "FeatureCollection", "features": [item, missing]})
            )
            dest = tmp_path / "basic"
            done = subprocess.run(
                _cli("-vv", "download", str(source), "--dest", str(dest)),
                capture_output=True,
                text=True,
                timeout=120,
                env={**base_env, "HOME": str(tmp_path), "NETRC": str(netrc)},
            )
            runs.append(("netrc basic", done, dest))
            assert files.requests_for("n.tif")[0].authorization, done.stderr
    outcomes = {label: done.returncode for label, done, _ in runs}
    assert outcomes == {
        "token from env": 0,
        "token, account from netrc": 0,
        "wrong password": 1,
        "stale token": 0,
        "netrc basic": 1,  # the absent file fails, the other is downloaded
    }
    secrets = [password, basic, "eyJ", "Bearer ", "secret-token-value", "hidden-value"]
    leaks = []
    for label, done, dest in runs:
        texts = [done.stdout, done.stderr]
        texts += [p.read_text() for p in dest.glob("*.json")]
        joined = ["".join(text.split()) for text in texts]  # rich wraps long lines
        leaks += [(label, s) for text in joined for s in secrets if "".join(s.split()) in text]
    assert leaks == []
    record(
        "input",
        "no password or token in stdout, stderr (-vv), manifest or items.json",
        runs=len(runs),
        errors=len(leaks),
        secrets_searched=len(secrets),
    )
