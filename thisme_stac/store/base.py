"""The ``Store`` protocol: what the harvester writes to and the STAC API reads from.

Items and collections cross this boundary as plain STAC JSON dicts (``pystac.Item.to_dict()``
shape), so that stores stay independent of pystac object graphs and can stream fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

JSON = dict[str, Any]
SortDirection = Literal["asc", "desc"]


@dataclass(frozen=True, slots=True)
class SortField:
    """One ``sortby`` term: a property name (``datetime``, ``id``, ``properties.x`` or ``x``)."""

    field: str
    direction: SortDirection = "asc"


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """A validated item search. Every field is optional; ``None`` means "no constraint".

    ``datetime`` is a closed interval with optional open ends (``(start, None)`` = from start).
    ``filter`` is CQL2-JSON (text is converted by the caller with the ``cql2`` package).
    ``q`` holds free-text terms, OR-ed, matched against keywords, title and description.
    ``token`` is an opaque keyset-pagination token returned by a previous page.
    """

    collections: Sequence[str] | None = None
    ids: Sequence[str] | None = None
    bbox: Sequence[float] | None = None
    intersects: Mapping[str, Any] | None = None
    datetime: tuple[datetime | None, datetime | None] | None = None
    filter: Mapping[str, Any] | None = None
    q: Sequence[str] | None = None
    sortby: Sequence[SortField] | None = None
    limit: int = 10
    token: str | None = None


@dataclass(slots=True)
class SearchPage:
    """One page of results; ``next_token`` is ``None`` on the last page."""

    items: list[JSON]
    next_token: str | None = None
    number_matched: int | None = None


@dataclass(slots=True)
class UpsertResult:
    """What one transactional batch did, item by item."""

    new: int = 0
    updated: int = 0
    unchanged: int = 0
    new_ids: list[str] = field(default_factory=list)
    updated_ids: list[str] = field(default_factory=list)


@runtime_checkable
class Store(Protocol):
    """A STAC item store. Implementations: ``SQLiteStore`` (embedded), pgstac (scale).

    All writes are transactional: a batch and its checkpoint are stored together or not at all.
    Invalid search input raises ``StoreError`` subclasses with a message fit for an HTTP 400.
    """

    url: str

    # --- collections -------------------------------------------------------------------------
    def upsert_collection(self, collection: JSON) -> None: ...
    def get_collection(self, collection_id: str) -> JSON | None: ...
    def list_collections(self) -> list[JSON]: ...
    def delete_collection(self, collection_id: str) -> bool: ...

    # --- items -------------------------------------------------------------------------------
    def upsert_items(
        self,
        items: Iterable[JSON],
        *,
        checkpoint: tuple[str, str] | None = None,
    ) -> UpsertResult:
        """Insert or replace items by (collection, id) in one transaction.

        ``checkpoint`` = ``(key, value)`` is written in the same transaction, so a crash leaves
        either the whole batch and its checkpoint, or neither. Collection extents are kept current.
        """
        ...

    def get_item(self, collection_id: str, item_id: str) -> JSON | None: ...
    def delete_item(self, collection_id: str, item_id: str) -> bool: ...
    def count_items(self, collection_id: str | None = None) -> int: ...
    def iter_items(self, collection_id: str | None = None) -> Iterable[JSON]:
        """All items in (collection, datetime, id) order, streamed."""
        ...

    # --- search ------------------------------------------------------------------------------
    def search(self, request: SearchRequest) -> SearchPage: ...
    def queryables(self, collection_id: str | None = None) -> JSON:
        """JSON Schema of the properties usable in ``filter`` (OGC API Features Part 3)."""
        ...

    # --- harvest bookkeeping -----------------------------------------------------------------
    def get_checkpoint(self, key: str) -> str | None: ...
    def set_checkpoint(self, key: str, value: str | None) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class DeferredIndexes(Protocol):
    """Optional store capability: build secondary indexes once after a first bulk load."""

    def defer_indexes(self) -> bool:
        """Drop the secondary indexes if the store is empty; True if it did."""
        ...

    def ensure_indexes(self) -> None:
        """Create whichever secondary indexes are missing."""
        ...


@runtime_checkable
class PreparedWrites(Protocol):
    """Optional store capability: items become rows in a pure, picklable function (``prepare``,
    a module-level function, so it can run in another process), then rows are written.

    ``upsert_prepared(prepare(items))`` does what ``upsert_items(items)`` does; lists of rows
    can be concatenated.
    """

    @property
    def prepare(self) -> Callable[[list[JSON]], list[Any]]: ...

    def upsert_prepared(
        self, rows: list[Any], *, checkpoint: tuple[str, str] | None = None
    ) -> UpsertResult: ...
