"""`thisme-stac export` and `thisme-stac import`: a store to and from files.

Registered in ``thisme_stac.cli`` (``import_`` under the name ``import``). Reports go to stderr
(``--json``: the report as JSON on stdout); errors are ThismeErrors with one readable line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated

import orjson
import typer

from thisme_stac.errors import ConfigError
from thisme_stac.export.common import FORMATS, Format

FORMAT_HELP = f"{' | '.join(FORMATS)} (default: from the --out name)."


def _guess_format(out: str) -> Format:
    name = out.lower().removesuffix(".gz")
    if out == "-" or name.endswith((".ndjson", ".jsonl", ".geojsonl")):
        return "ndjson"
    if name.endswith((".parquet", ".geoparquet")):
        return "geoparquet"
    raise ConfigError(
        f"give --format ({', '.join(FORMATS)}): it cannot be told from the name {out!r}"
    )


@contextmanager
def _progress(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.update(task, completed=done)


def _store_url(store: str | None) -> str:
    if store:
        return store
    from thisme_stac.settings import ThismeSettings

    return ThismeSettings().store


def export(
    out: Annotated[
        str,
        typer.Option(
            "--out",
            "-o",
            help="Output: a file for geoparquet/ndjson ('-' = ndjson on stdout), "
            "a folder for static.",
        ),
    ],
    format: Annotated[str | None, typer.Option("--format", "-f", help=FORMAT_HELP)] = None,
    store: Annotated[str | None, typer.Option(help="Store path or URL [env THISME_STORE].")] = None,
    collection: Annotated[
        str | None, typer.Option("--collection", "-c", help="Export this collection only.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an output that exists and is not empty.")
    ] = False,
    json_report: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON on stdout.")
    ] = False,
) -> None:
    """Export a store as stac-geoparquet, ndjson or a static STAC catalogue."""
    from thisme_stac.export.formats import check_format, export_store
    from thisme_stac.store import open_store

    kind = check_format(format) if format else _guess_format(out)
    if json_report and out == "-":
        raise ConfigError("--json and --out - both write to stdout; choose one")
    db = open_store(_store_url(store), create=False)
    try:
        total = db.count_items(collection)
        with _progress(f"export {kind}", total) as progress:
            report = export_store(
                db, kind, out, collection=collection, overwrite=overwrite, progress=progress
            )
    finally:
        db.close()
    if json_report:
        sys.stdout.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    where = "stdout" if out == "-" else out
    print(
        f"exported {report.items:,} items and {report.collections} collection(s) "
        f"as {kind} to {where} in {report.seconds:.1f} s",
        file=sys.stderr,
    )


def import_(
    path: Annotated[str, typer.Argument(help="An export: .parquet, .ndjson or a static folder.")],
    store: Annotated[str | None, typer.Option(help="Store path or URL [env THISME_STORE].")] = None,
    format: Annotated[
        str | None, typer.Option("--format", "-f", help=f"{' | '.join(FORMATS)} (default: guess).")
    ] = None,
    json_report: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON on stdout.")
    ] = False,
) -> None:
    """Import an export (stac-geoparquet, ndjson, static catalogue) into a store (upsert)."""
    from pathlib import Path

    from thisme_stac.export.formats import import_items
    from thisme_stac.store import open_store

    if not Path(path).exists():
        raise ConfigError(f"no such file or folder: {path}")
    db = open_store(_store_url(store))
    try:
        with _progress("import", None) as progress:
            report = import_items(path, db, format=format, progress=progress)
    finally:
        db.close()
    if json_report:
        sys.stdout.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    print(
        f"imported {report.items:,} items ({report.new:,} new, {report.updated:,} updated, "
        f"{report.unchanged:,} unchanged) and {report.collections} collection(s) "
        f"from {path} ({report.format}) in {report.seconds:.1f} s",
        file=sys.stderr,
    )
