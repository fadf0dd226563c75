"""`thisme-stac demo` end to end, as a new user runs it (own process, stopped with Ctrl-C)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx


def test_demo_harvests_serves_searches_downloads_and_stops(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "thisme_stac",
            "demo",
            "--workdir",
            str(tmp_path),
            "--port",
            "0",
            "--api-port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines: list[str] = []
    try:
        while not any("Serving until Ctrl-C." in line for line in lines):
            line = process.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
        text = "".join(lines)
        api = next(line.split()[-1] for line in lines if line.startswith("STAC API:"))
        assert httpx.get(api, timeout=30).json()["id"] == "thisme"
        assert httpx.get(f"{api}browser/config.js", timeout=30).status_code == 200
        assert "19,488 items in the store" in text
        assert "-> 61 maps" in text
        maps = sorted((tmp_path / "maps").rglob("*.tif"))
        assert len(maps) == 3
        assert all(m.read_bytes()[:2] in (b"II", b"MM") for m in maps)
    finally:
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=60)
    assert process.returncode == 0, rest
    assert "Traceback" not in "".join(lines) + rest
