"""Item stores: embedded SQLite (default) and pgstac (scale)."""

from __future__ import annotations

from thisme_stac.store.base import (
    SearchPage,
    SearchRequest,
    SortField,
    Store,
    UpsertResult,
)

__all__ = ["SearchPage", "SearchRequest", "SortField", "Store", "UpsertResult", "open_store"]


def open_store(url: str, *, create: bool = True) -> Store:
    """Open a store from a path, ``sqlite:///path`` or ``postgresql://`` URL."""
    from thisme_stac.errors import StoreError

    if url.startswith(("postgresql://", "postgres://")):
        raise StoreError("the pgstac store is not available in this version; use a SQLite path")
    from thisme_stac.store.sqlite import SQLiteStore

    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url
    return SQLiteStore(path, create=create)
