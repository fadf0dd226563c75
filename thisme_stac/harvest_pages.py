"""Translated search pages for the harvester, fetched here or, for large harvests, in a child.

Fetching, parsing and translating resto pages costs about as much CPU as storing the items, and
one process runs Python on one core at a time. A harvest that resto announces as large therefore
moves the fetching and translating into a child process after its first page: the child starts
while this process goes on fetching, and takes over the search (its cursor: next URL, visited
URLs, recently seen ids) at the first page boundary after it is ready, so its start-up costs no
waiting. Pages come back in order, as the store's rows when it prepares them (``PreparedWrites``)
and as JSON otherwise; errors come back as the same ``RestoError`` (or the store's error); the
child's log records are re-emitted here. The child ends with the search, when it is closed, and
on its own when this process dies (its pipes break).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, TypeVar, cast

import orjson

from thisme_stac.errors import RestoError, StoreError, ThismeError, TranslationError
from thisme_stac.resto.client import RestoClient, RestoPage, SearchCursor
from thisme_stac.resto.query import RestoQuery
from thisme_stac.store.base import JSON
from thisme_stac.translate.item import feature_to_item_dict

log = logging.getLogger("thisme_stac.harvest")

#: ``updated`` values beyond now + this are not trusted as the incremental mark: one would stop
#: every later incremental run from asking for anything
FUTURE_TOLERANCE = timedelta(days=1)
#: A search announced with at least this many results is fetched and translated in a child.
CHILD_MIN_ITEMS = 5_000
#: Features translated (and prepared) together: small groups stay in the CPU caches.
CHUNK_FEATURES = 25
#: Seconds to wait for a child's start when asked to wait for it.
CHILD_START_SECONDS = 60.0
#: Seconds a finished or closed child gets to exit before it is terminated.
CHILD_EXIT_SECONDS = 5.0


@dataclass(slots=True)
class TranslatedPage:
    """One resto page as STAC items, with what the harvest report and checkpoint need."""

    #: STAC item dicts, or the rows the store's ``prepare`` made of them
    items: list[Any]
    next_url: str | None
    total_results: int | None
    #: entries resto sent on the page after de-duplication (items + skipped)
    fetched: int
    duplicates: int
    #: why entries were skipped (not features, not translatable, refused by the store), one each
    skipped: list[str] = field(default_factory=list)
    #: largest trusted ``updated`` of the page's items (ISO 8601), for the incremental mark
    updated_max: str | None = None


_DONE = object()
T = TypeVar("T")


def prefetch(
    source: Iterable[T], depth: int = 2, on_close: Callable[[], None] | None = None
) -> Generator[T, None, None]:
    """Iterate ``source`` in a background thread, ``depth`` items ahead (overlaps I/O with work).

    Exceptions of the source are re-raised in the consumer; closing the consumer stops the thread
    at its next item (``on_close`` runs first, to unblock a source that waits).
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
        if on_close is not None:
            on_close()
        worker.join(timeout=5)


def parse_time(value: object) -> datetime | None:
    """An aware datetime from an ISO 8601 string, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def resto_time(value: datetime) -> str:
    """Format for resto's date parameters (``YYYY-MM-DDTHH:MM:SS.ffffffZ``)."""
    value = value.astimezone(UTC)
    return f"{value.year:04d}-{value:%m-%dT%H:%M:%S.%fZ}"  # %Y does not pad years < 1000


def translate_page(
    page: RestoPage,
    collection: str,
    prepare: Callable[[list[JSON]], list[Any]] | None = None,
) -> TranslatedPage:
    """Translate one page (and make store rows of it with ``prepare``); features that cannot be
    translated are skipped and named.

    Works through the page a few features at a time, translating then preparing each group
    while its objects are still in the CPU caches (about a third less CPU than two passes over
    the whole page).
    """
    skipped = list(page.rejected)
    out: list[Any] = []
    newest: datetime | None = None
    horizon = datetime.now(UTC) + FUTURE_TOLERANCE
    features = page.features
    for start in range(0, len(features), CHUNK_FEATURES):
        items: list[JSON] = []
        for feature in features[start : start + CHUNK_FEATURES]:
            try:
                items.append(feature_to_item_dict(feature, collection_id=collection))
            except TranslationError as err:
                skipped.append(str(err))
                continue
            props = feature.get("properties")
            updated = parse_time(props.get("updated")) if isinstance(props, dict) else None
            if updated is not None and updated > horizon:
                log.warning(
                    "%s: updated %s is in the future, not a harvest mark", items[-1]["id"], updated
                )
            elif updated is not None and (newest is None or updated > newest):
                newest = updated
        out += _prepared(prepare, items, skipped) if prepare is not None else items
    for reason in skipped:
        log.warning("skipped a feature: %s", reason)
    return TranslatedPage(
        items=out,
        next_url=page.next_url,
        total_results=page.total_results,
        fetched=len(page.features) + len(page.rejected),
        duplicates=page.duplicates,
        skipped=skipped,
        updated_max=resto_time(newest) if newest is not None else None,
    )


