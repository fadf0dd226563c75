"""`thisme-stac download`: the THISMEDownload.py workflow, and any STAC search, on every OS."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from pydantic import SecretStr
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as RichProgress
from rich.table import Table

from thisme_stac.download.core import (
    Downloader,
    DownloadOptions,
    DownloadResult,
    NetrcAuth,
    Progress,
    Transfer,
    netrc_auth,
    run_async,
)
from thisme_stac.download.layout import DEFAULT_LAYOUT
from thisme_stac.errors import ConfigError, DownloadError
from thisme_stac.resto.client import RestoClient, redact
from thisme_stac.settings import ThismeSettings

stderr = Console(stderr=True)


class RichBars(Progress):
    """One bar on stderr: files done, bytes done of the total, rate and ETA."""

    def __init__(self, console: Console, enabled: bool) -> None:
        self.bars = RichProgress(
            TextColumn("[bold]{task.fields[files]}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not enabled,
        )
        self.done = 0
        self.files = 0
        self.task = self.bars.add_task("download", total=None, files="0/? files")

    def planned(self, files: int, total_bytes: int | None) -> None:
        self.files = files
        self.bars.update(self.task, total=total_bytes, files=f"0/{files} files")

    def sized(self, total_bytes: int) -> None:
        self.bars.update(self.task, total=total_bytes)

    def advance(self, nbytes: int) -> None:
        self.bars.advance(self.task, nbytes)

    def finished(self, transfer: Transfer) -> None:
        self.done += 1
        self.bars.update(self.task, files=f"{self.done}/{self.files} files")


def _resto_client(
    base: str, username: str | None, settings: ThismeSettings, netrc: NetrcAuth | None
) -> RestoClient:
    """A resto client with the account from --username/env, else from netrc, else anonymous."""
    user = username or settings.username
    password = settings.password
    found = netrc.credentials(urlsplit(base).hostname or "") if netrc is not None else None
    if user is None and found is not None:
        user, password = found[0], SecretStr(found[1])
    elif user is not None and password is None:
        if found is None or found[0] != user:
            raise ConfigError(f"no password for {user}: set THISME_PASSWORD (or use ~/.netrc)")
        password = SecretStr(found[1])
    return RestoClient(
        base,
        username=user,
        password=password,
        token=settings.token,
        timeout=settings.timeout,
        retries=settings.retries,
    )


def _summary(result: DownloadResult, dry_run: bool) -> None:
    table = Table(title="download" + (" (dry run)" if dry_run else ""), show_header=False)
    if dry_run:
        table.add_row("files", f"{len(result.transfers):,}")
        sizes = [t.size for t in result.transfers]
        known = sum(s for s in sizes if s is not None)
        unknown = sum(s is None for s in sizes)
        total = f"{known:,} bytes" + (f" (+{unknown} of unknown size)" if unknown else "")
        table.add_row("total", total)
    else:
        for status in ("downloaded", "skipped", "failed"):
            table.add_row(status, f"{result.count(status):,}")
        table.add_row("bytes fetched", f"{result.fetched_bytes:,}")
        table.add_row("seconds", f"{result.seconds:.1f}")
    stderr.print(table)


def download(
    source: Annotated[
        str | None, typer.Argument(help="An ItemCollection file, or - for stdin.")
    ] = None,
    urlq: Annotated[
        str | None,
        typer.Option(
            help='THISME address-bar query, e.g. "q=%23Central-Italy&collection=SoilMoisture".'
        ),
    ] = None,
    resto_url: Annotated[
        str | None, typer.Option(help="resto base URL (env THISME_RESTO_URL).")
    ] = None,
    stac: Annotated[str | None, typer.Option(help="A STAC API root URL to search.")] = None,
    collection: Annotated[list[str] | None, typer.Option(help="STAC collection(s).")] = None,
    bbox: Annotated[str | None, typer.Option(help="west,south,east,north")] = None,
    datetime: Annotated[str | None, typer.Option(help="RFC 3339 instant or interval.")] = None,
    filter: Annotated[str | None, typer.Option("--filter", help="CQL2 text filter.")] = None,
    q: Annotated[str | None, typer.Option(help="Free-text search.")] = None,
    max_items: Annotated[int | None, typer.Option(min=1, help="Stop after N items.")] = None,
    asset: Annotated[
        list[str] | None,
        typer.Option(help="Asset key to fetch, repeatable (default: role data, else all)."),
    ] = None,
    dest: Annotated[Path, typer.Option(help="Destination directory.")] = Path(),
    layout: Annotated[
        str,
        typer.Option(
            help="Path template under --dest; fields: collection site id asset filename year "
            "platform."
        ),
    ] = DEFAULT_LAYOUT,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Parallel transfers.")] = 4,
    retries: Annotated[int, typer.Option(min=1, help="Attempts per file.")] = 5,
    dry_run: Annotated[
        bool, typer.Option(help="Show what would be fetched, fetch nothing.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress and no summary.")] = False,
    username: Annotated[
        str | None,
        typer.Option(help="resto account (env THISME_USERNAME); password from THISME_PASSWORD."),
    ] = None,
) -> None:
    """Download every product of a THISME query, a STAC search or an ItemCollection.

    Parallel, resumable (.part + HTTP Range), verified (file:size, file:checksum), atomic.
    Writes manifest.json and items.json (hrefs to the local files) into --dest.
    """
    from thisme_stac.download import sources

    settings = ThismeSettings()
    chosen = [x for x in (source, urlq, stac) if x]
    if len(chosen) != 1:
        raise ConfigError("give exactly one of: an ItemCollection file (or -), --urlq, --stac")
    options = DownloadOptions(
        dest=dest,
        layout=layout,
        assets=tuple(asset or ()),
        concurrency=concurrency,
        per_host=concurrency,
        retries=retries,
        timeout=settings.timeout,
        dry_run=dry_run,
    )
    base = resto_url or settings.resto_url
    netrc = netrc_auth()
    wants_resto = urlq is not None or username or settings.username or settings.token
    resto = _resto_client(base, username, settings, netrc) if wants_resto else None
    try:
        items: list[dict[str, Any]]
        if urlq is not None:
            assert resto is not None
            items = list(sources.resto_items(resto, urlq, page_size=settings.page_size))
        elif stac is not None:
            items = list(
                sources.stac_items(
                    stac,
                    collections=collection or (),
                    bbox=bbox,
                    datetime=datetime,
                    filter_text=filter,
                    q=q,
                    max_items=max_items,
                    timeout=settings.timeout,
                )
            )
        else:
            assert source is not None
            items = sources.file_items(source)
        if max_items is not None:
            items = items[:max_items]

        bars = RichBars(stderr, enabled=not quiet and stderr.is_terminal)
        downloader = Downloader(
            options,
            token_provider=sources.resto_token_provider(resto) if resto is not None else None,
            token_hosts=[urlsplit(base).netloc] if resto is not None else [],
            progress=bars,
            auth=netrc,
        )
        with bars.bars:
            result = run_async(downloader.run(items))
    finally:
        if resto is not None:
            resto.close()
    if dry_run:
        root = dest.resolve()
        for transfer in result.transfers:
            size = str(transfer.size) if transfer.size is not None else "?"
            where = transfer.path.relative_to(root).as_posix()
            sys.stdout.write(f"{size}\t{where}\t{redact(transfer.href)}\n")
    if not quiet:
        _summary(result, dry_run)
    if result.failed:
        names = ", ".join(f"{t.item_id}/{t.key} ({t.error})" for t in result.failed[:5])
        more = f" and {len(result.failed) - 5} more" if len(result.failed) > 5 else ""
        raise DownloadError(f"{len(result.failed)} file(s) failed: {names}{more}")
