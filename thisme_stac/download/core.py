"""The async download core: plan, fetch to ``.part`` with Range resume, verify, rename.

One ``httpx.AsyncClient`` per run; ``concurrency`` workers take transfers in turn (with a
per-host limit); constant memory: chunks go to disk as they arrive, written and hashed in a
thread one batch behind the network; file-system calls stay off the event loop. Nothing
unverified ever sits under a final name.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import netrc
import os
import random
import socket
import threading
import time
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Mapping,
    Sequence,
)
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import urljoin, urlsplit

import h11
import httpcore
import httpx
import orjson

from thisme_stac import __version__
from thisme_stac.download.layout import DEFAULT_LAYOUT, check_layout, local_path
from thisme_stac.download.verify import Digests, Expected, check_file, expected_for, problem
from thisme_stac.errors import ChecksumMismatch, ConfigError, DownloadError
from thisme_stac.resto.client import redact, retry_after

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
BATCH = 1 << 20  # bytes handed to the writer thread at once (two batches in memory per file)
PROGRESS_STEP = 1 << 20
# Sink.pump's two receive buffers: a block is still in the CPU cache when written and hashed
# (measured on loopback: 2 MiB beats 1 MiB by a tenth, 4 MiB loses half)
BLOCK = 2 << 20
# bodies at least this long are read past h11 (direct_body); their connection is closed after,
# so the next file pays a new connection (and TCP slow start): small next to 32 MiB
DIRECT_MIN = 32 * BATCH
MANIFEST = "manifest.json"
ITEMS = "items.json"
T = TypeVar("T")


@dataclass(frozen=True)
class DownloadOptions:
    """How to download: where, which assets, how hard to try."""

    dest: Path = Path()
    layout: str = DEFAULT_LAYOUT
    assets: Sequence[str] = ()
    concurrency: int = 4
    per_host: int = 4
    retries: int = 5  # attempts per file
    backoff: float = 0.5  # first retry waits up to this (then doubles), with jitter
    max_backoff: float = 30.0
    max_retry_after: float = 300.0  # longest Retry-After honoured
    timeout: float = 60.0
    dry_run: bool = False


@dataclass
class Transfer:
    """One asset of one item, and what became of it."""

    item_id: str
    key: str
    href: str
    path: Path
    expected: Expected
    status: str = "pending"  # downloaded | skipped | failed | planned
    size: int | None = None
    sha256: str | None = None
    error: str | None = None
    fetched_bytes: int = 0
    counted: int = 0  # bytes of this file the progress hooks have been told about
    sized: bool = False  # its size is part of the progress total

    def entry(self, dest: Path) -> dict[str, Any]:
        return {
            "id": self.item_id,
            "asset": self.key,
            "href": redact(self.href),
            "path": self.path.relative_to(dest.resolve()).as_posix(),
            "size": self.size,
            "sha256": self.sha256,
            "status": self.status,
            "error": self.error,
        }


@dataclass
class DownloadResult:
    """What a run did; ``failed`` names what could not be downloaded."""

    transfers: list[Transfer] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(t.status == status for t in self.transfers)

    @property
    def failed(self) -> list[Transfer]:
        return [t for t in self.transfers if t.status == "failed"]

    @property
    def total_bytes(self) -> int:
        return sum(t.size or t.expected.size or 0 for t in self.transfers)

    @property
    def fetched_bytes(self) -> int:
        return sum(t.fetched_bytes for t in self.transfers)


class Progress:
    """Hooks the CLI connects to progress bars; the default does nothing.

    ``planned`` once (files, total bytes, None while some sizes are unknown), ``sized`` when the
    last unknown size became known (from the server's answer), ``advance`` with byte deltas
    (negative when a file restarts from zero), ``finished`` per file.
    """

    def planned(self, files: int, total_bytes: int | None) -> None: ...
    def sized(self, total_bytes: int) -> None: ...
    def advance(self, nbytes: int) -> None: ...
    def finished(self, transfer: Transfer) -> None: ...


TokenProvider = Callable[[bool], Mapping[str, str]]
"""``provider(refresh)`` -> auth headers for a resto host (``refresh`` forces a new login)."""


class NetrcAuth(httpx.Auth):
    """Basic credentials from a netrc file for requests that carry no Authorization yet."""

    def __init__(self, path: Path) -> None:
        try:
            self._netrc = netrc.netrc(str(path))
        except (netrc.NetrcParseError, OSError) as err:
            raise ConfigError(f"cannot read {path}: {err}") from None

    def credentials(self, host: str) -> tuple[str, str] | None:
        found = self._netrc.authenticators(host)
        if found is None or not found[2]:
            return None
        return found[0], found[2]

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if "Authorization" not in request.headers:
            found = self.credentials(request.url.host)
            if found is not None:
                pair = base64.b64encode(f"{found[0]}:{found[1]}".encode()).decode()
                request.headers["Authorization"] = f"Basic {pair}"
        yield request


def netrc_auth() -> NetrcAuth | None:
    """``$NETRC`` or ``~/.netrc`` when it exists."""
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    return NetrcAuth(path) if path.is_file() else None


def tune_httpcore_reads() -> bool:
    """Let httpcore read up to 1 MiB per socket read instead of 64 KiB; True when in effect.

    Bulk bodies then cost far fewer passes through httpcore, h11 and anyio (measured on
    loopback: about a fifth less CPU per gigabyte). A class-level knob of httpcore's async
    HTTP/1.1 connection, so it is applied only while it still has its known default;
    tests/test_download_resume.py fails if it vanishes or stops taking effect.
    """
    try:
        from httpcore._async.http11 import AsyncHTTP11Connection
    except ImportError:
        return False
    current = getattr(AsyncHTTP11Connection, "READ_NUM_BYTES", None)
    if current == 64 * 1024:
        AsyncHTTP11Connection.READ_NUM_BYTES = BATCH
        return True
    return current == BATCH


def _h11_connection(response: httpx.Response, stream: object) -> h11.Connection | None:
    """The h11 state of the HTTP/1.1 connection of ``stream`` a response is read from, or None.

    Found through private attributes of httpx and httpcore (the response's stream wraps
    httpcore's stream, which holds its connection, which holds the h11 state and ``stream``);
    anything unexpected gives None. tests/test_download_direct.py fails if the way vanishes.
    """
    node: object = response.stream
    for _ in range(8):
        state = getattr(node, "_h11_state", None)
        if isinstance(state, h11.Connection):
            return state if getattr(node, "_network_stream", None) is stream else None
        for name in ("_stream", "_httpcore_stream", "_connection"):
            inner = getattr(node, name, None)
            if inner is not None:
                node = inner
                break
        else:
            return None
    return None


def _asyncio_reader(
    stream: httpcore.AsyncNetworkStream,
) -> tuple[asyncio.Transport, deque[bytes]] | None:
    """The asyncio transport under a plain TCP stream and anyio's queue of bytes read from it.

    Private attributes of httpcore (its anyio stream) and anyio (transport and protocol of
    its asyncio socket stream); None for anything else (TLS, trio, other versions), and on
    other event loops than the selector loop: a paused transport must not read on (the
    proactor loop of Windows keeps a read pending).
    tests/test_download_direct.py fails if the way vanishes.
    """
    if not isinstance(asyncio.get_running_loop(), asyncio.SelectorEventLoop):
        return None
    inner = getattr(stream, "_stream", None)
    transport = getattr(inner, "_transport", None)
    queue = getattr(getattr(inner, "_protocol", None), "read_queue", None)
    if not isinstance(transport, asyncio.Transport) or not isinstance(queue, deque):
        return None
    if transport.get_extra_info("sslcontext") is not None or transport.is_closing():
        return None
    return transport, queue


@dataclass
class DirectBody:
    """A response body read past h11: what was buffered, then the rest from the connection.

    ``socket`` is the connection's plain TCP socket (the event loop no longer reads it), to
    be read in a worker thread into preallocated buffers; without one (TLS), the rest comes
    from ``network_stream.read``.
    """

    request: httpx.Request
    buffered: list[bytes]
    left: int  # bytes after ``buffered``
    stream: httpcore.AsyncNetworkStream
    socket: Any | None  # asyncio's TransportSocket: duplicated before use
    timeout: float | None

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The rest from ``network_stream.read``, as received."""
        left = self.left
        while left > 0:
            try:
                data = await self.stream.read(min(left, BATCH), timeout=self.timeout)
            except httpcore.TimeoutException as err:
                raise httpx.ReadTimeout(str(err), request=self.request) from err
            except httpcore.NetworkError as err:
                raise httpx.ReadError(str(err), request=self.request) from err
            if not data:
                raise _incomplete(self.request)
            left -= len(data)
            yield data


def direct_body(response: httpx.Response, min_length: int | None = None) -> DirectBody | None:
    """The body of ``response`` to be read past h11, or None: then read it as usual.

    Only the unread body of an HTTP/1.1 response with a Content-Length of at least
    ``min_length`` bytes, neither chunked nor content-encoded, with httpcore's network stream
    at hand. Reading it past h11 saves h11's copies of every chunk, and on plain TCP also the
    event loop's reads (about half the CPU per gigabyte). h11 then still expects the body, so
    httpcore closes the connection with the response instead of reusing it.
    """
    headers = response.headers
    if response.http_version != "HTTP/1.1" or "Transfer-Encoding" in headers:
        return None
    if headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        return None
    text = headers.get("Content-Length", "")
    least = DIRECT_MIN if min_length is None else min_length
    if not text.isdigit() or int(text) < least or response.is_stream_consumed:
        return None
    stream = response.extensions.get("network_stream")
    if not isinstance(stream, httpcore.AsyncNetworkStream):
        return None
    state = _h11_connection(response, stream)
    if state is None:
        return None
    if state.their_state is not h11.SEND_BODY:
        return None
    length = int(text)
    buffered = [state.trailing_data[0][:length]]
    timeout = response.request.extensions.get("timeout", {}).get("read")
    # the thread's socket needs a timeout: without one it would clear O_NONBLOCK, which the
    # event loop's socket shares
    reader = _asyncio_reader(stream) if timeout else None
    sock = stream.get_extra_info("socket") if reader is not None else None
    if reader is not None and callable(getattr(sock, "dup", None)):
        transport, queue = reader
        transport.pause_reading()  # the socket is the worker thread's from now on
        buffered.extend(queue)  # read by the event loop after h11's buffer, before the rest
        queue.clear()
    else:
        sock = None
    body: list[bytes] = []
    left = length
    for chunk in buffered:  # bytes beyond Content-Length (a misbehaving server) are dropped
        if chunk and left:
            body.append(chunk[:left])
            left -= len(body[-1])
    return DirectBody(response.request, body, left, stream, sock, timeout)


def _fill(
    sock: socket.socket, view: memoryview, stop: threading.Event, request: httpx.Request
) -> tuple[int, httpx.TransportError | None]:
    """Receive into all of ``view``: the bytes received and the error that stopped it early."""
    got = 0
    while got < len(view):
        try:
            received = sock.recv_into(view[got:])
        except TimeoutError:
            return got, httpx.ReadTimeout("timed out", request=request)
        except OSError as err:
            return got, httpx.ReadError(str(err), request=request)
        if not received:
            return got, httpx.ReadError("cancelled") if stop.is_set() else _incomplete(request)
        got += received
    return got, None


def _incomplete(request: httpx.Request) -> httpx.RemoteProtocolError:
    message = "peer closed connection without sending complete message body"
    return httpx.RemoteProtocolError(message, request=request)


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to the end on a new event loop.

    Inside a running loop (Jupyter) it runs in a worker thread with its own loop.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    outcome: list[T] = []
    failure: list[BaseException] = []

    def worker() -> None:
        try:
            outcome.append(asyncio.run(coroutine))
        except BaseException as err:  # re-raised in the caller's thread
            failure.append(err)

    thread = threading.Thread(target=worker, name="thisme-download")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def _remove_stale_outputs(dest: Path) -> None:
    """Temporary output files of a run that was killed while writing them."""
    for name in (MANIFEST, ITEMS):
        for stale in dest.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)


def atomic_json(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside ``path``, then rename it into place."""
    part = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    part.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    os.replace(part, path)


class _Sink:
    """Appends chunks to a ``.part`` and feeds the hashes in a worker thread, a batch behind.

    The file is opened by the first batch and closed by the last, in the same thread calls,
    so that a small file costs few hand-overs between the event loop and the pool. A body
    read past h11 from a plain socket (``pump``) is received, written and hashed in threads.
    """

    def __init__(
        self,
        part: Path,
        offset: int,
        etag: str | None,
        digests: Digests,
        pool: ThreadPoolExecutor | None,
    ) -> None:
        self._part = part
        self._offset = offset
        self._etag = etag
        self.digests = digests
        self._pool = pool
        self._handle: IO[bytes] | None = None
        self._batch: list[bytes] = []
        self._size = 0
        self._pending: asyncio.Future[None] | None = None

    def _file(self) -> IO[bytes]:
        if self._handle is None:
            self._handle = _open_part(self._part, self._offset, self._etag)
        return self._handle

    def _write(self, batch: list[bytes], last: bool = False) -> None:
        handle = self._file()
        try:
            block = b"".join(batch)  # one write and one update per batch: few GIL hand-overs
            handle.write(block)
            handle.flush()
            self.digests.update(block)
        finally:
            if last:
                handle.close()

    async def add(self, chunk: bytes) -> None:
        self._batch.append(chunk)
        self._size += len(chunk)
        if self._size >= BATCH:
            await self._wait()
            batch, self._batch, self._size = self._batch, [], 0
            loop = asyncio.get_running_loop()
            self._pending = loop.run_in_executor(self._pool, self._write, batch)

    async def pump(self, body: DirectBody, count: Callable[[int], None]) -> None:
        """The rest of ``body`` from its socket into the file, in a worker thread.

        ``count`` is called on the event loop with the size of each block written. Cancelled,
        the socket is shut down and the thread waited for: nothing writes the file after.
        """
        assert body.socket is not None
        await self._wait()
        batch, self._batch, self._size = self._batch, [], 0
        loop = asyncio.get_running_loop()
        stop = threading.Event()

        def counted(nbytes: int) -> None:
            loop.call_soon_threadsafe(count, nbytes)

        job = loop.run_in_executor(self._pool, self._pump, body, batch, stop, counted)
        try:
            await asyncio.shield(job)
        except asyncio.CancelledError:
            stop.set()
            with contextlib.suppress(OSError):
                body.socket.shutdown(socket.SHUT_RDWR)  # wakes a waiting recv
            await asyncio.wait([job])
            raise

    def _pump(
        self,
        body: DirectBody,
        batch: list[bytes],
        stop: threading.Event,
        counted: Callable[[int], None],
    ) -> None:
        """``recv_into`` one of two preallocated buffers while the other is hashed in a second
        thread, then write it (recv and write release the GIL, and so does hashing a large
        buffer: two cores work). What a failed read got is written before the error.
        """
        assert body.socket is not None
        self._write(batch)
        handle = self._file()
        try:  # a socket object of our own; the event loop's stays as it is
            sock = body.socket.dup()
        except OSError as err:  # out of file descriptors: a retry may find one
            raise httpx.ReadError(f"cannot read the connection: {err}") from None
        sock.settimeout(body.timeout)  # never None or 0 (see direct_body)
        buffers = (memoryview(bytearray(BLOCK)), memoryview(bytearray(BLOCK)))
        hashing: Future[None] | None = None
        left, index = body.left, 0
        try:
            while left > 0:
                view = buffers[index][: min(BLOCK, left)]
                index ^= 1
                got, failure = _fill(sock, view, stop, body.request)
                block = view[:got]
                if hashing is not None:
                    hashing.result()  # the previous block: the hashes are fed in order
                    hashing = None
                if self._pool is not None:
                    hashing = self._pool.submit(self.digests.update, block)
                else:
                    self.digests.update(block)
                handle.write(block)
                handle.flush()
                left -= got
                counted(got)
                if failure is not None:
                    raise failure
        finally:
            sock.close()
            if hashing is not None:
                hashing.result()

    async def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await pending

    async def close(self, then: Callable[[], None] | None = None) -> None:
        """Write what is left and close the file, then run ``then`` in the same thread call.

        Also after an error (without ``then``): a resume keeps every byte received.
        """

        def last(batch: list[bytes]) -> None:
            self._write(batch, last=True)
            if then is not None:
                then()

        try:
            await self._wait()
        finally:
            batch, self._batch = self._batch, []
            await asyncio.get_running_loop().run_in_executor(self._pool, last, batch)


class Downloader:
    """Downloads the assets of STAC items (dicts) into ``options.dest``."""

    def __init__(
        self,
        options: DownloadOptions,
        *,
        token_provider: TokenProvider | None = None,
        token_hosts: Iterable[str] = (),
        progress: Progress | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        auth: httpx.Auth | None = None,
    ) -> None:
        if options.concurrency < 1 or options.per_host < 1:
            raise ConfigError("concurrency must be at least 1")
        if options.retries < 1:
            raise ConfigError("retries must be at least 1")
        check_layout(options.layout)
        self.options = options
        self.dest = options.dest
        self.progress = progress or Progress()
        self._token_provider = token_provider
        self._token_hosts = {h.lower() for h in token_hosts}
        self._token_headers: dict[str, str] | None = None
        self._token_lock: asyncio.Lock | None = None
        self._transport = transport
        self._auth = auth
        self._host_limits: dict[str, asyncio.Semaphore] = {}
        self._slots = asyncio.Semaphore(options.concurrency)
        self._pool: ThreadPoolExecutor | None = None
        self._known = 0  # bytes of the progress total
        self._unsized = 0  # transfers whose size is not known yet

    # --- planning ----------------------------------------------------------------------------
    def _selected(self, item: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        assets = item.get("assets") or {}
        if self.options.assets:
            return [(k, assets[k]) for k in self.options.assets if k in assets]
        data = [(k, a) for k, a in assets.items() if "data" in (a.get("roles") or [])]
        return data or list(assets.items())

    @staticmethod
    def _absolute(item: Mapping[str, Any], href: str) -> str | None:
        """An http(s) URL for an href (relative ones against the item's http ``self`` link)."""
        if href.startswith(("http://", "https://")):
            return href
        links = item.get("links") or []
        base = next((str(x.get("href")) for x in links if x.get("rel") == "self"), "")
        if href and base.startswith(("http://", "https://")):
            return urljoin(base, href)
        return None

    def plan(self, items: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Transfer]]:
        """The items and one Transfer per selected asset with an http(s) href."""
        kept: list[dict[str, Any]] = []
        transfers: list[Transfer] = []
        seen: set[Path] = set()
        for item in items:
            kept.append(item)
            for key, asset in self._selected(item):
                href = self._absolute(item, str(asset.get("href") or ""))
                if href is None:
                    log.warning("%s/%s: no http(s) href, not downloaded", item.get("id"), key)
                    continue
                path = local_path(self.dest, self.options.layout, item, key, asset)
                if path in seen:  # two assets mapped to one name: keep them apart
                    path = local_path(self.dest, self.options.layout, item, key, {"href": ""})
                    path = path.with_name(f"{path.stem}-{len(seen)}{path.suffix}")
                seen.add(path)
                transfers.append(
                    Transfer(str(item.get("id")), key, href, path, expected_for(asset))
                )
        return kept, transfers

    # --- running -----------------------------------------------------------------------------
    async def run(self, items: Iterable[dict[str, Any]]) -> DownloadResult:
        """Download (or with ``dry_run`` only size up) every planned transfer."""
        started = time.perf_counter()
        tune_httpcore_reads()
        kept, transfers = self.plan(items)
        result = DownloadResult(transfers=transfers, items=kept)
        self._token_lock = asyncio.Lock()  # asyncio primitives belong to this run's loop
        self._host_limits = {}
        self._slots = asyncio.Semaphore(self.options.concurrency)
        limits = httpx.Limits(
            max_connections=self.options.concurrency,
            max_keepalive_connections=self.options.concurrency,
        )
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(self.options.timeout, connect=min(self.options.timeout, 30)),
            limits=limits,
            follow_redirects=True,
            transport=self._transport,
            auth=self._auth,
            headers={"User-Agent": f"thisme-stac/{__version__}", "Accept-Encoding": "identity"},
        ) as client:
            if self.options.dry_run:
                await self._sizes(client, transfers)
                self.progress.planned(len(transfers), result.total_bytes)
                result.seconds = time.perf_counter() - started
                return result
            self.dest.mkdir(parents=True, exist_ok=True)
            _remove_stale_outputs(self.dest)
            previous = self._previous_manifest()
            for transfer in transfers:
                transfer.sized = transfer.expected.size is not None
            self._known = sum(t.expected.size or 0 for t in transfers)
            self._unsized = sum(not t.sized for t in transfers)
            self.progress.planned(len(transfers), None if self._unsized else self._known)

            queue = iter(transfers)  # shared by the workers: each transfer is taken once

            async def worker() -> None:
                for transfer in queue:
                    await self._transfer(client, transfer, previous)
                    self.progress.finished(transfer)

            # more workers than network slots: one file's disk work overlaps others' transfers;
            # a thread per worker, and one more per transfer reading a socket (Sink.pump)
            workers = min(2 * self.options.concurrency, len(transfers))
            threads = workers + min(workers, self.options.concurrency) + 1
            with ThreadPoolExecutor(threads, "thisme-write") as self._pool:
                await asyncio.gather(*(worker() for _ in range(workers)))
            self._pool = None
        self._write_outputs(result)
        result.seconds = time.perf_counter() - started
        return result

    @contextlib.asynccontextmanager
    async def _network_slot(self, href: str) -> AsyncIterator[None]:
        """One of ``concurrency`` transfers on the network, and of ``per_host`` for its host."""
        host = urlsplit(href).netloc.lower()
        if host not in self._host_limits:
            self._host_limits[host] = asyncio.Semaphore(self.options.per_host)
        async with self._host_limits[host], self._slots:
            yield

    def _previous_manifest(self) -> dict[str, dict[str, Any]]:
        """Entries of an earlier run: they make files without declared checksums verifiable."""
        path = self.dest / MANIFEST
        try:
            entries = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return {}
        if not isinstance(entries, list):
            return {}
        return {
            str(e.get("path")): e
            for e in entries
            if isinstance(e, dict) and e.get("status") in ("downloaded", "skipped")
        }

    async def _sizes(self, client: httpx.AsyncClient, transfers: list[Transfer]) -> None:
        """Dry run: declared sizes, else HEAD Content-Length, else a one-byte Range GET."""
        slots = asyncio.Semaphore(self.options.concurrency)

        async def one(transfer: Transfer) -> None:
            transfer.status = "planned"
            transfer.size = transfer.expected.size
            if transfer.size is not None:
                return
            async with slots:
                transfer.size = await self._remote_size(client, transfer)

        await asyncio.gather(*(one(t) for t in transfers))

    async def _remote_size(self, client: httpx.AsyncClient, transfer: Transfer) -> int | None:
        headers = await self._auth_for(transfer)
        try:
            response = await client.head(transfer.href, headers=headers)
            length = response.headers.get("Content-Length", "")
            if response.status_code < 400 and length.isdigit():
                return int(length)
            headers["Range"] = "bytes=0-0"
            async with client.stream("GET", transfer.href, headers=headers) as response:
                tail = response.headers.get("Content-Range", "").rpartition("/")[2]
                if response.status_code == 206 and tail.isdigit():
                    return int(tail)
        except httpx.HTTPError:
            pass
        return None

    async def _auth_for(
        self, transfer: Transfer, *, refused: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """Token headers for resto hosts; after a refusal of ``refused``, one new login."""
        provider = self._token_provider
        if provider is None or self._token_lock is None:
            return {}
        if urlsplit(transfer.href).netloc.lower() not in self._token_hosts:
            return {}
        async with self._token_lock:  # one login at a time, not one per waiting transfer
            refresh = refused is not None and refused == self._token_headers
            headers = dict(await asyncio.to_thread(provider, refresh))
            self._token_headers = headers
            return dict(headers)

    # --- one file ----------------------------------------------------------------------------
    def _learn_size(self, transfer: Transfer, size: int | None) -> None:
        if transfer.sized or size is None:
            return
        transfer.sized = True
        self._known += size
        self._unsized -= 1
        if not self._unsized:
            self.progress.sized(self._known)

    def _report(self, transfer: Transfer, on_disk: int) -> None:
        delta = on_disk - transfer.counted
        if delta:
            transfer.counted = on_disk
            self.progress.advance(delta)

    def _verified_existing(self, transfer: Transfer, previous: dict[str, dict[str, Any]]) -> bool:
        """A final file that provably is the asset (declared size/checksum, or the manifest)."""
        path = transfer.path
        if not path.is_file():
            return False
        expected = transfer.expected
        size = path.stat().st_size
        if expected.size is not None and size != expected.size:
            return False
        relative = path.relative_to(self.dest.resolve()).as_posix()
        earlier = previous.get(relative)
        if not expected.verifiable and earlier is None:
            return False  # unverifiable: fetch again
        size, sha, reason = check_file(path, expected)
        if reason is not None:
            return False
        # the manifest of an earlier run also catches damage that keeps the size
        vouched = earlier is None or (earlier.get("sha256"), earlier.get("size")) == (sha, size)
        if vouched:
            transfer.size, transfer.sha256 = size, sha
        return vouched

    async def _transfer(
        self,
        client: httpx.AsyncClient,
        transfer: Transfer,
        previous: dict[str, dict[str, Any]],
    ) -> None:
        part = transfer.path.with_name(transfer.path.name + ".part")
        state = await self._io(self._prepare, transfer, part, previous)
        if state is None:  # verified: skipped, or a complete .part renamed
            self._learn_size(transfer, transfer.size)
            self._report(transfer, transfer.size or 0)
            return
        attempt = 0
        while True:
            headers: dict[str, str] = {}
            try:
                async with self._network_slot(transfer.href):
                    headers = await self._auth_for(transfer)
                    sink, total = await self._fetch(client, transfer, part, headers, state)
                # closing, verifying and renaming need no network slot
                finish = functools.partial(self._finish, transfer, part, total, sink.digests)
                await sink.close(then=finish)
                return
            except _AuthRefused:
                # a refused token: log in again (a token can expire between login and use,
                # so each refusal costs one attempt); no token at all: nothing to try
                attempt += 1
                if not headers or attempt >= self.options.retries:
                    transfer.status, transfer.error = "failed", "access refused (401/403)"
                    return
                # renew at once, before waiting transfers take the slot with the same token
                await self._auth_for(transfer, refused=headers)
                continue
            except _Retryable as err:
                state = None  # look at the .part again
                attempt += 1
                if attempt >= self.options.retries:
                    transfer.status, transfer.error = "failed", str(err)
                    return
                cap = min(self.options.max_backoff, self.options.backoff * 2 ** (attempt - 1))
                delay = random.uniform(cap / 2, cap)
                if err.retry_after is not None:
                    delay = max(delay, err.retry_after)
                log.info("%s: %s; retry %d in %.1f s", transfer.item_id, err, attempt, delay)
                await asyncio.sleep(delay)
            except DownloadError as err:
                transfer.status, transfer.error = "failed", str(err)
                return
            except OSError as err:
                transfer.status, transfer.error = "failed", f"cannot write {part}: {err.strerror}"
                return

    async def _io(self, function: Callable[..., T], *args: Any) -> T:
        """File-system work off the event loop (in the writer pool)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, function, *args)

    def _prepare(
        self, transfer: Transfer, part: Path, previous: dict[str, dict[str, Any]]
    ) -> tuple[int, str | None] | None:
        """Before the first request, in one thread call: None when the file needs no request
        (a verified final file: skipped; a complete ``.part``: renamed), else the resume state.
        """
        if self._verified_existing(transfer, previous):
            transfer.status = "skipped"
            return None
        transfer.path.parent.mkdir(parents=True, exist_ok=True)
        offset, etag = _resume_state(part)
        expected = transfer.expected
        if expected.size is None or offset < expected.size:
            return offset, etag
        if offset == expected.size:  # killed between the last write and the rename
            size, sha, reason = check_file(part, expected)
            if reason is None:
                os.replace(part, transfer.path)
                _etag_file(part).unlink(missing_ok=True)
                transfer.size, transfer.sha256, transfer.status = size, sha, "downloaded"
                return None
        part.unlink()  # too long, or the wrong bytes: start again
        return 0, None

    async def _fetch(
        self,
        client: httpx.AsyncClient,
        transfer: Transfer,
        part: Path,
        auth: dict[str, str],
        state: tuple[int, str | None] | None,
    ) -> tuple[_Sink, int | None]:
        """Request (resuming a ``.part``) and receive the body into a sink left open."""
        offset, etag = state if state is not None else await self._io(_resume_state, part)
        headers = dict(auth)
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if etag and not etag.startswith("W/"):
                headers["If-Range"] = etag
        try:
            async with client.stream("GET", transfer.href, headers=headers) as response:
                status = response.status_code
                if status in (401, 403):
                    raise _AuthRefused()
                if status == 416 and offset:
                    part.unlink(missing_ok=True)  # the .part is not a prefix of this file
                    raise _Retryable("range not satisfiable; restarting", None)
                if status in RETRY_STATUS:
                    wait = retry_after(response, self.options.max_retry_after)
                    raise _Retryable(f"server answered {status}", wait)
                if status >= 400:
                    raise DownloadError(f"server answered {status} for {redact(transfer.href)}")
                served_etag = response.headers.get("ETag")
                if status == 200:
                    offset = 0  # the server ignored the Range, or the file changed: start over
                elif not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                    part.unlink(missing_ok=True)
                    raise _Retryable("unexpected Content-Range; restarting", None)
                elif etag and served_etag and served_etag != etag:
                    part.unlink(missing_ok=True)
                    raise _Retryable("the file changed on the server; restarting", None)
                total = _total(response)
                if total is not None and transfer.expected.size not in (None, total):
                    raise DownloadError(
                        f"{transfer.item_id}/{transfer.key}: the server has {total} bytes, "
                        f"the item declares {transfer.expected.size}"
                    )
                self._learn_size(transfer, total)
                # small files restart quickly: only larger ones keep an ETag for If-Range
                keep = served_etag if total is None or total > BATCH else None
                sink = _Sink(part, offset, keep, Digests(transfer.expected), self._pool)
                await self._stream(response, transfer, part, sink, offset)
                return sink, total
        except httpx.TimeoutException as err:
            raise _Retryable(f"timeout ({type(err).__name__})", None) from None
        except httpx.TransportError as err:
            raise _Retryable(f"connection problem ({type(err).__name__})", None) from None

    async def _stream(
        self,
        response: httpx.Response,
        transfer: Transfer,
        part: Path,
        sink: _Sink,
        offset: int,
    ) -> None:
        """Body -> sink (appending at ``offset``); after an error the sink is closed."""
        digests = sink.digests
        received = offset

        def count(nbytes: int) -> None:
            nonlocal received
            transfer.fetched_bytes += nbytes
            received += nbytes
            if received - transfer.counted >= PROGRESS_STEP:
                self._report(transfer, received)

        try:
            if offset:  # the bytes already on disk count towards the checksums
                await self._io(digests.feed, part)
            self._report(transfer, offset)
            # chunks as received (no re-chunking), so that a dropped connection keeps them
            direct = direct_body(response)
            if direct is None:
                async for chunk in response.aiter_raw():
                    await sink.add(chunk)
                    count(len(chunk))
            else:
                for chunk in direct.buffered:
                    await sink.add(chunk)
                    count(len(chunk))
                if direct.socket is not None:
                    await sink.pump(direct, count)
                else:
                    async with contextlib.aclosing(direct.chunks()) as chunks:
                        async for chunk in chunks:
                            await sink.add(chunk)
                            count(len(chunk))
        except BaseException:
            await sink.close()
            raise
        self._report(transfer, received)

    def _finish(self, transfer: Transfer, part: Path, total: int | None, digests: Digests) -> None:
        """Verify the complete ``.part`` and rename it; a bad file is removed, not kept."""
        size = part.stat().st_size
        if total is not None and size < total:
            raise _Retryable(f"connection closed after {size} of {total} bytes", None)
        expected = transfer.expected
        reason = problem(expected, size, digests.declared)
        if reason is None and not expected.verifiable and total is not None and size != total:
            reason = f"size {size} differs from Content-Length {total}"
        if reason is not None:
            part.unlink(missing_ok=True)
            _etag_file(part).unlink(missing_ok=True)
            raise ChecksumMismatch(f"{transfer.item_id}/{transfer.key}: {reason}")
        os.replace(part, transfer.path)
        _etag_file(part).unlink(missing_ok=True)
        transfer.size, transfer.sha256, transfer.status = size, digests.sha256, "downloaded"

    # --- outputs -----------------------------------------------------------------------------
    def _write_outputs(self, result: DownloadResult) -> None:
        """``manifest.json`` and ``items.json`` (asset hrefs -> relative local paths)."""
        dest = self.dest.resolve()
        atomic_json(self.dest / MANIFEST, [t.entry(dest) for t in result.transfers])
        local = {
            (t.item_id, t.key): t.path.relative_to(dest).as_posix()
            for t in result.transfers
            if t.status in ("downloaded", "skipped")
        }
        features = []
        for item in result.items:
            copy = orjson.loads(orjson.dumps(item))
            for key, asset in (copy.get("assets") or {}).items():
                path = local.get((str(copy.get("id")), key))
                if path is not None:
                    asset["href"] = f"./{path}"
                elif _is_remote(asset.get("href")):  # not fetched: no token kept in its URL
                    asset["href"] = redact(str(asset["href"]))
            copy["links"] = [
                link
                for link in copy.get("links") or []
                if link.get("rel") not in ("self", "root", "parent", "collection")
            ]
            features.append(copy)
        atomic_json(self.dest / ITEMS, {"type": "FeatureCollection", "features": features})


def _is_remote(href: object) -> bool:
    return isinstance(href, str) and href.startswith(("http://", "https://"))


def _total(response: httpx.Response) -> int | None:
    """The whole file's size: Content-Range's total for 206, Content-Length for 200."""
    if response.status_code == 206:
        tail = response.headers.get("Content-Range", "").rpartition("/")[2]
        return int(tail) if tail.isdigit() else None
    length = response.headers.get("Content-Length", "")
    return int(length) if length.isdigit() else None


def _etag_file(part: Path) -> Path:
    return part.with_name(part.name + ".etag")


def _resume_state(part: Path) -> tuple[int, str | None]:
    """Bytes already in ``part`` and the ETag they came with."""
    try:
        offset = part.stat().st_size
    except FileNotFoundError:
        return 0, None
    try:
        etag = _etag_file(part).read_text().strip() or None
    except OSError:
        etag = None
    return offset, etag if offset else None


def _open_part(part: Path, offset: int, etag: str | None) -> IO[bytes]:
    """Open ``part`` to append at ``offset`` (or anew), noting the ETag of a new one."""
    if offset == 0:
        if etag:
            _etag_file(part).write_text(etag)
        else:
            _etag_file(part).unlink(missing_ok=True)
        return part.open("wb")
    return part.open("ab")


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _AuthRefused(Exception):
    pass
