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

#: What the pgstac store imports beyond the library's own dependencies (imported lazily, so
#: that the library works without them).
PGSTAC_MODULES = frozenset({"psycopg", "psycopg_pool", "pypgstac", "hydraters"})


def open_store(url: str, *, create: bool = True) -> Store:
    """Open a store from a path, ``sqlite:///path`` or ``postgresql://`` URL."""
    from thisme_stac.errors import StoreError

    if url.startswith(("postgresql://", "postgres://")):
        try:
            from thisme_stac.store.pgstac import PgstacStore
        except ModuleNotFoundError as err:
            if (err.name or "").split(".")[0] not in PGSTAC_MODULES:
                raise
            raise StoreError(
                f"the pgstac store needs the {err.name} package: "
                "pip install 'pypgstac[psycopg]>=0.10,<0.11'"
            ) from None
        return PgstacStore(url, create=create)
    from thisme_stac.store.sqlite import SQLiteStore

    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url
    return SQLiteStore(path, create=create)
