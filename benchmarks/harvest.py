"""Harvest benchmark: resto 5 simulator (own process) -> harvester (own process) -> SQLite|pgstac.

Prints items/s and the harvester's peak RSS at ~20k and ~1M items beside the anchor
(`pypgstac load` on this machine kind: 5,712-6,652 items/s). Target: >= 10,000 items/s end to end,
peak RSS < 300 MB at 1M and flat as the catalogue grows.

    python benchmarks/harvest.py              # 20k and 1M
    python benchmarks/harvest.py --sizes thisme --stores sqlite pgstac
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ANCHOR = "5,712-6,652"
TARGET_RATE = 10_000
TARGET_RSS_MB = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"simulator exited with {proc.returncode}")
        try:
            if httpx.get(url + "/", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("simulator did not start")


def worker(url: str, store: str, page_size: int) -> None:
    """Run one harvest in this process and print its report + peak RSS as JSON."""
    from thisme_stac.harvest import Harvester
    from thisme_stac.resto.client import RestoClient
    from thisme_stac.resto.query import parse_urlq
    from thisme_stac.store import open_store

    db = open_store(store)
    try:
        with RestoClient(url) as client:
            report = Harvester(client, db, page_size=page_size).harvest(
                parse_urlq("collection=SoilMoisture")
            )
    finally:
        db.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    print(json.dumps({**report.to_dict(), "peak_rss_mb": usage.ru_maxrss / 1024, "cpu": cpu}))


POSTGRES = os.environ.get("THISME_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


def fresh_database(name: str) -> str:
    """Drop and create ``name`` on the machine's PostgreSQL (pgstac is installed on open)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 LC_COLLATE 'C'").format(
                sql.Identifier(name)
            )
        )
    url = f"{POSTGRES}/{name}"
    from thisme_stac.store import open_store

    open_store(url).close()  # migrate before the clock starts
    return url


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def run_size(size: str, workdir: Path, page_size: int, store_kind: str) -> dict[str, object]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "thisme_stac",
            "-q",
            "simulate",
            "--port",
            str(port),
            "--size",
            size,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_ready(url, sim)
        if store_kind == "pgstac":
            store: str | Path = fresh_database(f"thisme_bench_harvest_{size}")
        else:
            store = workdir / f"harvest-{size}.sqlite"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{store}{suffix}").unlink(missing_ok=True)
        sim_cpu = _cpu_seconds(sim.pid)
        load = _load()
        out = subprocess.run(
            [sys.executable, __file__, "--worker", url, str(store), str(page_size)],
            capture_output=True,
            check=True,
        )
        result: dict[str, object] = json.loads(out.stdout.decode().strip().splitlines()[-1])
        result["sim_cpu"] = _cpu_seconds(sim.pid) - sim_cpu
        result["size"] = size
        result["store"] = store_kind
        result["load"] = load
        return result
    finally:
        sim.terminate()
        sim.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["thisme", "1m"])
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--stores", nargs="+", default=["sqlite"], choices=["sqlite", "pgstac"])
    parser.add_argument("--repeat", type=int, default=1, help="Runs per size (all are printed).")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--worker", nargs=3, metavar=("URL", "STORE", "PAGE_SIZE"))
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], int(args.worker[2]))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="thisme-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = [
        run_size(size, workdir, args.page_size, kind)
        for size in args.sizes
        for kind in args.stores
        for _ in range(args.repeat)
    ]
    header = (
        f"{'catalogue':>10} {'store':>7} {'items':>10} {'seconds':>8} {'items/s':>9} "
        f"{'anchor items/s':>15} {'target':>8} {'peak RSS MB':>12} {'RSS target':>10} "
        f"{'harvester CPU s':>15} {'simulator CPU s':>15}  load (1/5/15 min)"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['size']!s:>10} {row['store']!s:>7} {row['fetched']:>10,} {row['seconds']:>8.1f} "
            f"{row['items_per_second']:>9,.0f} {ANCHOR:>15} {'>=' + str(TARGET_RATE):>8} "
            f"{row['peak_rss_mb']:>12.0f} {'<' + str(TARGET_RSS_MB):>10} "
            f"{row['cpu']:>15.1f} {row['sim_cpu']:>15.1f}  {row['load']}"
        )
    print(
        "CPU columns: user+system seconds of each process during the harvest (the harvester's "
        "include its start-up); the two processes share the machine's cores."
    )


if __name__ == "__main__":
    main()
