"""Harvester: resto pages -> STAC items -> store; a transaction per page, resumable, incremental.

State lives in the store as one checkpoint per (resto URL, query), written in the same transaction
as each page, so a harvest killed at any moment resumes at the first page not yet committed:

``{"next": <next page URL or null>, "hwm": <updated high-water mark of the last complete run>,
"run_max": <largest updated seen in the current run>}``

An incremental run asks resto for ``updated >= hwm + 1 µs`` only (resto 5 ``updated`` filter).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from thisme_stac.errors import RestoError
from thisme_stac.harvest_pages import (
    CHILD_MIN_ITEMS,
    TranslatedPage,
    TranslatedPages,
    parse_time,
    prefetch,
    resto_time,
)
from thisme_stac.resto.client import RestoClient
from thisme_stac.resto.query import RestoQuery
from thisme_stac.store.base import (
    JSON,
    DeferredIndexes,
    PreparedWrites,
    Store,
    UpsertResult,
)
from thisme_stac.store.writer import PageWriter
from thisme_stac.translate.collection import build_collection

log = logging.getLogger("thisme_stac.harvest")

MAX_REPORTED_ERRORS = 50
#: A first harvest of at least this many items (resto's announced total) builds indexes at the end.
BULK_LOAD_ITEMS = 100_000


@dataclass(slots=True)
class HarvestReport:
    """What a harvest run did. ``complete`` is False when it stopped on an error."""

    query: str
    collection: str
    fetched: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    duplicates: int = 0
    failed: int = 0
    pages: int = 0
    resumed: bool = False
    since: str | None = None
    complete: bool = False
    error: str | None = None
    seconds: float = 0.0
    skipped_reasons: list[str] = field(default_factory=list)

    @property
    def items_per_second(self) -> float:
        return self.fetched / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> JSON:
        data = asdict(self)
        data["items_per_second"] = round(self.items_per_second, 1)
        data["seconds"] = round(self.seconds, 3)
        return data


@dataclass(slots=True, frozen=True)
class PageProgress:
    """Sent to the progress callback after each committed page."""

    pages: int
    fetched: int
    total_hint: int | None


def checkpoint_key(resto_url: str, query: RestoQuery) -> str:
    """Checkpoint name of one (server, query) pair."""
    return f"harvest:{resto_url.rstrip('/')}:{query.key()}"


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Run the cyclic garbage collector less often while pages stream through.

    Pages are trees of fresh dicts and lists without cycles; with the default threshold the
    collector scans them over and over (10-15% of a harvest's CPU). Start-up objects are frozen
    out of its scans too. The previous settings come back afterwards.
    """
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(threshold[0], 50_000), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


class _FirstLoad:
    """A first load of a large catalogue into an empty store: secondary indexes come at the end.

    Updating them item by item costs more than building them once when keys arrive in random
    order (``benchmarks/harvest.py``: about a third of the CPU at 1M items, nothing to win at 20k).
    """

    def __init__(self, store: Store, min_items: int) -> None:
        self.store = store
        self.min_items = min_items
        self.deferred = False

    def __enter__(self) -> _FirstLoad:
        return self

    def consider(self, total_hint: int | None) -> None:
        """Before the first write: defer the indexes if resto announces a large result."""
        if (total_hint or 0) >= self.min_items and isinstance(self.store, DeferredIndexes):
            self.deferred = self.store.defer_indexes()

    def __exit__(self, *exc: object) -> None:
        if self.deferred and isinstance(self.store, DeferredIndexes):
            log.info("building the store's search indexes")
            try:
                self.store.ensure_indexes()
            except Exception as err:  # opening the store for writing builds them too
                log.warning("search indexes not built yet: %s", err)


