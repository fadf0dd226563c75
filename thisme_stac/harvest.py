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
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import orjson

from thisme_stac.errors import RestoError, TranslationError
from thisme_stac.resto.client import RestoClient
from thisme_stac.resto.query import RestoQuery
from thisme_stac.store.base import JSON, DeferredIndexes, Store, UpsertResult
from thisme_stac.store.writer import PageWriter
from thisme_stac.translate.collection import build_collection
from thisme_stac.translate.item import feature_to_item_dict

log = logging.getLogger("thisme_stac.harvest")

MAX_REPORTED_ERRORS = 50
#: ``updated`` values beyond now + this are not trusted as the incremental mark: one would stop
#: every later incremental run from asking for anything
FUTURE_TOLERANCE = timedelta(days=1)
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


_DONE = object()
T = TypeVar("T")


def prefetch(source: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Iterate ``source`` in a background thread, ``depth`` items ahead (overlaps I/O with work).

    Exceptions of the source are re-raised in the consumer; closing the consumer stops the thread
    at its next item.
    """
    buffer: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for element in source:
                while not stop.is_set():
                    try:
                        buffer.put(element, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(_DONE)
        except BaseException as err:  # handed to the consumer
            buffer.put(err)

    worker = threading.Thread(target=produce, name="thisme-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            element = buffer.get()
            if element is _DONE:
                return
            if isinstance(element, BaseException):
                raise element
            yield cast(T, element)
    finally:
        stop.set()
        worker.join(timeout=5)


def checkpoint_key(resto_url: str, query: RestoQuery) -> str:
    """Checkpoint name of one (server, query) pair."""
    return f"harvest:{resto_url.rstrip('/')}:{query.key()}"


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _resto_time(value: datetime) -> str:
    """Format for resto's date parameters (``YYYY-MM-DDTHH:MM:SS.ffffffZ``)."""
    value = value.astimezone(UTC)
    return f"{value.year:04d}-{value:%m-%dT%H:%M:%S.%fZ}"  # %Y does not pad years < 1000


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
    ) -> None:
        self.client = client
        self.bulk_load_items = bulk_load_items
        self.store = store
        self.collection_id = collection_id
        self.page_size = page_size
        self.license = license

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
            mark = since if since is not None else (None if full else _parse_time(state.get("hwm")))
            if mark is not None:
                if since is None:
                    mark += timedelta(microseconds=1)
                extra["updated"] = _resto_time(mark)
                report.since = extra["updated"]
            state = {"next": None, "hwm": state.get("hwm"), "run_max": None}

        try:
            self._ensure_collection(collection, query)
            pages = self.client.search_pages(
                query, limit=self.page_size, start_url=start_url, extra_params=extra
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

            with (
                _FirstLoad(self.store, self.bulk_load_items) as first_load,
                PageWriter(self.store, key, committed) as writer,
                _fewer_collections(),
            ):
                try:
                    for page in prefetch(pages):
                        report.pages += 1
                        if report.pages == 1 and not report.resumed:
                            first_load.consider(page.total_results)
                        report.duplicates += page.duplicates
                        self._reject(page.rejected, report)
                        items = self._translate(page.features, collection, report, state)
                        state["next"] = page.next_url
                        fetched = len(page.features) + len(page.rejected)
                        tag = (report.pages, fetched, page.total_results)
                        writer.add(items, orjson.dumps(state).decode(), tag)
                except RestoError:
                    writer.flush()  # the pages fetched before the error are kept
                    raise
                writer.flush()
        except RestoError as err:
            report.error = str(err)
            report.failed += 1
            report.seconds = time.perf_counter() - started
            log.error("harvest stopped: %s", err)
            return report

        marks = [t for t in (_parse_time(state.get("hwm")), _parse_time(state.get("run_max"))) if t]
        done = {"next": None, "hwm": _resto_time(max(marks)) if marks else None, "run_max": None}
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
    def _reject(reasons: list[str], report: HarvestReport) -> None:
        """Count entries of a page that were not features at all."""
        for reason in reasons:
            report.skipped += 1
            if len(report.skipped_reasons) < MAX_REPORTED_ERRORS:
                report.skipped_reasons.append(reason)
            log.warning("skipped a feature: %s", reason)

    def _translate(
        self,
        features: list[JSON],
        collection: str,
        report: HarvestReport,
        state: dict[str, Any],
    ) -> list[JSON]:
        items: list[JSON] = []
        run_max = _parse_time(state.get("run_max"))
        horizon = datetime.now(UTC) + FUTURE_TOLERANCE
        for feature in features:
            try:
                items.append(feature_to_item_dict(feature, collection_id=collection))
            except TranslationError as err:
                report.skipped += 1
                if len(report.skipped_reasons) < MAX_REPORTED_ERRORS:
                    report.skipped_reasons.append(str(err))
                log.warning("skipped a feature: %s", err)
                continue
            props = feature.get("properties")
            updated = _parse_time(props.get("updated")) if isinstance(props, dict) else None
            if updated is not None and updated > horizon:
                log.warning(
                    "%s: updated %s is in the future, not a harvest mark", items[-1]["id"], updated
                )
            elif updated is not None and (run_max is None or updated > run_max):
                run_max = updated
        if run_max is not None:
            state["run_max"] = _resto_time(run_max)
        return items

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