def _prepared(
    prepare: Callable[[list[JSON]], list[Any]], items: list[JSON], skipped: list[str]
) -> list[Any]:
    """Rows of ``items``; an item the store refuses is skipped and named, not the whole page."""
    try:
        return prepare(items)
    except StoreError:
        rows: list[Any] = []
        for item in items:
            try:
                rows += prepare([item])
            except StoreError as err:
                skipped.append(f"{item.get('id')}: the store refuses it ({err})")
        return rows


class TranslatedPages:
    """Iterates the translated pages of one search; ``close()`` stops it (and its child)."""

    def __init__(
        self,
        client: RestoClient,
        query: RestoQuery,
        collection: str,
        *,
        limit: int = 500,
        start_url: str | None = None,
        extra_params: dict[str, str] | None = None,
        child_min_items: int | None = CHILD_MIN_ITEMS,
        wait_for_child: bool = False,
        prepare: Callable[[list[JSON]], list[Any]] | None = None,
    ) -> None:
        """``prepare`` (a module-level function) turns each page's items into store rows,
        in the child process when there is one."""
        self.client = client
        self.prepare = prepare
        self.wait_for_child = wait_for_child
        self.query = query
        self.collection = collection
        self.limit = limit
        self.start_url = start_url
        self.extra_params = extra_params or {}
        self.child_min_items = child_min_items
        self._child: _Child | None = None
        self._closed = threading.Event()
        #: True once a child process has taken over the search (tests and benchmarks read it)
        self.in_child = False

    def __iter__(self) -> Iterator[TranslatedPage]:
        cursor = SearchCursor(self.limit)
        handoff = threading.Event()

        def fetched() -> Iterator[RestoPage]:
            """Pages fetched here (a page ahead); ends at the first boundary after a handoff."""
            for page in self.client.search_pages(
                self.query,
                limit=self.limit,
                start_url=self.start_url,
                extra_params=self.extra_params,
                cursor=cursor,
            ):
                yield page
                if handoff.is_set() or self._closed.is_set():
                    return

        source = prefetch(fetched())
        try:
            try:
                for number, page in enumerate(source, 1):
                    translated = translate_page(page, self.collection, self.prepare)
                    if number == 1 and translated.next_url is not None:
                        self._maybe_start_child(page.total_results)
                    yield translated
                    if self._closed.is_set():
                        return
                    wait = CHILD_START_SECONDS if self.wait_for_child else 0
                    if self._child is not None and not handoff.is_set() and self._child.ready(wait):
                        handoff.set()  # the pages fetched meanwhile still come first
            finally:
                source.close()
            # the fetching thread has ended: the cursor names the first page not fetched
            if not handoff.is_set() or cursor.url is None or self._child is None:
                return
            self.in_child = True
            yield from self._child.pages(self.query, cursor, self._closed)
        finally:
            if self._child is not None:
                self._child.close()

    def _maybe_start_child(self, total: int | None) -> None:
        if self.child_min_items is None or (total or 0) < self.child_min_items:
            return
        arguments = self.client.twin_arguments()
        if arguments is None:
            return
        try:
            self._child = _Child(arguments, self.collection, self.prepare)
        except OSError as err:  # no processes left, or none allowed: stay in this one
            log.info("translating in this process (no child: %s)", err)

    def close(self) -> None:
        """Stop fetching; a child process is ended (idempotent, from any thread)."""
        self._closed.set()
        if self._child is not None:
            self._child.close()


