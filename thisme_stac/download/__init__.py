"""Bulk download of STAC assets: parallel, resumable (HTTP Range), verified, atomic.

``await Downloader(options).run(items)`` is the async core; ``download_items`` is the sync
facade, usable from scripts and from inside a running event loop (Jupyter).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx

from thisme_stac.download.core import (
    Downloader,
    DownloadOptions,
    DownloadResult,
    NetrcAuth,
    Progress,
    TokenProvider,
    Transfer,
    netrc_auth,
    run_async,
)

__all__ = [
    "DownloadOptions",
    "DownloadResult",
    "Downloader",
    "NetrcAuth",
    "Progress",
    "TokenProvider",
    "Transfer",
    "download_items",
    "netrc_auth",
]


def download_items(
    items: Iterable[dict[str, Any]],
    options: DownloadOptions,
    *,
    token_provider: TokenProvider | None = None,
    token_hosts: Iterable[str] = (),
    progress: Progress | None = None,
    auth: httpx.Auth | None = None,
) -> DownloadResult:
    """Download the items' assets and wait; works inside a running event loop too."""
    downloader = Downloader(
        options,
        token_provider=token_provider,
        token_hosts=token_hosts,
        progress=progress,
        auth=auth,
    )
    return run_async(downloader.run(list(items)))
