"""Harvest benchmark: resto 5 simulator (own process) -> harvester (own process) -> SQLite|pgstac.

Prints items/s and the harvester's peak RSS (its page-translating child included, sampled
together) at ~20k and ~1M items beside the anchor
(`pypgstac load` on this machine kind: 5,712-6,652 items/s). Target: >= 10,000 items/s end to end,
peak RSS < 300 MB at 1M and flat as the catalogue grows.

With ``--stores pgstac`` the same run also times the store's write path alone beside
``pypgstac load`` of the same items (the ndjson of the harvested catalogue), each into a fresh
database, each in a process of its own: ``PgstacStore.upsert_items`` in pages of ``--page-size``
with a checkpoint per page (one transaction each: hashes, extents, summaries), against pypgstac's
``Loader.load_items`` (method ``insert``; only the load call is timed). Target: write >= load.

    python benchmarks/harvest.py              # 20k and 1M
    python benchmarks/harvest.py --sizes thisme --stores sqlite pgstac
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

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

    sampler = _RssSampler()
    db = open_store(store)
    try:
        with RestoClient(url) as client, sampler:
            harvester = Harvester(client, db, page_size=page_size)
            report = harvester.harvest(parse_urlq("collection=SoilMoisture"))
    finally:
        db.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    child = resource.getrusage(resource.RUSAGE_CHILDREN)  # the page-translating process, if any
    cpu = usage.ru_utime + usage.ru_stime + child.ru_utime + child.ru_stime
    # together at the same moment (Linux); elsewhere the sum of each process's own peak
    rss = sampler.peak_mb or (usage.ru_maxrss + child.ru_maxrss) / 1024
    result = {**report.to_dict(), "peak_rss_mb": rss, "cpu": cpu}
    print(json.dumps({**result, "child": harvester.translated_in_child}))


class _RssSampler:
    """Peak of this process's RSS plus its children's, sampled every 20 ms (Linux /proc)."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._stop = False
        self._thread: Any = None

    @staticmethod
    def _rss_kb(pid: int | str) -> int:
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def _sample(self) -> None:
        me = os.getpid()
        while not self._stop:
            kids: list[str] = []
            for task in Path(f"/proc/{me}/task").glob("*/children"):
                kids += task.read_text().split()
            total = self._rss_kb(me) + sum(self._rss_kb(k) for k in kids)
            self.peak_mb = max(self.peak_mb, total / 1024)
            time.sleep(0.02)

    def __enter__(self) -> _RssSampler:
        import threading

        if Path("/proc/self/task").is_dir():
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        if self._thread is not None:
            self._thread.join()


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


def export_ndjson(store_url: str, path: Path) -> tuple[int, Path]:
    """The harvested items as ndjson and the collection as JSON beside them."""
    from thisme_stac.store import open_store

    store = open_store(store_url, create=False)
    count = 0
    try:
        with path.open("wb") as out:
            for item in store.iter_items():
                out.write(orjson.dumps(item) + b"\n")
                count += 1
        collection = store.get_collection("SoilMoisture")
    finally:
        store.close()
    collection_path = path.with_suffix(".collection.json")
    collection_path.write_bytes(orjson.dumps(collection))
    return count, collection_path


def _ndjson_items(path: Path) -> list[dict[str, object]]:
    with path.open("rb") as lines:
        return [orjson.loads(line) for line in lines]


