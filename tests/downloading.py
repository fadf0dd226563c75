"""Helpers of the downloader tests: items for the file server's files, killing mid-download."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from thisme_stac.simulator.fileserver import FileServer, content_sha256


def file_item(server: FileServer, name: str, *, declared: bool = True) -> dict[str, Any]:
    """A minimal item whose asset ``d`` is one of the file server's files (with its declared
    ``file:size`` and ``file:checksum`` unless ``declared`` is False); its id is the stem."""
    size = server.files[name].size
    asset: dict[str, Any] = {"href": server.file_url(name), "roles": ["data"]}
    if declared:
        asset["file:size"] = size
        asset["file:checksum"] = "1220" + content_sha256(name, size)
    stem = name.rsplit(".", 1)[0]
    return {"type": "Feature", "id": stem, "properties": {}, "links": [], "assets": {"d": asset}}


def kill_when_part_has(process: subprocess.Popen[Any], part: Path, size: int) -> int:
    """``kill -9`` the downloader once ``part`` holds at least ``size`` bytes; the bytes kept."""
    deadline = time.monotonic() + 60
    while not (part.exists() and part.stat().st_size >= size):
        assert time.monotonic() < deadline, f"{part} did not reach {size} bytes"
        assert process.poll() is None, "the downloader ended before the kill"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return part.stat().st_size
