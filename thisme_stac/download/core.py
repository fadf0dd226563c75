"""The async download core: plan, fetch to ``.part`` with Range resume, verify, rename.

One ``httpx.AsyncClient`` per run; N transfers under a semaphore (and a per-host limit);
constant memory (streamed 256 KiB chunks). Nothing unverified ever sits under a final name.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from thisme_stac import __version__
from thisme_stac.download.layout import DEFAULT_LAYOUT, check_layout, local_path
from thisme_stac.download.verify import Expected, expected_for, file_sha256, problem
from thisme_stac.errors import ConfigError, DownloadError
from thisme_stac.resto.client import redact

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
PROGRESS_STEP = 1 << 20
MANIFEST = "manifest.json"
ITEMS = "items.json"


@dataclass(frozen=True)
class DownloadOptions:
    """How to download: where, which assets, how hard to try."""

    dest: Path = Path()
    layout: str = DEFAULT_LAYOUT
    assets: Sequence[str] = ()
    concurrency: int = 4
    per_host: int = 4
    retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0
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
    """Callbacks the CLI connects to a progress bar; the default does nothing."""

    def planned(self, files: int, total_bytes: int | None) -> None: ...
    def advance(self, nbytes: int) -> None: ...
    def finished(self, transfer: Transfer) -> None: ...


TokenProvider = Callable[[bool], Mapping[str, str]]
"""``provider(refresh)`` -> auth headers for a resto host (``refresh`` forces a new token)."""


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def atomic_json(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside ``path``, then rename it into place."""
    part = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    part.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    os.replace(part, path)


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
        check_layout(options.layout)
        self.options = options
        self.dest = options.dest
        self.progress = progress or Progress()
        self._token_provider = token_provider
        self._token_hosts = {h.lower() for h in token_hosts}
        self._transport = transport
        self._auth = auth
        self._host_limits: dict[str, asyncio.Semaphore] = {}

    # --- planning ----------------------------------------------------------------------------
    def _selected(self, item: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        assets = item.get("assets") or {}
        if self.options.assets:
            return [(k, assets[k]) for k in self.options.assets if k in assets]
        data = [(k, a) for k, a in assets.items() if "data" in (a.get("roles") or [])]
        return data or list(assets.items())

    def plan(self, items: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Transfer]]:
        kept: list[dict[str, Any]] = []
        transfers: list[Transfer] = []
        seen: set[Path] = set()
        for item in items:
            kept.append(item)
            for key, asset in self._selected(item):
                href = str(asset.get("href") or "")
                if not href.startswith(("http://", "https://")):
                    continue
                path = local_path(self.dest, self.options.layout, item, key, asset)
                if path in seen:  # two assets mapped to one name: keep them apart
                    path = path.with_name(f"{key}-{path.name}")
                seen.add(path)
                transfers.append(
                    Transfer(str(item.get("id")), key, href, path, expected_for(asset))
                )
        return kept, transfers

    # --- running -----------------------------------------------------------------------------
    async def run(self, items: Iterable[dict[str, Any]]) -> DownloadResult:
        started = time.perf_counter()
        kept, transfers = self.plan(items)
        result = DownloadResult(transfers=transfers, items=kept)
        previous = self._previous_manifest()
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
            headers={"User-Agent": f"thisme-stac/{__version__}"},
        ) as client:
            if self.options.dry_run:
                await self._sizes(client, transfers)
                self.progress.planned(len(transfers), result.total_bytes)
                for transfer in transfers:
                    transfer.status = "planned"
                result.seconds = time.perf_counter() - started
                return result
            self.dest.mkdir(parents=True, exist_ok=True)
            known = [t.expected.size for t in transfers]
            total = sum(s for s in known if s is not None) if None not in known else None
            self.progress.planned(len(transfers), total)
            slots = asyncio.Semaphore(self.options.concurrency)

            async def one(transfer: Transfer) -> None:
                async with slots, self._host_slot(transfer.href):
                    await self._transfer(client, transfer, previous)
                self.progress.finished(transfer)

            await asyncio.gather(*(one(t) for t in transfers))
        self._write_outputs(result)
        result.seconds = time.perf_counter() - started
        return result

    def _host_slot(self, href: str) -> asyncio.Semaphore:
        host = urlsplit(href).netloc.lower()
        if host not in self._host_limits:
            self._host_limits[host] = asyncio.Semaphore(self.options.per_host)
        return self._host_limits[host]

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
        """Dry run: declared sizes, else HEAD Content-Length."""
        for transfer in transfers:
            if transfer.expected.size is not None:
                transfer.size = transfer.expected.size
                continue
            try:
                response = await client.head(transfer.href, headers=await self._auth_for(transfer))
                length = response.headers.get("Content-Length")
                transfer.size = int(length) if response.status_code < 400 and length else None
            except (httpx.HTTPError, ValueError):
                transfer.size = None

    async def _auth_for(self, transfer: Transfer, *, refresh: bool = False) -> dict[str, str]:
        if self._token_provider is None:
            return {}
        if urlsplit(transfer.href).netloc.lower() not in self._token_hosts:
            return {}
        provider = self._token_provider
        return dict(await asyncio.to_thread(provider, refresh))

    # --- one file ----------------------------------------------------------------------------
    def _verified_existing(self, transfer: Transfer, previous: dict[str, dict[str, Any]]) -> bool:
        path = transfer.path
        if not path.is_file():
            return False
        expected = transfer.expected
        relative = path.relative_to(self.dest.resolve()).as_posix()
        earlier = previous.get(relative)
        if not expected.verifiable and earlier is None:
            return False  # unverifiable: fetch again
        extra = expected.new_hash()
        sha = file_sha256(path, extra=extra)
        size = path.stat().st_size
        if problem(expected, size, extra.digest() if extra is not None else None):
            return False
        if (
            not expected.verifiable
            and earlier is not None
            and (earlier.get("sha256") != sha or earlier.get("size") != size)
        ):
            return False
        transfer.size, transfer.sha256 = size, sha
        return True

    async def _transfer(
        self,
        client: httpx.AsyncClient,
        transfer: Transfer,
        previous: dict[str, dict[str, Any]],
    ) -> None:
        if await asyncio.to_thread(self._verified_existing, transfer, previous):
            transfer.status = "skipped"
            self.progress.advance(transfer.size or 0)
            return
        transfer.path.parent.mkdir(parents=True, exist_ok=True)
        part = transfer.path.with_name(transfer.path.name + ".part")
        attempt = 0
        refreshed = False
        while True:
            try:
                await self._fetch(client, transfer, part, refresh=refreshed)
                return
            except _AuthRefused:
                if refreshed or self._token_provider is None:
                    transfer.status, transfer.error = "failed", "access refused (401/403)"
                    return
                refreshed = True
                continue
            except _Retryable as err:
                attempt += 1
                if attempt >= self.options.retries:
                    transfer.status, transfer.error = "failed", str(err)
                    return
                cap = min(self.options.max_backoff, self.options.backoff * 2**attempt)
                delay = random.uniform(0, cap)
                if err.retry_after is not None:
                    delay = max(delay, err.retry_after)
                log.info("%s: %s; retry %d in %.1f s", transfer.item_id, err, attempt, delay)
                await asyncio.sleep(delay)
            except DownloadError as err:
                transfer.status, transfer.error = "failed", str(err)
                return

    async def _fetch(
        self, client: httpx.AsyncClient, transfer: Transfer, part: Path, *, refresh: bool
    ) -> None:
        offset = part.stat().st_size if part.exists() else 0
        headers = await self._auth_for(transfer, refresh=refresh)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            async with client.stream("GET", transfer.href, headers=headers) as response:
                status = response.status_code
                if status in (401, 403):
                    raise _AuthRefused()
                if status == 416 and offset:
                    part.unlink(missing_ok=True)  # the .part is not a prefix of this file
                    raise _Retryable("range not satisfiable; restarting", None)
                if status in RETRY_STATUS:
                    raise _Retryable(f"server answered {status}", _retry_after(response))
                if status >= 400:
                    raise DownloadError(f"server answered {status} for {redact(transfer.href)}")
                total = self._total(response, offset)
                if status == 200:
                    offset = 0  # the server ignored the Range: start over
                elif not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                    part.unlink(missing_ok=True)
                    raise _Retryable("unexpected Content-Range; restarting", None)
                sha = hashlib.sha256()
                extra = transfer.expected.new_hash()
                if offset:  # the bytes already on disk count towards the checksums
                    await asyncio.to_thread(file_sha256, part, sha=sha, extra=extra)
                encoded = response.headers.get("Content-Encoding", "identity") != "identity"
                # as received (no re-chunking), so that a dropped connection keeps every byte
                chunks = response.aiter_bytes() if encoded else response.aiter_raw()
                pending = 0
                with part.open("ab" if offset else "wb") as handle:
                    async for chunk in chunks:
                        handle.write(chunk)
                        sha.update(chunk)
                        if extra is not None:
                            extra.update(chunk)
                        transfer.fetched_bytes += len(chunk)
                        pending += len(chunk)
                        if pending >= PROGRESS_STEP:
                            self.progress.advance(pending)
                            pending = 0
                self.progress.advance(pending)
        except httpx.TimeoutException as err:
            raise _Retryable(f"timeout ({type(err).__name__})", None) from None
        except httpx.TransportError as err:
            raise _Retryable(f"connection problem ({type(err).__name__})", None) from None
        await asyncio.to_thread(self._finish, transfer, part, total, sha, extra)

    @staticmethod
    def _total(response: httpx.Response, offset: int) -> int | None:
        content_range = response.headers.get("Content-Range", "")
        if response.status_code == 206 and "/" in content_range:
            tail = content_range.rsplit("/", 1)[1]
            return int(tail) if tail.isdigit() else None
        length = response.headers.get("Content-Length")
        encoded = response.headers.get("Content-Encoding", "identity") != "identity"
        return int(length) if length and length.isdigit() and not encoded else None

    def _finish(
        self, transfer: Transfer, part: Path, total: int | None, sha: Any, extra: Any | None
    ) -> None:
        """Verify the complete ``.part`` and rename it; a bad file is removed, not kept."""
        size = part.stat().st_size
        if total is not None and size < total:
            raise _Retryable(f"connection closed after {size} of {total} bytes", None)
        expected = transfer.expected
        reason = problem(expected, size, extra.digest() if extra is not None else None)
        if reason is None and not expected.verifiable and total is not None and size != total:
            reason = f"size {size} differs from Content-Length {total}"
        if reason is not None:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{transfer.item_id}/{transfer.key}: {reason}")
        os.replace(part, transfer.path)
        transfer.size, transfer.sha256, transfer.status = size, sha.hexdigest(), "downloaded"

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
            copy["links"] = [
                link
                for link in copy.get("links") or []
                if link.get("rel") not in ("self", "root", "parent", "collection")
            ]
            features.append(copy)
        atomic_json(self.dest / ITEMS, {"type": "FeatureCollection", "features": features})


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _AuthRefused(Exception):
    pass
