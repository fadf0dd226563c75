"""`thisme-stac copy`: move a catalogue between stores (SQLite <-> pgstac), idempotently."""

from __future__ import annotations

import sys
from itertools import islice
from typing import Annotated

import typer

from thisme_stac.store import Store, UpsertResult, open_store

BATCH = 2000


def copy_store(source: Store, target: Store, *, batch: int = BATCH) -> UpsertResult:
    """Every collection, then every item, upserted in batches (one transaction each)."""
    total = UpsertResult()
    for collection in source.list_collections():
        target.upsert_collection(collection)
    items = iter(source.iter_items())
    while chunk := list(islice(items, batch)):
        result = target.upsert_items(chunk)
        total.new += result.new
        total.updated += result.updated
        total.unchanged += result.unchanged
    return total


def copy(
    source: Annotated[str, typer.Option("--from", help="Store to read (path or postgresql://).")],
    target: Annotated[str, typer.Option("--to", help="Store to write (path or postgresql://).")],
) -> None:
    """Copy every collection and item from one store to another (a rerun changes nothing)."""
    if source == target:
        from thisme_stac.errors import ConfigError

        raise ConfigError("--from and --to name the same store")
    src = open_store(source, create=False)
    try:
        dst = open_store(target)
        try:
            result = copy_store(src, dst)
        finally:
            dst.close()
    finally:
        src.close()
    print(
        f"copied: {result.new:,} new, {result.updated:,} updated, {result.unchanged:,} unchanged",
        file=sys.stderr,
    )
