"""STAC API load on loopback: mixed queries at a fixed concurrency for a bounded time.

The simulator's catalogue (~20k items, cached in --workdir like benchmarks/search.py) is served
from SQLite and from pgstac, each by the API in its own process (uvicorn). For --seconds, N
concurrent clients (--concurrency) send a mix of:

  bbox + datetime (one site, one year)      CQL2 text: site AND orbit state
  paging: first page + up to 4 next tokens  POST /search: CQL2-JSON + intersects
  item by id                                collections, one collection, queryables

and it stops by itself. Printed per store: requests, errors (non-2xx, transport errors, bodies
that are not a consistent page), requests/s, p50 / p99 latency and the server's peak RSS; per
query kind too. ``--json PATH`` writes the figures. Target: 0 errors.

    python benchmarks/load.py --seconds 60 --concurrency 16
    python benchmarks/load.py --seconds 10 --stores sqlite --json /tmp/load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.search import build_store, pgstac_copy, start_api

KINDS = ("bbox_datetime", "cql2_site_orbit", "paging", "post_search", "item", "collections")
YEARS = tuple(range(2016, 2026))


@dataclass
class Samples:
    """Latencies (seconds) and errors of one query kind."""

    latencies: list[float] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    examples: list[str] = field(default_factory=list)

    def fail(self, what: str) -> None:
        self.errors += 1
        if len(self.examples) < 5:
            self.examples.append(what[:300])


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(int(-(-q * len(ordered) // 100)), 1)
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class Catalogue:
    """What the queries are drawn from: site boxes, orbit states, item ids."""

    boxes: dict[str, list[float]]
    ids: list[str]
    collection: str = "SoilMoisture"


async def _discover(client: httpx.AsyncClient) -> Catalogue:
    from thisme_stac.simulator.sites import SITES

    collection = (await client.get("collections/SoilMoisture")).json()
    sites = set(collection["summaries"]["thisme:site"])
    boxes = {s.name: list(s.bbox) for s in SITES if s.name in sites}
    page = (await client.get("search", params={"limit": 500})).json()
    return Catalogue(boxes=boxes, ids=[f["id"] for f in page["features"]])


def _check_page(response: httpx.Response) -> str | None:
    """Why a search answer is not a consistent page, or None."""
    if response.status_code != 200:
        return f"{response.request.method} {response.url} -> {response.status_code}"
    doc = response.json()
    features = doc.get("features")
    if not isinstance(features, list) or doc.get("numberReturned") != len(features):
        return f"{response.url}: numberReturned does not match the features"
    return None


class Mix:
    """One client's request mix; each call does one operation and records it."""

    def __init__(self, client: httpx.AsyncClient, catalogue: Catalogue, seed: int) -> None:
        self.client = client
        self.cat = catalogue
        self.rng = random.Random(seed)
        self.sites = sorted(catalogue.boxes)

    async def timed(
        self, samples: Samples, send: Callable[[], Awaitable[httpx.Response]]
    ) -> httpx.Response | None:
        samples.requests += 1
        started = time.perf_counter()
        try:
            response = await send()
            body = response.content
        except httpx.HTTPError as err:
            samples.fail(f"{type(err).__name__}: {err}")
            return None
        samples.latencies.append(time.perf_counter() - started)
        if response.status_code >= 300:
            samples.fail(f"{response.url} -> {response.status_code}: {body[:200]!r}")
            return None
        return response

    async def search_page(self, samples: Samples, **params: Any) -> dict[str, Any] | None:
        response = await self.timed(samples, lambda: self.client.get("search", params=params))
        if response is None:
            return None
        problem = _check_page(response)
        if problem:
            samples.fail(problem)
            return None
        doc: dict[str, Any] = response.json()
        return doc

    def _site_year(self) -> tuple[str, int]:
        return self.rng.choice(self.sites), self.rng.choice(YEARS)

    async def bbox_datetime(self, samples: Samples) -> None:
        site, year = self._site_year()
        await self.search_page(
            samples,
            bbox=",".join(map(str, self.cat.boxes[site])),
            datetime=f"{year}-01-01T00:00:00Z/{year}-12-31T23:59:59Z",
            limit=100,
        )

    async def cql2_site_orbit(self, samples: Samples) -> None:
        state = self.rng.choice(["ascending", "descending"])
        await self.search_page(
            samples,
            filter=f"\"thisme:site\" = '{self.rng.choice(self.sites)}' "
            f"AND \"sat:orbit_state\" = '{state}'",
            limit=50,
        )

    async def paging(self, samples: Samples) -> None:
        doc = await self.search_page(
            samples, filter=f"\"thisme:site\" = '{self.rng.choice(self.sites)}'", limit=20
        )
        for _ in range(4):
            links = [link["href"] for link in (doc or {}).get("links", []) if link["rel"] == "next"]
            if not links:
                return
            response = await self.timed(samples, lambda href=links[0]: self.client.get(href))
            if response is None:
                return
            problem = _check_page(response)
            if problem:
                samples.fail(problem)
                return
            doc = response.json()

    async def post_search(self, samples: Samples) -> None:
        site, year = self._site_year()
        west, south, east, north = self.cat.boxes[site]
        polygon = [[west, south], [east, south], [east, north], [west, north], [west, south]]
        body = {
            "intersects": {"type": "Polygon", "coordinates": [polygon]},
            "datetime": f"{year}-01-01T00:00:00Z/..",
            "filter": {
                "op": "between",
                "args": [{"property": "sat:relative_orbit"}, 1, self.rng.randrange(10, 175)],
            },
            "limit": 50,
        }
        response = await self.timed(samples, lambda: self.client.post("search", json=body))
        if response is not None and (problem := _check_page(response)):
            samples.fail(problem)

    async def item(self, samples: Samples) -> None:
        item_id = self.rng.choice(self.cat.ids)
        response = await self.timed(
            samples, lambda: self.client.get(f"collections/{self.cat.collection}/items/{item_id}")
        )
        if response is not None and response.json().get("id") != item_id:
            samples.fail(f"item {item_id}: another item came back")

    async def collections(self, samples: Samples) -> None:
        path = self.rng.choice(["collections", f"collections/{self.cat.collection}", "queryables"])
        await self.timed(samples, lambda: self.client.get(path))


