"""`thisme-stac demo`: the whole flow offline, against the THISME simulator on 127.0.0.1."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from thisme_stac.harvest import Harvester, HarvestReport
from thisme_stac.resto.client import RestoClient
from thisme_stac.resto.query import parse_urlq
from thisme_stac.search_params import build_search
from thisme_stac.store import open_store

SEED_URLQ = "q=%23Central-Italy&collection=SoilMoisture"


def _report_row(table: Table, label: str, report: HarvestReport) -> None:
    table.add_row(
        label,
        f"{report.fetched:,}",
        f"{report.new:,}",
        f"{report.updated:,}",
        f"{report.unchanged:,}",
        f"{report.skipped:,}",
        f"{report.seconds:.2f}",
        f"{report.items_per_second:,.0f}",
    )


def _free(port: int) -> int:
    """``port`` if it can be bound on 127.0.0.1, else 0 (any free port)."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return 0
    return port


def run_demo(
    *,
    workdir: str = "demo-output",
    port: int = 5252,
    api_port: int = 8080,
    serve: bool = True,
    console: Console,
) -> None:
    """Simulator -> harvest (seed query, then the whole collection) -> search -> sample Item
    -> STAC API over the store, serving until Ctrl-C (``serve=False`` stops after the search)."""
    from thisme_stac.simulator import GeneratedCatalogue, SimulatorServer

    out = Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    store_path = out / "thisme.sqlite"
    console.rule("[bold]thisme-stac demo")
    catalogue = GeneratedCatalogue()
    with SimulatorServer(catalogue, host="127.0.0.1", port=_free(port)) as sim:
        console.print(f"THISME simulator (resto 5.0.0 API) at [cyan]{sim.url}[/]")
        console.print(f"store: [cyan]{store_path}[/]")
        console.print(f'seed query (THISME address bar): -urlq "{SEED_URLQ}"', highlight=False)
        store = open_store(str(store_path))
        table = Table(
            "harvest", "fetched", "new", "updated", "unchanged", "skipped", "s", "items/s"
        )
        try:
            with RestoClient(sim.url) as client:
                harvester = Harvester(client, store)
                seed = harvester.harvest(parse_urlq(SEED_URLQ))
                _report_row(table, "seed query", seed)
                whole = harvester.harvest(parse_urlq("collection=SoilMoisture"))
                _report_row(table, "SoilMoisture", whole)
            console.print(table)
            request = build_search(
                collections=["SoilMoisture"],
                q=["Central-Italy"],
                datetime_text="2020-01-01T00:00:00Z/2020-12-31T23:59:59Z",
                limit=1,
            )
            page = store.search(request)
            console.print(
                f"{store.count_items():,} items in the store; "
                f"Central-Italy in 2020: {page.number_matched} maps"
            )
        finally:
            store.close()
        if page.items:
            console.print("A sample STAC Item (stdout):")
            sys.stdout.write(
                orjson.dumps(page.items[0], option=orjson.OPT_INDENT_2).decode() + "\n"
            )
        console.print("Search it yourself (run the demo again: nothing new is fetched):")
        console.print(
            f"  thisme-stac search --store {store_path} --q Central-Italy "
            "--datetime 2020-01-01/2020-02-01 --limit 5",
            soft_wrap=True,
            highlight=False,
        )
        if serve:
            _serve_api(store_path, _free(api_port), console)


def _search_and_download(url: str, dest: Path, console: Console) -> None:
    """What a user does next: a pystac-client search, then the bulk downloader on its items."""
    from pystac_client import Client

    from thisme_stac.download import DownloadOptions, download_items

    search = Client.open(url).search(
        collections=["SoilMoisture"],
        filter="\"thisme:site\" = 'Central-Italy' AND \"sat:orbit_state\" = 'ascending'",
        datetime="2020-01-01/2020-12-31",
        sortby=["+datetime"],
        max_items=3,
    )
    items = list(search.items_as_dicts())
    console.print(
        f'pystac-client: Client.open("{url}").search(filter="thisme:site = \'Central-Italy\' '
        f"AND sat:orbit_state = 'ascending'\", datetime=2020) -> {search.matched()} maps",
        soft_wrap=True,
        highlight=False,
    )
    result = download_items(items, DownloadOptions(dest=dest))
    for transfer in result.transfers:
        console.print(
            f"downloaded: {transfer.path} ({transfer.size:,} bytes)",
            soft_wrap=True,
            highlight=False,
        )


def _serve_api(store_path: Path, port: int, console: Console) -> None:
    """Run the STAC API until Ctrl-C, after checking it answers a search."""
    import threading
    import time

    import httpx
    import uvicorn

    from thisme_stac.serve import build_app

    app, _ = build_app(str(store_path))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", proxy_headers=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        console.print("[red]the STAC API did not start[/]")
        return
    bound = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{bound}/"
    found = httpx.get(f"{url}search", params={"q": "Central-Italy", "limit": 1}, timeout=30).json()
    console.rule("[bold]STAC API")
    console.print(f"STAC API:  [cyan]{url}[/]")
    console.print(f"OpenAPI:   [cyan]{url}api.html[/]")
    if httpx.get(f"{url}browser/config.js", timeout=30).status_code == 200:
        console.print(f"browser:   [cyan]{url}browser/[/] (stac-browser)")
    console.print(
        f"search:    [cyan]{url}search?q=Central-Italy[/] ({found['numberMatched']:,} maps)"
    )
    _search_and_download(url, store_path.parent / "maps", console)
    console.print("Serving until Ctrl-C.")
    try:
        while thread.is_alive():
            thread.join(0.5)
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        server.should_exit = True
        thread.join(10)
