"""STAC API search benchmark: uvicorn + the embedded SQLite store, measured over HTTP.

Builds ~20k and ~1M item stores from the simulator's catalogue (22 sites, one map per 6 days per
site-orbit, 2016-2025; 1,070 extra synthetic sites for 1M), starts the API in its own process
(``uvicorn thisme_stac_api.app:create_app --factory``) and measures from this process:

  a) bbox of one site + one year, limit 100 (p50)
  b) CQL2 ``thisme:site = X AND sat:orbit_state = 'ascending'``, limit 100 (p50)
  c) paging through all items of one site (items/s), pages of 100 and of 1,000
  d) item by id (p50)
  e) throughput of (a) at concurrency 8 (req/s), and the server's peak RSS

Anchors (stac-fastapi-pgstac 7.2 / pgstac 0.10 on this machine kind) are printed beside ours.

    python benchmarks/search.py                       # 20k and 1M (stores cached in --workdir)
    python benchmarks/search.py --sizes thisme --rounds 20 --stores sqlite pgstac
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

SIZES = {"thisme": "20k", "1m": "1M"}
ANCHORS = {
    "a": ("189", "234"),
    "b": ("290", "1,424 (233 idx)"),
    "c": ("436", "160"),
    "d": ("8.9", "10"),
    "e": ("7.9", "7.9"),
}
TARGETS = {"a": "<= 25 ms", "b": "<= 30 ms", "c": ">= 5,000/s", "d": "<= 3 ms", "e": ">= 80/s"}


def build_store(size: str, path: Path) -> int:
    """Translate the simulator's catalogue straight into a store (no HTTP: not what we time)."""
    from thisme_stac.simulator import GeneratedCatalogue
    from thisme_stac.simulator.server import Resto, _Options
    from thisme_stac.store.sqlite import SQLiteStore
    from thisme_stac.translate.collection import build_collection
    from thisme_stac.translate.item import feature_to_item_dict

    catalogue = GeneratedCatalogue(size=size)
    resto = Resto(catalogue, _Options())
    part = path.with_suffix(".part")
    for leftover in part.parent.glob(part.name + "*"):
        leftover.unlink()
    store = SQLiteStore(part)
    started = time.perf_counter()
    try:
        store.upsert_collection(build_collection(resto.describe()))
        batch: list[dict[str, Any]] = []
        for pos in range(len(catalogue)):
            feature = resto.feature(pos, "http://127.0.0.1:5252", with_sort=False)
            batch.append(feature_to_item_dict(feature))
            if len(batch) == 5000:
                store.upsert_items(batch)
                batch.clear()
        if batch:
            store.upsert_items(batch)
        store._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.close()
    os.replace(part, path)
    print(
        f"built {path} ({len(catalogue):,} items) in {time.perf_counter() - started:.0f} s",
        file=sys.stderr,
    )
    return len(catalogue)


POSTGRES = os.environ.get("THISME_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


def pgstac_copy(sqlite_path: Path, size: str) -> str:
    """The same catalogue in a pgstac database (built once from the SQLite store, then kept)."""
    import psycopg
    from psycopg import sql

    from thisme_stac.copy import copy_store
    from thisme_stac.store import open_store

    name = f"thisme_bench_search_{size}"
    url = f"{POSTGRES}/{name}"
    source = open_store(str(sqlite_path), create=False)
    try:
        wanted = source.count_items()
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
            exists = admin.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                admin.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE template0 LC_COLLATE 'C'").format(
                        sql.Identifier(name)
                    )
                )
        target = open_store(url)
        try:
            if target.count_items() != wanted:
                started = time.perf_counter()
                copy_store(source, target, batch=5000)
                seconds = time.perf_counter() - started
                print(
                    f"loaded {wanted:,} items into pgstac: {wanted / seconds:,.0f} items/s",
                    file=sys.stderr,
                )
        finally:
            target.close()
    finally:
        source.close()
    return url


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


WORKERS = 1


def start_api(store: Path | str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, "THISME_STORE": str(store)}
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "thisme_stac_api.app:create_app", "--factory"),
            *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
            *("--workers", str(WORKERS)),
        ],
        env=env,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "_mgmt/ping", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the API did not start")


def p50_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def timed(client: httpx.Client, url: str, params: dict[str, Any] | None = None) -> float:
    started = time.perf_counter()
    response = client.get(url, params=params)
    response.json()
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"{response.url} -> {response.status_code}: {response.text[:200]}")
    return elapsed


def site_boxes(client: httpx.Client, url: str) -> dict[str, list[float]]:
    """One footprint per THISME site (from a search), for query (a)."""
    collection = client.get(url + "collections/SoilMoisture").json()
    sites = collection["summaries"]["thisme:site"]
    from thisme_stac.simulator.sites import SITES

    named = {s.name: list(s.bbox) for s in SITES}
    return {s: named[s] for s in sites if s in named}