async def _drive(url: str, seconds: float, concurrency: int, seed: int) -> dict[str, Samples]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    results = {kind: Samples() for kind in KINDS}
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        catalogue = await _discover(client)
        deadline = time.monotonic() + seconds

        async def worker(n: int) -> None:
            mix = Mix(client, catalogue, seed * 1000 + n)
            operations = {kind: getattr(mix, kind) for kind in KINDS}
            while time.monotonic() < deadline:
                kind = mix.rng.choice(KINDS)
                await operations[kind](results[kind])

        await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return results


@contextmanager
def peak_rss(pid: int) -> Iterator[dict[str, float]]:
    """Track the peak RSS (MB) of a process and its children while the block runs."""
    process = psutil.Process(pid)
    figures = {"peak_rss_mb": 0.0}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                family = [process, *process.children(recursive=True)]
                rss = sum(member.memory_info().rss for member in family) / 2**20
                figures["peak_rss_mb"] = max(figures["peak_rss_mb"], rss)
            except psutil.Error:
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield figures
    finally:
        stop.set()
        watcher.join(1)


def summarise(results: dict[str, Samples], elapsed: float) -> dict[str, Any]:
    """Totals and per-kind figures: requests, errors, req/s, p50/p99 ms."""

    def figures(requests: int, latencies: list[float], errors: int) -> dict[str, Any]:
        return {
            "requests": requests,
            "errors": errors,
            "requests_per_s": round(requests / elapsed, 1) if elapsed else 0.0,
            "p50_ms": round(percentile(latencies, 50) * 1000, 1),
            "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        }

    every = [v for s in results.values() for v in s.latencies]
    total = figures(
        sum(s.requests for s in results.values()), every, sum(s.errors for s in results.values())
    )
    total["kinds"] = {k: figures(s.requests, s.latencies, s.errors) for k, s in results.items()}
    total["error_examples"] = [e for s in results.values() for e in s.examples][:10]
    total["seconds"] = round(elapsed, 1)
    return total


def measure(url: str, pid: int, seconds: float, concurrency: int, seed: int = 7) -> dict[str, Any]:
    """Drive the API at ``url`` (server process ``pid``) and summarise."""
    with peak_rss(pid) as rss:
        started = time.perf_counter()
        results = asyncio.run(_drive(url, seconds, concurrency, seed))
        elapsed = time.perf_counter() - started
    summary = summarise(results, elapsed)
    summary["concurrency"] = concurrency
    summary["server_peak_rss_mb"] = round(rss["peak_rss_mb"], 1)
    return summary


def measure_store(store: Path | str, seconds: float, concurrency: int) -> dict[str, Any]:
    """Start the API over ``store`` in its own process, measure, stop it."""
    process, url = start_api(store)
    try:
        return measure(url, process.pid, seconds, concurrency)
    finally:
        process.terminate()
        process.wait(30)


def table(results: dict[str, dict[str, Any]]) -> str:
    """One block per store: the totals, then each query kind."""
    header = ("store", "query", "requests", "errors", "req/s", "p50 ms", "p99 ms", "peak RSS MB")
    rows: list[tuple[str, ...]] = []
    for store, figures in results.items():
        rows.append(
            (
                store,
                "all (target: 0 errors)",
                f"{figures['requests']:,}",
                str(figures["errors"]),
                f"{figures['requests_per_s']:.1f}",
                f"{figures['p50_ms']:.1f}",
                f"{figures['p99_ms']:.1f}",
                f"{figures['server_peak_rss_mb']:.0f}",
            )
        )
        for kind, kf in figures["kinds"].items():
            rows.append(
                (
                    "",
                    kind,
                    f"{kf['requests']:,}",
                    str(kf["errors"]),
                    f"{kf['requests_per_s']:.1f}",
                    f"{kf['p50_ms']:.1f}",
                    f"{kf['p99_ms']:.1f}",
                    "",
                )
            )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("-|-".join("-" * w for w in widths))
    lines += [" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--stores", nargs="+", default=["sqlite", "pgstac"])
    parser.add_argument("--size", default="thisme", choices=["thisme", "1m"])
    parser.add_argument("--workdir", default=os.path.join(os.path.expanduser("~"), ".cache"))
    parser.add_argument("--json", dest="json_path", help="write the figures to this file")
    args = parser.parse_args()
    workdir = Path(args.workdir) / "thisme-stac-bench"
    workdir.mkdir(parents=True, exist_ok=True)
    sqlite_path = workdir / f"search-{args.size}.sqlite"
    if not sqlite_path.exists():
        build_store(args.size, sqlite_path)
    results: dict[str, dict[str, Any]] = {}
    for store in args.stores:
        target: Path | str = (
            sqlite_path if store == "sqlite" else pgstac_copy(sqlite_path, args.size)
        )
        load_before = os.getloadavg()[0]
        results[store] = measure_store(target, args.seconds, args.concurrency)
        results[store]["load_before"] = round(load_before, 2)
        results[store]["load_after"] = round(os.getloadavg()[0], 2)
    print(
        f"{args.seconds:.0f} s per store at concurrency {args.concurrency}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(table(results))
    for store, figures in results.items():
        print(
            f"{store}: load average {figures['load_before']} before, {figures['load_after']} after"
        )
        for example in figures["error_examples"]:
            print(f"  error: {example}")
    if args.json_path:
        document = {
            "seconds": args.seconds,
            "concurrency": args.concurrency,
            "size": args.size,
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "stores": results,
        }
        Path(args.json_path).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    if any(figures["errors"] for figures in results.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
