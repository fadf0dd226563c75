"""`thisme-stac`: harvest, search, serve, download, copy, export, import, simulate, demo.

Data goes to stdout (STAC JSON, reports), logs and progress to stderr. Every user error ends as
one ``error: ...`` line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Annotated, cast

import orjson
import typer
from rich.console import Console
from rich.progress import Progress

from thisme_stac.errors import ConfigError, ThismeError
from thisme_stac.harvest import HarvestReport
from thisme_stac.settings import ThismeSettings

if TYPE_CHECKING:
    import click

app = typer.Typer(
    name="thisme-stac",
    help="THISME soil-moisture maps as STAC: harvest resto, serve a STAC API, download products.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stderr = Console(stderr=True)


@app.callback()
def _root(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logs.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors.")] = False,
) -> None:
    from rich.logging import RichHandler

    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    if verbose == 0 and not quiet:
        level = logging.WARNING
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=stderr, show_path=False, show_time=verbose > 0)],
        force=True,
    )
    from thisme_stac.resto.client import RedactUrls

    httpx_log = logging.getLogger("httpx")
    httpx_log.setLevel(logging.WARNING if verbose < 2 else logging.DEBUG)
    if not any(isinstance(f, RedactUrls) for f in httpx_log.filters):
        httpx_log.addFilter(RedactUrls())  # its request lines carry full URLs


def _settings() -> ThismeSettings:
    """Read per command, so that the environment of each invocation counts."""
    return ThismeSettings()


@app.command()
def harvest(
    urlq: Annotated[
        str | None,
        typer.Option(
            "--urlq",
            help='THISME address-bar query, e.g. "q=%23Central-Italy&collection=SoilMoisture".',
        ),
    ] = None,
    resto_url: Annotated[
        str | None, typer.Option(help="resto base URL [env THISME_RESTO_URL].")
    ] = None,
    collection: Annotated[
        str | None,
        typer.Option(help="Harvest this whole resto collection [env THISME_COLLECTION]."),
    ] = None,
    store: Annotated[str | None, typer.Option(help="Store path or URL [env THISME_STORE].")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only products updated since this date-time.")
    ] = None,
    full: Annotated[bool, typer.Option(help="Refetch everything, ignoring the last run.")] = False,
    page_size: Annotated[int | None, typer.Option(min=1, max=500, help="resto page size.")] = None,
    username: Annotated[
        str | None, typer.Option(help="resto account [env THISME_USERNAME].")
    ] = None,
    strict: Annotated[bool, typer.Option(help="Fail when a product had to be skipped.")] = False,
    json_report: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON on stdout.")
    ] = False,
    every: Annotated[
        str | None,
        typer.Option(help="Run again at this interval (e.g. 1d, 6h, 30m) until stopped."),
    ] = None,
) -> None:
    """Harvest a THISME (resto) query into a STAC store, incrementally and resumably."""
    if every is not None:
        interval = parse_interval(every)
        while True:
            try:
                harvest(
                    urlq,
                    resto_url,
                    collection,
                    store,
                    since,
                    full,
                    page_size,
                    username,
                    strict,
                    json_report,
                    None,
                )
            except ThismeError as err:
                # a periodic harvester outlives a failed run: the next run resumes it
                stderr.print(f"error: {' '.join(str(err).split())}")
            since, full = None, False
            stderr.print(f"next harvest in {every}")
            time.sleep(interval)
    from thisme_stac.harvest import Harvester, PageProgress
    from thisme_stac.resto.client import RestoClient
    from thisme_stac.resto.query import parse_urlq
    from thisme_stac.search_params import parse_instant
    from thisme_stac.store import open_store

    settings = _settings()
    base = resto_url or settings.resto_url
    if urlq is not None:
        query = parse_urlq(urlq)
    else:
        query = parse_urlq(f"collection={collection or settings.collection}")
    since_dt = parse_instant(since) if since else None
    with (
        RestoClient(
            base,
            username=username or settings.username,
            password=settings.password,
            token=settings.token,
            timeout=settings.timeout,
            retries=settings.retries,
        ) as client,
        _progress() as progress,
    ):
        db = open_store(store or settings.store)
        try:
            task = progress.add_task("harvest", total=None)

            def on_page(p: PageProgress) -> None:
                progress.update(task, completed=p.fetched, total=p.total_hint)

            harvester = Harvester(
                client,
                db,
                collection_id=collection if urlq is not None else None,
                page_size=page_size or settings.page_size,
                license=settings.license,
                child_min_items=settings.child_min_items or None,
            )
            report = harvester.harvest(query, since=since_dt, full=full, on_page=on_page)
        finally:
            db.close()
    if json_report:
        sys.stdout.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    _print_report(report)
    if not report.complete:
        raise ThismeError(f"harvest incomplete ({report.fetched} items kept): {report.error}")
    if strict and report.skipped:
        raise ThismeError(f"{report.skipped} product(s) skipped (see the report)")


def parse_interval(text: str) -> float:
    """``90s``, ``30m``, ``6h``, ``1d`` -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value = text.strip().lower()
    if len(value) < 2 or value[-1] not in units:
        raise ConfigError(f"--every needs a number and a unit (s, m, h, d), got {text!r}")
    try:
        number = float(value[:-1])
    except ValueError:
        raise ConfigError(f"--every needs a number and a unit (s, m, h, d), got {text!r}") from None
    if not number > 0:
        raise ConfigError(f"--every must be positive, got {text!r}")
    return number * units[value[-1]]