def write_worker(kind: str, url: str, ndjson: str, page_size: int) -> None:
    """Time one write of the ndjson into the fresh pgstac database at ``url``; print JSON."""
    from thisme_stac.store import open_store

    path = Path(ndjson)
    store = open_store(url)
    try:
        store.upsert_collection(orjson.loads(path.with_suffix(".collection.json").read_bytes()))
        if kind == "store":
            items = _ndjson_items(path)
            started = time.perf_counter()
            for n in range(0, len(items), page_size):
                store.upsert_items(items[n : n + page_size], checkpoint=("bench", str(n)))
            seconds = time.perf_counter() - started
        else:
            from pypgstac.db import PgstacDB
            from pypgstac.load import Loader, Methods

            db = PgstacDB(dsn=url)
            try:
                started = time.perf_counter()
                Loader(db).load_items(str(path), insert_mode=Methods.insert)
                seconds = time.perf_counter() - started
            finally:
                db.disconnect()  # gives its connection back: close() ends only the idle ones
                db.close()
        count = store.count_items()
    finally:
        store.close()
    print(json.dumps({"items": count, "seconds": seconds}))


def run_writes(size: str, ndjson: Path, page_size: int, repeat: int) -> dict[str, object]:
    """Store write path and ``pypgstac load`` of the same ndjson, each into a fresh database,
    alternated ``repeat`` times; the median rate of each (the machine is shared: noisy)."""
    rates: dict[str, list[float]] = {"store": [], "load": []}
    result: dict[str, object] = {"size": size}
    for _ in range(repeat):
        for kind in ("store", "load"):
            url = fresh_database(f"thisme_bench_write_{kind}_{size}")
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--write-worker",
                    kind,
                    url,
                    str(ndjson),
                    str(page_size),
                ],
                capture_output=True,
                check=True,
            )
            figures = json.loads(out.stdout.decode().strip().splitlines()[-1])
            rates[kind].append(figures["items"] / figures["seconds"])
            result["items"] = figures["items"]
    for kind, values in rates.items():
        result[kind] = statistics.median(values)
        result[f"{kind}_all"] = values
    return result


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
        result["store_url"] = str(store)
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
    parser.add_argument(
        "--write-repeat",
        type=int,
        default=3,
        help="pgstac write / pypgstac load pairs (medians); 0 skips them",
    )
    parser.add_argument("--worker", nargs=3, metavar=("URL", "STORE", "PAGE_SIZE"))
    parser.add_argument("--write-worker", nargs=4, metavar=("KIND", "URL", "NDJSON", "PAGE_SIZE"))
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], int(args.worker[2]))
        return
    if args.write_worker:
        kind, url, ndjson, page_size = args.write_worker
        write_worker(kind, url, ndjson, int(page_size))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="thisme-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = [
        run_size(size, workdir, args.page_size, kind)
        for size in args.sizes
        for kind in args.stores
        for _ in range(args.repeat)
    ]
    writes = []
    for row in rows:
        if args.write_repeat < 1:
            break
        if row["store"] == "pgstac" and all(w["size"] != row["size"] for w in writes):
            ndjson = workdir / f"items-{row['size']}.ndjson"
            export_ndjson(str(row["store_url"]), ndjson)
            writes.append(run_writes(str(row["size"]), ndjson, args.page_size, args.write_repeat))
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
        "include its start-up and its page-translating child); they share the machine's cores."
    )
    if writes:
        print()
        header = (
            f"{'catalogue':>10} {'items':>10} {'store write items/s':>20} "
            f"{'pypgstac load items/s':>22} {'write / load':>13} {'target':>7} "
            f"{'anchor load items/s':>20}"
        )
        print(header)
        print("-" * len(header))
        for w in writes:
            store_rate, load_rate = float(w["store"]), float(w["load"])  # type: ignore[arg-type]
            print(
                f"{w['size']!s:>10} {w['items']:>10,} {store_rate:>20,.0f} {load_rate:>22,.0f} "
                f"{store_rate / load_rate:>13.2f} {'>=1.00':>7} {ANCHOR:>20}"
            )
        for w in writes:
            runs = " / ".join(
                f"{kind} " + ", ".join(f"{v:,.0f}" for v in w[f"{kind}_all"])  # type: ignore[attr-defined]
                for kind in ("store", "load")
            )
            print(f"{w['size']!s:>10} runs (items/s, medians above): {runs}")
    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.workdir is None:  # the stores and ndjson of this run (hundreds of MB at 1M)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
