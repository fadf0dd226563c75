"""Shared test fixtures. Network is blocked (pytest-socket) except loopback servers we start."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
RESTO = DATA / "resto"
RESTO5_CAPTURED = RESTO / "resto5-captured"
RESTO5_INGEST = RESTO / "resto5-ingest"
RESTO2 = RESTO / "resto2-synthetic"
EXPECTED = Path(__file__).parent / "expected"


@pytest.fixture(scope="session")
def resto_data() -> Path:
    return RESTO
