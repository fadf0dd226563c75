"""Harvester end to end against the resto 5 simulator on 127.0.0.1, into each store.

Every test runs against a real SQLite file and against a real pgstac database on the machine's
PostgreSQL (``tests/pgstac_db.py``: a PostgreSQL that cannot be reached fails these tests, it does
not skip them), and expects the same results from both.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.pgstac_db import cloned_database, template_database
from thisme_stac.harvest import Harvester, checkpoint_key
from thisme_stac.resto.client import RestoClient
from thisme_stac.resto.query import parse_urlq
from thisme_stac.simulator import GeneratedCatalogue, SimulatorServer
from thisme_stac.store import Store, open_store
from thisme_stac.store.sqlite import INDEXES
from thisme_stac.validate import validate_item

SEED = "q=%23Central-Italy&collection=SoilMoisture"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(GeneratedCatalogue(), port=0) as server:
        yield server


@pytest.fixture(scope="module", params=["sqlite", "pgstac"])
def store_kind(request: pytest.FixtureRequest) -> Iterator[tuple[str, str | None]]:
    """The store every test below runs against; for pgstac, a migrated database to clone."""
    if request.param == "sqlite":
        yield "sqlite", None
        return
    with template_database() as template:
        yield "pgstac", template


class Stores:
    """Fresh, empty stores of one kind for one test: SQLite files or pgstac databases."""

    def __init__(self, kind: str, template: str | None, tmp_path: Path, stack: ExitStack) -> None:
        self.kind = kind
        self.template = template
        self.tmp_path = tmp_path
        self.stack = stack

    def new(self, name: str) -> str:
        """The path or URL of a new empty store (``thisme-stac --store`` accepts either)."""
        if self.template is None:
            return str(self.tmp_path / f"{name}.sqlite")
        return self.stack.enter_context(cloned_database(self.template))


@pytest.fixture
def stores(store_kind: tuple[str, str | None], tmp_path: Path) -> Iterator[Stores]:
    with ExitStack() as stack:
        yield Stores(*store_kind, tmp_path, stack)


def _harvest(
    url: str, target: str | Store, urlq: str = SEED, page_size: int = 500, **options: Any
) -> object:
    """Harvest into a store given as a path or URL (opened and closed here) or as a store."""
    store = open_store(target) if isinstance(target, str) else target
    try:
        with RestoClient(url) as client:
            harvester = Harvester(client, store, page_size=page_size, **options)
            return harvester.harvest(parse_urlq(urlq))
    finally:
        if isinstance(target, str):
            store.close()


def _store_items(store_url: str) -> dict[str, bytes]:
    store = open_store(store_url, create=False)
    try:
        return {
            item["id"]: orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
            for item in store.iter_items()
        }
    finally:
        store.close()


def test_seed_query_harvest_equals_ground_truth(
    sim: SimulatorServer, stores: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    target = stores.new("s")
    # a first load into an empty store: SQLite builds its search indexes once at the end
    with caplog.at_level("INFO", logger="thisme_stac.harvest"):
        report = _harvest(sim.url, target, bulk_load_items=1)
    assert ("building the store's search indexes" in caplog.text) == (stores.kind == "sqlite")
    truth = set(sim.catalogue.product_ids(site="Central-Italy"))
    items = _store_items(target)
    assert len(truth) > 500
    assert set(items) == truth
    assert report.fetched == len(truth)  # type: ignore[attr-defined]
    assert report.new == len(truth)  # type: ignore[attr-defined]
    assert report.complete  # type: ignore[attr-defined]
    sample = orjson.loads(next(iter(items.values())))
    validate_item(sample)
    assert sample["properties"]["thisme:site"] == "Central-Italy"
    if stores.kind == "sqlite":
        with sqlite3.connect(target) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type='index'")
            names = {n for (n,) in rows}
        assert names >= set(INDEXES)


def test_rerun_fetches_nothing_and_full_refetch_is_unchanged(
    sim: SimulatorServer, stores: Stores
) -> None:
    path = stores.new("s")
    first = _harvest(sim.url, path)
    second = _harvest(sim.url, path)
    assert second.fetched == 0  # type: ignore[attr-defined]
    store = open_store(path)
    try:
        with RestoClient(sim.url) as client:
            full = Harvester(client, store).harvest(parse_urlq(SEED), full=True)
    finally:
        store.close()
    assert full.fetched == first.fetched  # type: ignore[attr-defined]
    assert full.unchanged == first.fetched  # type: ignore[attr-defined]
    assert full.new == 0


def test_incremental_harvest_fetches_only_new_dates(stores: Stores) -> None:
    catalogue = GeneratedCatalogue(end=datetime(2023, 1, 1, tzinfo=UTC))
    with SimulatorServer(catalogue, port=0) as server:
        path = stores.new("inc")
        first = _harvest(server.url, path)
        before = set(catalogue.product_ids(site="Central-Italy"))
        assert first.fetched == len(before)  # type: ignore[attr-defined]
        catalogue.publish_until(datetime(2023, 3, 1, tzinfo=UTC))
        after = set(catalogue.product_ids(site="Central-Italy"))
        new_ids = after - before
        assert new_ids
        second = _harvest(server.url, path)
        assert second.fetched == len(new_ids)  # type: ignore[attr-defined]
        assert second.new == len(new_ids)  # type: ignore[attr-defined]
        assert second.unchanged == 0  # type: ignore[attr-defined]
        assert second.since is not None  # type: ignore[attr-defined]
        assert set(_store_items(path)) == after


def _failing_harvest(env: dict[str, str], *argv: str) -> str:
    """Run a harvest that must fail cleanly; return its one-line error."""
    proc = subprocess.run(
        [sys.executable, "-m", "thisme_stac", "harvest", *argv],
        env=env,
        capture_output=True,
        timeout=60,
    )
    err = proc.stderr.decode().strip()
    assert proc.returncode != 0
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("error:"), err
    return last


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--urlq", "%zz&&"], "error:"),
        (["--urlq", "q=%23Central-Italy&collection=Unknown"], "Unknown"),
        (["--urlq", SEED, "--since", "yesterday"], "date"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(
    sim: SimulatorServer, stores: Stores, argv: list[str], message: str
) -> None:
    env = {**os.environ, "THISME_RESTO_URL": sim.url, "THISME_STORE": stores.new("bad")}
    last_line = _failing_harvest(env, *argv)
    assert message.lower() in last_line.lower()


def test_unreachable_server_is_a_clean_error(stores: Stores) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "THISME_RESTO_URL": f"http://127.0.0.1:{port}",
        "THISME_STORE": stores.new("x"),
        "THISME_RETRIES": "1",
    }
    assert str(port) in _failing_harvest(env, "--urlq", SEED)


def test_harvest_of_resto2_fixtures(stores: Stores) -> None:
    """A resto 2 server (recorded pages): the harvester falls back to its search route."""
    from tests.conftest import RESTO2
    from tests.restoserver import scripted_server

    base = "https://thisme.example.invalid/resto"
    pages = [
        orjson.loads((RESTO2 / name).read_bytes())
        for name in ("search_page1.json", "search_page2.json", "search_page3_empty.json")
    ]
    describe = orjson.loads((RESTO2 / "collections.json").read_bytes())["collections"][0]
    with scripted_server() as server:

        def rewrite(doc: object) -> bytes:
            return orjson.dumps(doc).replace(base.encode(), server.url.encode())

        server.serve_fixture("/collections/SoilMoisture", rewrite(describe))
        first = "/api/collections/SoilMoisture/search.json?q=%23Central-Italy&maxRecords=3"
        server.serve_fixture(first, rewrite(pages[0]))
        for page, previous in zip(pages[1:], pages[:-1], strict=True):
            href = next(li["href"] for li in previous["properties"]["links"] if li["rel"] == "next")
            server.serve_fixture(href.removeprefix(base), rewrite(page))
        store = open_store(stores.new("r2"))
        try:
            with RestoClient(server.url) as client:
                report = Harvester(client, store, page_size=3).harvest(parse_urlq(SEED))
            items = list(store.iter_items())
            collection = store.get_collection("SoilMoisture")
        finally:
            store.close()
    assert report.complete
    assert report.fetched == 6
    assert report.new == 6
    assert {i["id"] for i in items} == {
        f["properties"]["productIdentifier"] for p in pages for f in p["features"]
    }
    assert all(i["assets"]["data"]["file:checksum"].startswith("d510") for i in items)
    assert collection is not None
    assert collection["title"] == "Theia VHSR Soil Moisture maps"
    for item in items:
        validate_item(item)


def test_skipped_features_are_counted_and_reported(stores: Stores) -> None:
    from tests.restoserver import scripted_server

    page = orjson.loads(
        (
            Path(__file__).parent / "data/resto/resto5-captured/search_thisme_urlq_on_features.json"
        ).read_bytes()
    )
    page["features"][1]["geometry"] = None
    page["features"][4]["properties"]["startDate"] = "not a date"
    with scripted_server() as server:
        server.serve_fixture("/features?q=%23Central-Italy&limit=500", orjson.dumps(page))
        store = open_store(stores.new("skip"))
        try:
            with RestoClient(server.url) as client:
                report = Harvester(client, store).harvest(parse_urlq("q=%23Central-Italy"))
            assert store.count_items() == 4
        finally:
            store.close()
    assert report.complete
    assert report.fetched == 6
    assert report.skipped == 2
    assert any("missing geometry" in r for r in report.skipped_reasons)
    assert any("invalid startDate" in r for r in report.skipped_reasons)


def test_cli_single_dash_urlq_then_search(sim: SimulatorServer, stores: Stores) -> None:
    env = {**os.environ, "THISME_STORE": stores.new("cli")}
    harvest = subprocess.run(
        [
            sys.executable,
            "-m",
            "thisme_stac",
            "harvest",
            "--resto-url",
            sim.url,
            "-urlq",
            SEED,
            "--json",
        ],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert harvest.returncode == 0, harvest.stderr.decode()
    assert orjson.loads(harvest.stdout)["new"] == sim.catalogue.count("Central-Italy")
    search = subprocess.run(
        [
            sys.executable,
            "-m",
            "thisme_stac",
            "search",
            "--q",
            "Central-Italy",
            "--datetime",
            "2020-01-01/2020-02-01",
            "--filter",
            "\"sat:orbit_state\" = 'ascending'",
            "--limit",
            "3",
        ],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert search.returncode == 0, search.stderr.decode()
    collection = orjson.loads(search.stdout)
    expected = [
        pid
        for pid in sim.catalogue.product_ids("Central-Italy")
        if pid.split("_")[2][:8] <= "20200201"
        and pid.split("_")[2][:6] == "202001"
        and pid.endswith("R117")
    ]
    assert collection["numberMatched"] == len(expected)
    assert [f["id"] for f in collection["features"]] == expected[: len(collection["features"])]
    bad = subprocess.run(
        [sys.executable, "-m", "thisme_stac", "search", "--bbox", "1,2,3"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert bad.returncode != 0
    assert bad.stderr.decode().strip().splitlines() == [
        "error: bbox needs 4 or 6 comma-separated numbers, got '1,2,3'"
    ]


def test_periodic_harvest_runs_again_until_stopped(sim: SimulatorServer, stores: Stores) -> None:
    store_path = stores.new("periodic")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "thisme_stac",
            "harvest",
            "--resto-url",
            sim.url,
            "--urlq",
            SEED,
            "--store",
            store_path,
            "--every",
            "1s",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        assert process.stderr is not None
        while sum("next harvest in 1s" in line for line in lines) < 2:
            line = process.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
    assert process.returncode == 130
    db = open_store(store_path)
    try:
        assert db.count_items() == sim.catalogue.count("Central-Italy")
    finally:
        db.close()
    bad = subprocess.run(
        [sys.executable, "-m", "thisme_stac", "harvest", "--every", "soon"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1
    assert bad.stderr.strip() == "error: --every needs a number and a unit (s, m, h, d), got 'soon'"


def test_a_whole_catalogue_harvests_identically_into_both_stores(tmp_path: Path) -> None:
    """Item by item, the collection document and the checkpoint: SQLite and pgstac alike."""
    from tests.pgstac_db import temporary_database

    urlq = "collection=SoilMoisture"
    with (
        SimulatorServer(GeneratedCatalogue(end=datetime(2018, 7, 1, tzinfo=UTC)), port=0) as sim,
        temporary_database() as url,
    ):
        key = checkpoint_key(sim.url, parse_urlq(urlq))
        lite, pg = open_store(str(tmp_path / "h.sqlite")), open_store(url)
        try:
            reports = [_harvest(sim.url, store, urlq) for store in (lite, pg)]
            for report in reports:
                assert report.complete  # type: ignore[attr-defined]
                assert report.new == len(sim.catalogue)  # type: ignore[attr-defined]
            assert [(r.fetched, r.pages) for r in reports] == [  # type: ignore[attr-defined]
                (len(sim.catalogue), reports[0].pages)  # type: ignore[attr-defined]
            ] * 2
            assert pg.count_items() == lite.count_items() == len(sim.catalogue)
            for got, want in zip(pg.iter_items(), lite.iter_items(), strict=True):
                assert got == want
            assert pg.get_collection("SoilMoisture") == lite.get_collection("SoilMoisture")
            assert pg.get_checkpoint(key) == lite.get_checkpoint(key)
            for store in (lite, pg):
                with RestoClient(sim.url) as client:
                    full = Harvester(client, store).harvest(parse_urlq(urlq), full=True)
                assert (full.new, full.updated, full.unchanged) == (0, 0, len(sim.catalogue))
        finally:
            pg.close()
            lite.close()


def test_pages_translated_in_a_child_process_store_the_same(
    sim: SimulatorServer, stores: Stores
) -> None:
    """A harvest that hands its search over to a child process after the first page stores
    exactly what a harvest in one process stores, with the same report."""
    alone, shared = stores.new("alone"), stores.new("shared")
    one = _harvest(sim.url, alone, page_size=40, child_min_items=None)
    store = open_store(shared)
    try:
        with RestoClient(sim.url) as client:
            harvester = Harvester(
                client, store, page_size=40, child_min_items=1, wait_for_child=True
            )
            two = harvester.harvest(parse_urlq(SEED))
    finally:
        store.close()
    assert harvester.translated_in_child
    assert _store_items(shared) == _store_items(alone)
    keys = ("fetched", "new", "updated", "unchanged", "skipped", "duplicates", "pages", "complete")
    assert {k: getattr(two, k) for k in keys} == {k: getattr(one, k) for k in keys}
    with RestoClient(sim.url) as client:
        key = checkpoint_key(client.base_url, parse_urlq(SEED))
    assert _checkpoint(alone, key) == _checkpoint(shared, key)


def _checkpoint(store_url: str, key: str) -> str | None:
    store = open_store(store_url, create=False)
    try:
        return store.get_checkpoint(key)
    finally:
        store.close()


def test_child_process_errors_and_logs_reach_the_harvest(
    stores: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    """resto failing while a child process fetches: its retries are logged here, the harvest
    stops with the same one-line error, keeps the committed pages, and a rerun resumes."""
    from thisme_stac.simulator import Faults

    catalogue = GeneratedCatalogue()
    truth = set(catalogue.product_ids(site="Central-Italy"))
    target = stores.new("fail")
    with SimulatorServer(catalogue) as server:
        store = open_store(target)
        try:

            def on_page(progress: object) -> None:
                if getattr(progress, "pages", 0) >= 3 and not failing:  # the child pages now
                    failing.append(True)
                    server.inject(Faults.parse("5xx=1.0,seed=3"))

            failing: list[bool] = []

            with (
                caplog.at_level("WARNING", logger="thisme_stac"),
                RestoClient(server.url, retries=2, backoff=0.01) as client,
            ):
                harvester = Harvester(
                    client, store, page_size=10, child_min_items=1, wait_for_child=True
                )
                report = harvester.harvest(parse_urlq(SEED), on_page=on_page)
            kept = store.count_items()
        finally:
            store.close()
        assert harvester.translated_in_child
        assert not report.complete
        assert report.error is not None
        assert re.search(r"resto answered 5\d\d for http", report.error)
        assert "retrying" in caplog.text  # the child's own log line, re-emitted here
        assert 3 * 10 <= kept < len(truth)
        assert kept % 10 == 0
        server.inject(None)
        rerun = _harvest(server.url, target, page_size=10, child_min_items=1)
    assert rerun.resumed  # type: ignore[attr-defined]
    assert rerun.complete  # type: ignore[attr-defined]
    assert rerun.new == len(truth) - kept  # type: ignore[attr-defined]
    assert set(_store_items(target)) == truth