def run(size: str, store: Path | str, rounds: int, seconds: float) -> dict[str, float]:
    process, url = start_api(store)
    server = psutil.Process(process.pid)
    peak_rss = 0.0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak_rss
        while not stop.is_set():
            try:
                family = [server, *server.children(recursive=True)]
                rss = sum(member.memory_info().rss for member in family)
                peak_rss = max(peak_rss, rss / 2**20)
            except psutil.Error:
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    rng = random.Random(7)
    results: dict[str, float] = {}
    try:
        with httpx.Client(timeout=120) as client:
            boxes = site_boxes(client, url)
            sites = sorted(boxes)
            years = list(range(2016, 2026))

            def query_a() -> dict[str, Any]:
                site, year = rng.choice(sites), rng.choice(years)
                return {
                    "bbox": ",".join(map(str, boxes[site])),
                    "datetime": f"{year}-01-01T00:00:00Z/{year}-12-31T23:59:59Z",
                    "limit": 100,
                }

            for _ in range(3):  # warm-up
                timed(client, url + "search", query_a())
            results["a"] = p50_ms([timed(client, url + "search", query_a()) for _ in range(rounds)])
            results["b"] = p50_ms(
                [
                    timed(
                        client,
                        url + "search",
                        {
                            "filter": f"\"thisme:site\" = '{rng.choice(sites)}' "
                            "AND \"sat:orbit_state\" = 'ascending'",
                            "limit": 100,
                        },
                    )
                    for _ in range(rounds)
                ]
            )
            for limit in (100, 1000):
                site = "Central-Italy"
                next_url: str | None = url + "search"
                params: dict[str, Any] | None = {
                    "filter": f"\"thisme:site\" = '{site}'",
                    "limit": limit,
                }
                count = 0
                started = time.perf_counter()
                while next_url:
                    doc = client.get(next_url, params=params).json()
                    params = None
                    count += len(doc["features"])
                    links = [link["href"] for link in doc["links"] if link["rel"] == "next"]
                    next_url = links[0] if links else None
                results[f"c{limit}"] = count / (time.perf_counter() - started)
                results["c_items"] = count
            ids = [
                f["id"]
                for f in client.get(url + "search", params={"limit": 200}).json()["features"]
            ]
            results["d"] = p50_ms(
                [
                    timed(client, f"{url}collections/SoilMoisture/items/{rng.choice(ids)}")
                    for _ in range(rounds)
                ]
            )

        done = 0
        lock = threading.Lock()
        deadline = time.monotonic() + seconds

        def hammer(seed: int) -> None:
            nonlocal done
            local = random.Random(seed)
            with httpx.Client(timeout=120) as client:
                while time.monotonic() < deadline:
                    site, year = local.choice(sites), local.choice(years)
                    timed(
                        client,
                        url + "search",
                        {
                            "bbox": ",".join(map(str, boxes[site])),
                            "datetime": f"{year}-01-01T00:00:00Z/{year}-12-31T23:59:59Z",
                            "limit": 100,
                        },
                    )
                    with lock:
                        done += 1

        started = time.perf_counter()
        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        results["e"] = done / (time.perf_counter() - started)
    finally:
        stop.set()
        watcher.join(1)
        process.terminate()
        process.wait(30)
    results["rss"] = peak_rss
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["thisme", "1m"], choices=list(SIZES))
    parser.add_argument("--workdir", default=os.path.join(os.path.expanduser("~"), ".cache"))
    parser.add_argument("--stores", nargs="+", default=["sqlite"], choices=["sqlite", "pgstac"])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    global WORKERS
    WORKERS = args.workers
    workdir = Path(args.workdir) / "thisme-stac-bench"
    workdir.mkdir(parents=True, exist_ok=True)
    table: list[tuple[str, ...]] = []
    for size in args.sizes:
        store = workdir / f"search-{size}.sqlite"
        if not store.exists():
            build_store(size, store)
        results = {"sqlite": run(size, store, args.rounds, args.seconds)}
        if "pgstac" in args.stores:
            results["pgstac"] = run(size, pgstac_copy(store, size), args.rounds, args.seconds)
        col = 0 if size == "thisme" else 1
        label = SIZES[size]
        rows = [
            ("a", "a) bbox + year, p50 ms", "a", ".1f"),
            ("b", "b) CQL2 site AND orbit, p50 ms", "b", ".1f"),
            ("c100", "c) page one site, items/s (100)", "c", ",.0f"),
            ("c1000", "c) page one site, items/s (1000)", None, ",.0f"),
            ("d", "d) item by id, p50 ms", "d", ".1f"),
            ("e", "e) (a) at concurrency 8, req/s", "e", ".0f"),
            ("rss", "server peak RSS, MB", None, ".0f"),
        ]
        for key, name, anchor, fmt in rows:
            ours = results["sqlite"][key]
            row = [
                label,
                name,
                ANCHORS[anchor][col] if anchor else "",
                TARGETS[anchor] if anchor else ("< 500" if key == "rss" else ""),
                format(ours, fmt),
            ]
            if "pgstac" in results:
                theirs = results["pgstac"][key]
                row += [format(theirs, fmt), f"{theirs / ours:.2f}" if ours else ""]
            table.append(tuple(row))
    header: tuple[str, ...] = ("size", "query", "pgstac anchor", "target (1M)", "sqlite")
    if "pgstac" in args.stores:
        header += ("pgstac (ours)", "pgstac / sqlite")
    widths = [max(len(str(row[i])) for row in [header, *table]) for i in range(len(header))]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-|-".join("-" * w for w in widths))
    for row in table:
        print(" | ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
