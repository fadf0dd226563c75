"""Bulk download of STAC assets: parallel, resumable (HTTP Range), verified, atomic.

``Downloader(options).run(items)`` is the async core; ``download_items`` is the sync facade,
usable from scripts and from inside a running event loop (Jupyter).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from typing import Any

from thisme_stac.download.core import (
    Downloader,
    DownloadOptions,
    DownloadResult,
    Progress,
    TokenProvider,
    Transfer,
)

__all__ = [
    "DownloadOptions",
    "DownloadResult",
    "Downloader",
    "Progress",
    "Transfer",
    "download_items",
]


def download_items(
    items: Iterable[dict[str, Any]],
    options: DownloadOptions,
    *,
    token_provider: TokenProvider | None = None,
    token_hosts: Iterable[str] = (),
    progress: Progress | None = None,
) -> DownloadResult:
    """Download the items' assets and wait; runs its own loop (in a thread if one is running)."""
    downloader = Downloader(
        options, token_provider=token_provider, token_hosts=token_hosts, progress=progress
    )
    items = list(items)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(downloader.run(items))
    outcome: dict[str, Any] = {}

    def worker() -> None:
        try:
            outcome["result"] = asyncio.run(downloader.run(items))
        except BaseException as err:  # re-raised in the caller's thread
            outcome["error"] = err

    thread = threading.Thread(target=worker, name="thisme-download")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    result: DownloadResult = outcome["result"]
    return result