def _progress() -> Progress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
        disable=not stderr.is_terminal,
    )


def _print_report(report: HarvestReport) -> None:
    from rich.table import Table

    table = Table(title=f"harvest of {report.query}", show_header=False)
    for name in ("fetched", "new", "updated", "unchanged", "skipped", "duplicates", "failed"):
        table.add_row(name, str(getattr(report, name)))
    table.add_row("pages", str(report.pages))
    table.add_row("items/s", f"{report.items_per_second:,.0f}")
    if report.resumed:
        table.add_row("resumed", "yes")
    if report.since:
        table.add_row("since", report.since)
    stderr.print(table)
    for reason in report.skipped_reasons[:10]:
        stderr.print(f"[yellow]skipped:[/] {reason}")


@app.command()
def search(
    store: Annotated[str | None, typer.Option(help="Store path or URL [env THISME_STORE].")] = None,
    collection: Annotated[
        list[str] | None, typer.Option("--collection", "-c", help="Collection id (repeatable).")
    ] = None,
    ids: Annotated[list[str] | None, typer.Option("--id", help="Item id (repeatable).")] = None,
    bbox: Annotated[str | None, typer.Option(help="west,south,east,north")] = None,
    intersects: Annotated[str | None, typer.Option(help="GeoJSON geometry.")] = None,
    datetime: Annotated[
        str | None, typer.Option("--datetime", help="Instant or start/end, '..' open.")
    ] = None,
    filter: Annotated[str | None, typer.Option("--filter", help="CQL2 text or JSON.")] = None,
    filter_lang: Annotated[str | None, typer.Option(help="cql2-text | cql2-json")] = None,
    q: Annotated[list[str] | None, typer.Option("--q", help="Free-text term (repeatable).")] = None,
    sortby: Annotated[str | None, typer.Option(help="e.g. -datetime,id")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Page size.")] = 100,
    max_items: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many items.")
    ] = None,
) -> None:
    """Search a store and print a STAC ItemCollection on stdout."""
    from dataclasses import replace

    from thisme_stac.search_params import build_search
    from thisme_stac.store import open_store

    request = build_search(
        collections=collection,
        ids=ids,
        bbox=bbox,
        intersects=intersects,
        datetime_text=datetime,
        filter_text=filter,
        filter_lang=filter_lang,
        q=q,
        sortby=sortby,
        limit=min(limit, max_items) if max_items else limit,
    )
    db = open_store(store or _settings().store, create=False)
    features: list[dict[str, object]] = []
    matched: int | None = None
    try:
        while True:
            page = db.search(request)
            if matched is None:
                matched = page.number_matched
            features.extend(page.items)
            if max_items is not None and len(features) >= max_items:
                del features[max_items:]
                break
            if not page.next_token:
                break
            request = replace(request, token=page.next_token)
    finally:
        db.close()
    collection_doc: dict[str, object] = {"type": "FeatureCollection", "features": features}
    if matched is not None:
        collection_doc["numberMatched"] = matched
    collection_doc["numberReturned"] = len(features)
    sys.stdout.write(orjson.dumps(collection_doc).decode() + "\n")


@app.command()
def demo(
    workdir: Annotated[str, typer.Option(help="Where the demo writes its store.")] = "demo-output",
    port: Annotated[int, typer.Option(help="Simulator port (0 = any free port).")] = 5252,
    api_port: Annotated[int, typer.Option(help="STAC API port (0 = any free port).")] = 8080,
    serve: Annotated[
        bool, typer.Option(help="Keep serving the STAC API until Ctrl-C at the end.")
    ] = True,
) -> None:
    """Offline demo: simulator -> harvest -> search -> STAC API (until Ctrl-C)."""
    from thisme_stac.demo import run_demo

    run_demo(workdir=workdir, port=port, api_port=api_port, serve=serve, console=stderr)


def _register() -> None:
    from thisme_stac.copy import copy
    from thisme_stac.download.command import download
    from thisme_stac.export.command import export, import_
    from thisme_stac.serve import serve
    from thisme_stac.simulator.command import simulate

    registered = {c.name for c in app.registered_commands}
    if "download" not in registered:
        app.command("download")(download)
    if "copy" not in registered:
        app.command("copy")(copy)
    if "export" not in registered:
        app.command("export")(export)
    if "import" not in registered:
        app.command("import")(import_)
    if "simulate" not in registered:
        app.command("simulate")(simulate)
    if "serve" not in registered:
        app.command("serve")(serve)


def _usage_errors() -> tuple[type[click.ClickException], ...]:
    """click's ClickException and the copy of it that recent typer versions raise instead."""
    import click

    bases = [c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"]
    return (click.ClickException, *cast("list[type[click.ClickException]]", bases))


def main(argv: list[str] | None = None) -> None:
    """Console entry point: ThismeError becomes one readable line and exit code 1."""
    import click

    from thisme_stac.resto.query import normalise_argv

    _register()
    args = normalise_argv(list(sys.argv[1:] if argv is None else argv))
    try:
        code = app(args=args, standalone_mode=False, prog_name="thisme-stac")
    except ThismeError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        raise SystemExit(1) from None
    except click.exceptions.Abort:
        stderr.print("aborted")
        raise SystemExit(130) from None
    except _usage_errors() as err:
        err.show()
        raise SystemExit(err.exit_code) from None
    except KeyboardInterrupt:
        stderr.print("interrupted")
        raise SystemExit(130) from None
    raise SystemExit(code if isinstance(code, int) else 0)
