"""Background store writes for a stream of pages: the next pages are prepared meanwhile."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from thisme_stac.errors import StoreError
from thisme_stac.store.base import PreparedWrites, Store, UpsertResult

T = TypeVar("T")
#: Upper bound of one transaction when pages arrive faster than the store commits them.
MAX_GROUP_ITEMS = 2000


class PageWriter(Generic[T]):
    """Upserts pages in one background thread, one transaction at a time, in page order.

    Each transaction carries the checkpoint of its last page. Pages that arrive while a
    transaction runs go together into the next one (up to ``max_items`` items), so a slow store
    gets fewer, larger transactions and a fast one commits every page; a crash leaves whole
    pages and the matching checkpoint. ``on_commit(result, tags)`` runs in the caller's thread
    with the tags of the pages a transaction stored. Use as a context manager; a failed
    transaction raises from the next ``add`` or ``flush``, and nothing after it is written.
    """

    def __init__(
        self,
        store: Store,
        checkpoint_key: str,
        on_commit: Callable[[UpsertResult, list[T]], None],
        *,
        max_items: int = MAX_GROUP_ITEMS,
        prepared: bool = False,
    ) -> None:
        """``prepared``: pages hold rows of the store's ``prepare`` (``PreparedWrites``)."""
        if prepared and not isinstance(store, PreparedWrites):
            raise TypeError(f"{type(store).__name__} takes no prepared rows")
        self.prepared = prepared
        self.store = store
        self.key = checkpoint_key
        self.on_commit = on_commit
        self.max_items = max_items
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="thisme-store")
        self._pending: Future[tuple[UpsertResult, list[T]]] | None = None
        self._items: list[Any] = []
        self._tags: list[T] = []
        self._checkpoint: str | None = None
        self._failed = False

    def __enter__(self) -> PageWriter[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True)

    def add(self, items: list[Any], checkpoint: str, tag: T) -> None:
        """Queue one page (items, or rows if ``prepared``) with the checkpoint to store after it."""
        self._refuse_after_failure()
        self._items.extend(items)
        self._tags.append(tag)
        self._checkpoint = checkpoint
        busy = self._pending is not None and not self._pending.done()
        if busy and len(self._items) < self.max_items:
            return  # the next transaction grows while the store is busy
        self._submit()

    def flush(self) -> None:
        """Store what is queued and wait until it is committed."""
        self._refuse_after_failure()
        if self._checkpoint is not None:
            self._submit()
        self._wait()

    def _refuse_after_failure(self) -> None:
        if self._failed:
            raise StoreError("an earlier batch failed to store; nothing after it is written")

    def _submit(self) -> None:
        self._wait()
        self._refuse_after_failure()
        items, tags, checkpoint = self._items, self._tags, self._checkpoint
        self._items, self._tags, self._checkpoint = [], [], None
        assert checkpoint is not None

        def write() -> tuple[UpsertResult, list[T]]:
            marker = (self.key, checkpoint)
            if self.prepared:
                assert isinstance(self.store, PreparedWrites)
                return self.store.upsert_prepared(items, checkpoint=marker), tags
            return self.store.upsert_items(items, checkpoint=marker), tags

        self._pending = self._pool.submit(write)

    def _wait(self) -> None:
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        try:
            result, tags = pending.result()
        except BaseException:
            self._failed = True
            raise
        self.on_commit(result, tags)
