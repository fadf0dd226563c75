"""Download benchmark: thisme-stac's downloader against a one-at-a-time loop and against curl.

(1) 200 files of ~2 MB, 50 ms added latency per request: `thisme-stac download` (concurrency 8,
    its own process) against a sequential one-file-at-a-time httpx loop, same server, same run.
    Target: >= 4x faster.
(2) one 1 GB file on loopback: our throughput against `curl -s -o` on the same file, and the
    downloader's peak RSS. Targets: >= 90 % of curl, < 100 MB.

    python benchmarks/download.py            # full sizes
    python benchmarks/download.py --quick    # 40 files, 200 MB
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.fileserver import Behaviour, FileServer


def _items(server: FileServer, names: list[str]) -> dict[str, Any]:
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "stac_version": "1.1.0",
                "id": name.removesuffix(".tif"),
                "collection": "bench",
                "geometry": None,
                "properties": {"datetime": "2020-01-01T00:00:00Z"},
                "links": [],
                "assets": {
                    "data": {
                        "href": f"{server.url}/files/{name}",
                        "type": "image/tiff",
                        "roles": ["data"],
                    }
                },
            }
            for name in names
        ],
    }


def _run_downloader(items: Path, dest: Path, concurrency: int) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of `thisme-stac download` in its own process."""
    started = time.perf_counter()
    argv = [sys.executable, "-m", "thisme_stac", "download", str(items), "--dest", str(dest)]
    process = subprocess.Popen([*argv, "--quiet", f"--concurrency={concurrency}"])
    peak = 0.0
    watched = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss / 2**20)
        except psutil.Error:
            break
        time.sleep(0.02)
    if process.returncode != 0:
        raise SystemExit(f"download failed with {process.returncode}")
    return time.perf_counter() - started, peak


def _sequential(server: FileServer, names: list[str], dest: Path) -> float:
    dest.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with httpx.Client(timeout=120) as http:
        for name in names:
            with (
                http.stream("GET", f"{server.url}/files/{name}") as response,
                (dest / name).open("wb") as handle,
            ):
                for chunk in response.iter_bytes():
                    handle.write(chunk)
    return time.perf_counter() - started


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    files = 40 if args.quick else 200
    big = (200 if args.quick else 1000) * 2**20
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp, FileServer() as server:
        work = Path(tmp)
        names = [f"m{i:04d}.tif" for i in range(files)]
        for name in names:
            server.files[name] = Behaviour(size=2_000_000, latency=0.05)
        items = work / "items.json"
        items.write_bytes(orjson.dumps(_items(server, names)))
        sequential = _sequential(server, names, work / "seq")
        ours, _ = _run_downloader(items, work / "ours", 8)
        rows.append(
            (
                f"(1) {files} x 2 MB, 50 ms latency: speed-up over sequential",
                ">= 4x",
                f"{sequential / ours:.1f}x ({sequential:.1f} s -> {ours:.1f} s)",
            )
        )
        shutil.rmtree(work / "seq")
        shutil.rmtree(work / "ours")

        server.files["big.tif"] = Behaviour(size=big)
        items.write_bytes(orjson.dumps(_items(server, ["big.tif"])))
        curl_path = work / "curl.tif"
        started = time.perf_counter()
        subprocess.run(
            ["curl", "-s", "-o", str(curl_path), f"{server.url}/files/big.tif"], check=True
        )
        curl_s = time.perf_counter() - started
        curl_sha = _sha(curl_path)
        curl_path.unlink()
        ours_s, peak = _run_downloader(items, work / "big", 4)
        ours_file = next((work / "big").rglob("big.tif"))
        assert _sha(ours_file) == curl_sha, "downloaded bytes differ from curl's"
        mb = big / 2**20
        rows.append(
            (
                f"(2) one {mb:,.0f} MB file: throughput vs curl",
                ">= 90 %",
                f"{curl_s / ours_s:.0%} ({mb / ours_s:,.0f} vs curl {mb / curl_s:,.0f} MB/s)",
            )
        )
        rows.append(("(2) downloader peak RSS", "< 100 MB", f"{peak:.0f} MB"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    header = ("measure", "target", "thisme-stac")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-|-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