class Harvester:
    """Pages through a resto search and upserts the translated items into a store."""

    def __init__(
        self,
        client: RestoClient,
        store: Store,
        *,
        collection_id: str | None = None,
        page_size: int = 500,
        license: str = "other",
        bulk_load_items: int = BULK_LOAD_ITEMS,
        child_min_items: int | None = CHILD_MIN_ITEMS,
        wait_for_child: bool = False,
    ) -> None:
        self.client = client
        self.child_min_items = child_min_items
        self.wait_for_child = wait_for_child
        self.bulk_load_items = bulk_load_items
        self.store = store
        self.collection_id = collection_id
        self.page_size = page_size
        self.license = license
        #: whether the last harvest's pages were translated in a child process
        self.translated_in_child = False

    def harvest(
        self,
        query: RestoQuery,
        *,
        since: datetime | None = None,
        full: bool = False,
        on_page: Callable[[PageProgress], None] | None = None,
    ) -> HarvestReport:
        """Run one harvest. Resumes an interrupted run; otherwise fetches what is new since the
        last complete run (``full=True`` refetches everything, ``since`` overrides the mark)."""
        collection = self.collection_id or query.collection or "SoilMoisture"
        report = HarvestReport(query=query.key(), collection=collection)
        started = time.perf_counter()
        key = checkpoint_key(self.client.base_url, query)
        state = self._load_state(key)
        start_url: str | None = None
        extra: dict[str, str] = {}
        if state.get("next") and not full and since is None:
            start_url = str(state["next"])
            report.resumed = True
            log.info("resuming an interrupted harvest at %s", start_url)
        else:
            mark = since if since is not None else (None if full else parse_time(state.get("hwm")))
            if mark is not None:
                if since is None:
                    mark += timedelta(microseconds=1)
                extra["updated"] = resto_time(mark)
                report.since = extra["updated"]
            state = {"next": None, "hwm": state.get("hwm"), "run_max": None}

        try:
            self._ensure_collection(collection, query)
            prepare = self.store.prepare if isinstance(self.store, PreparedWrites) else None
            pages = TranslatedPages(
                self.client,
                query,
                collection,
                limit=self.page_size,
                start_url=start_url,
                extra_params=extra,
                child_min_items=self.child_min_items,
                wait_for_child=self.wait_for_child,
                prepare=prepare,
            )

            def committed(result: UpsertResult, tags: list[tuple[int, int, int | None]]) -> None:
                """Count a committed transaction; tags = (page number, features, total hint)."""
                report.fetched += sum(features for _, features, _ in tags)
                report.new += result.new
                report.updated += result.updated
                report.unchanged += result.unchanged
                if on_page is not None:
                    number, _, total = tags[-1]
                    on_page(PageProgress(number, report.fetched, total))

            self.translated_in_child = False
            with (
                _FirstLoad(self.store, self.bulk_load_items) as first_load,
                PageWriter(self.store, key, committed, prepared=prepare is not None) as writer,
                _fewer_collections(),
            ):
                try:
                    for page in prefetch(pages, on_close=pages.close):
                        report.pages += 1
                        if report.pages == 1 and not report.resumed:
                            first_load.consider(page.total_results)
                        self._count(page, report, state)
                        state["next"] = page.next_url
                        tag = (report.pages, page.fetched, page.total_results)
                        writer.add(page.items, orjson.dumps(state).decode(), tag)
                except RestoError:
                    writer.flush()  # the pages fetched before the error are kept
                    raise
                finally:
                    self.translated_in_child = pages.in_child
                writer.flush()
        except RestoError as err:
            report.error = str(err)
            report.failed += 1
            report.seconds = time.perf_counter() - started
            log.error("harvest stopped: %s", err)
            return report

        marks = [t for t in (parse_time(state.get("hwm")), parse_time(state.get("run_max"))) if t]
        done = {"next": None, "hwm": resto_time(max(marks)) if marks else None, "run_max": None}
        self.store.set_checkpoint(key, orjson.dumps(done).decode())
        report.complete = True
        report.seconds = time.perf_counter() - started
        return report

    def _load_state(self, key: str) -> dict[str, Any]:
        raw = self.store.get_checkpoint(key)
        if not raw:
            return {}
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            log.warning("ignoring an unreadable checkpoint %s", key)
            return {}
        return value if isinstance(value, dict) else {}

    @staticmethod
    def _count(page: TranslatedPage, report: HarvestReport, state: dict[str, Any]) -> None:
        """Add a page's duplicates and skipped entries to the report, its newest date to state."""
        report.duplicates += page.duplicates
        report.skipped += len(page.skipped)
        room = MAX_REPORTED_ERRORS - len(report.skipped_reasons)
        report.skipped_reasons.extend(page.skipped[: max(room, 0)])
        newest = parse_time(page.updated_max)
        run_max = parse_time(state.get("run_max"))
        if newest is not None and (run_max is None or newest > run_max):
            state["run_max"] = resto_time(newest)

    def _ensure_collection(self, collection: str, query: RestoQuery) -> None:
        """Create the STAC collection from resto's description if the store lacks it."""
        if self.store.get_collection(collection) is not None:
            return
        describe: JSON | None = None
        name = query.collection or self.collection_id
        if name:
            describe = self.client.describe_collection(name)
        self.store.upsert_collection(
            build_collection(
                describe, extent=None, sites=(), license=self.license, collection_id=collection
            )
        )