class _Frames:
    """Length-prefixed pickles over a pair of pipes (our own child only: trusted).

    Plain ``os.read``/``os.write`` loops on the descriptors, each short read or write continued
    where it stopped.
    """

    HEADER = struct.Struct("<Q")

    def __init__(self, reader: IO[bytes], writer: IO[bytes]) -> None:
        self.reader = reader
        self.writer = writer
        self._in = reader.fileno()
        self._out = writer.fileno()
        self._send_lock = threading.Lock()

    def send(self, message: tuple[Any, ...]) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        frame = memoryview(self.HEADER.pack(len(data)) + data)
        with self._send_lock:
            while frame:
                frame = frame[os.write(self._out, frame) :]

    def recv(self) -> tuple[Any, ...]:
        """The next message; EOFError when the other side is gone."""
        (size,) = self.HEADER.unpack(self._exactly(self.HEADER.size))
        message: tuple[Any, ...] = pickle.loads(self._exactly(size))  # noqa: S301 - our child's
        return message

    def _exactly(self, size: int) -> bytearray:
        data = bytearray(size)
        view = memoryview(data)
        got = 0
        while got < size:
            if _readv is not None:
                count = _readv(self._in, [view[got:]])
            else:  # no readv (Windows)
                chunk = os.read(self._in, min(size - got, 1 << 20))
                count = len(chunk)
                view[got : got + count] = chunk
            if count == 0:
                raise EOFError("pipe closed")
            got += count
        return data


_readv = getattr(os, "readv", None)


