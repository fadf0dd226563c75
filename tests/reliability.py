"""Results of reliability trials, collected for ``docs/reliability.md``.

A reliability test asserts on its own figures, then calls :func:`record` so that
``scripts/reliability_report.py`` (which sets ``THISME_RELIABILITY_LOG``) can tabulate what was
tried, how many times, and what was lost. Without the variable, :func:`record` does nothing.
"""

from __future__ import annotations

import os
from typing import Any

import orjson

LOG_ENV = "THISME_RELIABILITY_LOG"


def record(
    area: str,
    trial: str,
    *,
    runs: int,
    lost: int = 0,
    duplicated: int = 0,
    errors: int = 0,
    **figures: Any,
) -> None:
    """Append one result line: ``area`` (harvest, download, api, input), what was ``trial``-ed,
    how many ``runs``, items/files ``lost`` and ``duplicated``, unexpected ``errors``, and any
    further figures (p50_ms, requests, 5xx, ...). One ``write`` per line: safe across processes.
    """
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    line = orjson.dumps(
        {
            "area": area,
            "trial": trial,
            "runs": runs,
            "lost": lost,
            "duplicated": duplicated,
            "errors": errors,
            "figures": figures,
        },
        option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_SORT_KEYS,
    )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
