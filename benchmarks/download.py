"""Download benchmark: thisme-stac's downloader against a one-at-a-time loop and against curl.

(1) 200 files of ~2 MB from the file server with 50 ms added latency per request: the
    downloader (concurrency 8) against a sequential one-file-at-a-time httpx loop, each in its
    own process, same server, same run. Target: >= 4x faster.
(2) one 1 GB generated file on loopback: the downloader's throughput against `curl -s -o` on the
    same file, and the downloader process's peak RSS. Targets: >= 90 % of curl, < 100 MB.
    curl and the downloader alternate (``--rounds``, best of each), each run after ``sync``
    so that neither pays for the other's page-cache writeback.

Times are measured inside each worker process (interpreter start-up and imports excluded;
curl's whole run is timed). The file server runs in its own process. For (2) the CPU seconds (user +
system) per GiB of the downloader, of curl and of the file server are printed too (medians):
the two cores are shared by client and server.

    python benchmarks/download.py            # full sizes
    python benchmarks/download.py --quick    # 40 files, 200 MB
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

SMALL = 2_000_000
LATENCY = 0.05


def _serve(queue: Any, files: int, big: int) -> None:
    from thisme_stac.simulator.fileserver import FileServer

    server = FileServer().start()
    for index in range(files):
        server.add(f"m{index:04d}.tif", size=SMALL, latency=LATENCY)
    server.add("big.tif", size=big)
    queue.put(server.url)
    time.sleep(3600)


def _items(base: str, names: list[str]) -> dict[str, Any]:
    features = [
        {
            "type": "Feature",
            "stac_version": "1.1.0",
            "id": name.removesuffix(".tif"),
            "collection": "bench",
            "geometry": None,
            "properties": {"datetime": "2020-01-01T00:00:00Z"},
            "links": [],
            "assets": {"data": {"href": f"{base}/files/{name}", "roles": ["data"]}},
        }
        for name in names
    ]
    return {"type": "FeatureCollection", "features": features}


def _worker(kind: str, items_path: str, dest: str, concurrency: int) -> None:
    """Run in a child process: print {seconds, rss_mb, bytes} as JSON."""
    from thisme_stac.download import DownloadOptions, download_items

    features = orjson.loads(Path(items_path).read_bytes())["features"]
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    if kind == "ours":
        options = DownloadOptions(dest=Path(dest), concurrency=concurrency, per_host=concurrency)
        result = download_items(features, options)
        if result.failed:
            raise SystemExit(f"failed: {result.failed[0].error}")
        size = result.fetched_bytes
    else:
        size = 0
        Path(dest).mkdir(parents=True, exist_ok=True)
        with httpx.Client(timeout=120) as http:
            for feature in features:
                href = feature["assets"]["data"]["href"]
                target = Path(dest) / href.rsplit("/", 1)[1]
                with http.stream("GET", href) as response, target.open("wb") as handle:
                    for chunk in response.iter_bytes():
                        handle.write(chunk)
                        size += len(chunk)
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss = usage.ru_maxrss / 1024  # KiB on Linux
    cpu = usage.ru_utime - before.ru_utime + usage.ru_stime - before.ru_stime
    print(orjson.dumps({"seconds": seconds, "rss_mb": rss, "bytes": size, "cpu": cpu}).decode())


def _child(kind: str, items: Path, dest: Path, concurrency: int) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--worker", kind, str(items), str(dest), str(concurrency)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{kind} worker failed: {done.stderr.strip()[-500:]}")
    result: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
    return result


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process so far; 0 where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _settle() -> None:
    os.sync()
    time.sleep(1)


def _load() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def _table(rows: list[tuple[str, str, str, str]]) -> None:
    header = ("measure", "target", "measured", "load (1/5/15 min)")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|-" + "-|-".join("-" * w for w in widths) + "-|")
    for row in rows:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 files and 200 MB")
    parser.add_argument("--rounds", type=int, default=3, help="curl/ours rounds for (2)")
    parser.add_argument("--worker", nargs=4, metavar=("KIND", "ITEMS", "DEST", "N"))
    args = parser.parse_args()
    if args.worker:
        kind, items_path, dest, concurrency = args.worker
        _worker(kind, items_path, dest, int(concurrency))
        return
    files = 40 if args.quick else 200
    big = (200 if args.quick else 1000) * 2**20
    rows: list[tuple[str, str, str, str]] = []
    queue: Any = multiprocessing.get_context("spawn").Queue()
    server = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(queue, files, big), daemon=True
    )
    server.start()
    try:
        base = queue.get(timeout=60)
        with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
            work = Path(tmp)
            items = work / "items.json"
            names = [f"m{i:04d}.tif" for i in range(files)]
            items.write_bytes(orjson.dumps(_items(base, names)))
            _settle()
            sequential = _child("sequential", items, work / "seq", 1)
            _settle()
            ours = _child("ours", items, work / "ours", 8)
            assert ours["bytes"] == sequential["bytes"] == files * SMALL
            speedup = sequential["seconds"] / ours["seconds"]
            rows.append(
                (
                    f"(1) {files} x 2 MB, 50 ms latency: speed-up over sequential (concurrency 8)",
                    ">= 4x",
                    f"{speedup:.1f}x ({sequential['seconds']:.1f} s -> {ours['seconds']:.1f} s)",
                    _load(),
                )
            )
            shutil.rmtree(work / "seq")
            shutil.rmtree(work / "ours")

            items.write_bytes(orjson.dumps(_items(base, ["big.tif"])))
            # alternate curl and ours, each after the page cache of the previous file is flushed
            # (else one pays for the other's writeback); best of ``--rounds`` for each
            curl_times: list[float] = []
            runs: list[dict[str, Any]] = []
            curl_cpu: list[float] = []
            served: dict[str, list[float]] = {"curl": [], "ours": []}  # server CPU per run
            curl_sha = ""
            for _ in range(args.rounds):
                curl_path = work / "curl.tif"
                _settle()
                mine, theirs = _children_cpu(), _cpu(server.pid)
                started = time.perf_counter()
                curl = ["curl", "-s", "-o", str(curl_path), f"{base}/files/big.tif"]
                subprocess.run(curl, check=True)
                curl_times.append(time.perf_counter() - started)
                curl_cpu.append(_children_cpu() - mine)
                served["curl"].append(_cpu(server.pid) - theirs)
                curl_sha = _sha(curl_path)
                curl_path.unlink()
                _settle()
                theirs = _cpu(server.pid)
                runs.append(_child("ours", items, work / "big", 1))
                served["ours"].append(_cpu(server.pid) - theirs)
                ours_file = next((work / "big").rglob("big.tif"))
                assert _sha(ours_file) == curl_sha, "downloaded bytes differ from curl's"
                shutil.rmtree(work / "big")
            curl_s = min(curl_times)
            ours = min(runs, key=lambda r: float(r["seconds"]))
            mb = big / 2**20
            ours_s = ours["seconds"]
            rows.append(
                (
                    f"(2) one {mb:,.0f} MiB file: throughput vs curl (best of {args.rounds})",
                    ">= 90 %",
                    f"{curl_s / ours_s:.0%} ({mb / ours_s:,.0f} vs curl {mb / curl_s:,.0f} MiB/s)",
                    _load(),
                )
            )
            rss = f"{max(float(r['rss_mb']) for r in runs):.0f} MB"
            rows.append(("(2) downloader process peak RSS", "< 100 MB", rss, _load()))
            gib = big / 2**30
            cpu = (
                f"ours {statistics.median(float(r['cpu']) for r in runs) / gib:.2f}, "
                f"curl {statistics.median(curl_cpu) / gib:.2f}; server "
                f"{statistics.median(served['ours']) / gib:.2f} / "
                f"{statistics.median(served['curl']) / gib:.2f}"
            )
            rows.append(("(2) CPU s per GiB (server: for ours / for curl)", "", cpu, _load()))
    finally:
        server.kill()
    _table(rows)


if __name__ == "__main__":
    main()