class _Child:
    """The child process (``python -m thisme_stac.harvest_pages``) and a thread reading it.

    The reader thread keeps at most a few messages queued, so the child never runs far ahead.
    Arguments, secrets included, travel through the pipe, never on the command line.
    """

    def __init__(
        self,
        client_arguments: dict[str, Any],
        collection: str,
        prepare: Callable[[list[JSON]], list[Any]] | None,
    ) -> None:
        levels = {
            name: logging.getLogger(name).getEffectiveLevel()
            for name in ("", "thisme_stac", "httpx", "httpcore")
        }
        # the child imports this very package, wherever it was imported from here
        package_root = str(Path(__file__).resolve().parent.parent)
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, path]))}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "thisme_stac.harvest_pages"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._frames = _Frames(self._process.stdout, self._process.stdin)
        self._inbox: queue.Queue[tuple[Any, ...]] = queue.Queue(maxsize=4)
        self._closed = threading.Event()
        self._ready = False
        self._dead = False
        self._lock = threading.Lock()
        try:
            self._frames.send(("start", client_arguments, collection, prepare, levels))
        except OSError:
            self.close()
            raise
        self._reader = threading.Thread(target=self._read, name="thisme-child-pages", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                message = self._frames.recv()
            except (EOFError, OSError):
                message = ("eof",)
            except Exception as err:  # an unreadable frame: the harvest stops, never hangs
                message = ("crash", f"unreadable message from the child ({err})")
            while not self._closed.is_set():
                try:
                    self._inbox.put(message, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if message[0] in ("eof", "done", "error", "crash"):
                return

    def ready(self, timeout: float = 0) -> bool:
        """True once the child has started and waits for the search (waits up to ``timeout``)."""
        if not self._ready and not self._dead:
            try:
                message = self._inbox.get(timeout=timeout) if timeout else self._inbox.get_nowait()
            except queue.Empty:
                return False
            self._ready = message == ("ready",)
            if not self._ready:  # it could not start: this process goes on alone
                self._dead = True
                log.info("translating in this process (the child process did not start)")
        return self._ready

    def pages(
        self, query: RestoQuery, cursor: SearchCursor, closed: threading.Event
    ) -> Iterator[TranslatedPage]:
        """Hand the search over (after ``ready()``) and yield the pages the child sends back."""
        try:
            try:
                self._frames.send(("search", query, cursor))
            except OSError:
                raise RestoError("the page-translating process ended before the search") from None
            while not closed.is_set():
                try:
                    message = self._inbox.get(timeout=0.1)
                except queue.Empty:
                    if not self._reader.is_alive() and self._inbox.empty():
                        raise RestoError("the page-translating process stopped answering") from None
                    continue
                kind = message[0]
                if kind == "page":
                    meta, items, blob = message[1], message[2], message[3]
                    yield TranslatedPage(items=orjson.loads(blob) if blob else items, **meta)
                elif kind == "log":
                    _, level, name, text = message
                    logging.getLogger(name).log(level, "%s", text)
                elif kind == "error":
                    _, text, status, url = message
                    raise RestoError(text, status=status, url=url)
                elif kind == "failure":  # a ThismeError of prepare (a store refusing an item)
                    raise message[1]
                elif kind == "crash":
                    raise RestoError(f"translating pages failed: {message[1]}")
                elif kind == "done":
                    return
                elif kind == "eof":
                    self._process.wait(CHILD_EXIT_SECONDS)
                    raise RestoError(
                        "the page-translating process ended unexpectedly "
                        f"(exit code {self._process.returncode})"
                    )
        finally:
            self.close()

    def close(self) -> None:
        """End the child (a polite stop, then terminate, then kill) and the reader thread."""
        with self._lock:
            self._closed.set()
            if self._process.poll() is None:
                with contextlib.suppress(OSError, ValueError):
                    self._frames.send(("stop",))
                with contextlib.suppress(OSError, ValueError):
                    self._process.stdin.close()  # type: ignore[union-attr]
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._process.wait(0.5)
            if self._process.poll() is None:
                self._process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._process.wait(CHILD_EXIT_SECONDS)
            if self._process.poll() is None:
                self._process.kill()
                self._process.wait()
            with contextlib.suppress(OSError, ValueError):
                self._process.stdout.close()  # type: ignore[union-attr]


class _ForwardLogs(logging.Handler):
    """Child side: sends each record, formatted, to the parent."""

    def __init__(self, frames: _Frames) -> None:
        super().__init__()
        self.frames = frames

    def emit(self, record: logging.LogRecord) -> None:
        # the parent is gone or the pipe broke: there is no one left to tell
        with contextlib.suppress(OSError, ValueError):
            self.frames.send(("log", record.levelno, record.name, record.getMessage()))


def _child_main() -> None:
    """Entry point of the child: wait for the search, then send its pages until the end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    frames = _Frames(sys.stdin.buffer, sys.stdout.buffer)
    sys.stdout = sys.stderr  # nothing else may write into the pipe
    try:
        _, client_arguments, collection, prepare, levels = frames.recv()
        from thisme_stac.resto.client import RedactUrls

        logging.getLogger().handlers[:] = [_ForwardLogs(frames)]
        logging.getLogger("httpx").addFilter(RedactUrls())  # its request lines carry full URLs
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        gc.freeze()  # pages are acyclic trees of fresh objects: scanning them is wasted work
        gc.set_threshold(50_000, 20, 100)
        frames.send(("ready",))
        message = frames.recv()
        if message[0] != "search":
            return
        query: RestoQuery = message[1]
        cursor: SearchCursor = message[2]
        with RestoClient(**client_arguments) as client:
            for page in prefetch(client.search_pages(query, limit=cursor.limit, cursor=cursor)):
                translated = translate_page(page, collection, prepare)
                meta = {
                    "next_url": translated.next_url,
                    "total_results": translated.total_results,
                    "fetched": translated.fetched,
                    "duplicates": translated.duplicates,
                    "skipped": translated.skipped,
                    "updated_max": translated.updated_max,
                }
                if prepare is not None:  # rows pickle and unpickle far faster than JSON parses
                    frames.send(("page", meta, translated.items, None))
                else:
                    frames.send(("page", meta, None, orjson.dumps(translated.items)))
        frames.send(("done",))
    except RestoError as err:
        with contextlib.suppress(OSError, ValueError):
            frames.send(("error", str(err), err.status, err.url))
    except ThismeError as err:
        try:
            frames.send(("failure", err))
        except (OSError, ValueError, pickle.PicklingError):
            with contextlib.suppress(OSError, ValueError):
                frames.send(("crash", f"{type(err).__name__}: {err}"))
    except (OSError, EOFError, ValueError):
        pass  # the parent went away or stopped us
    except Exception as err:  # reported to the parent as one line
        with contextlib.suppress(OSError, ValueError):
            frames.send(("crash", f"{type(err).__name__}: {err}"))
    finally:
        logging.getLogger().handlers[:] = []


if __name__ == "__main__":
    _child_main()
