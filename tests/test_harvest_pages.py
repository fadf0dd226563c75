"""The child-process page pipeline: frames between the processes, translation per page."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from thisme_stac.harvest_pages import _Frames, translate_page
from thisme_stac.resto.client import RestoPage
from thisme_stac.store.cql2sql import InvalidQuery
from thisme_stac.store.sqlite import prepare_rows

WRITER = """
import os, random, sys, zlib
from thisme_stac.harvest_pages import _Frames
frames = _Frames(sys.stdin.buffer, sys.stdout.buffer)
rng = random.Random(7)
for n in range(int(sys.argv[1])):
    blob = rng.randbytes(rng.randint(1, 3_000_000))
    frames.send(("page", n, zlib.crc32(blob), blob))
frames.send(("done",))
"""


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="job control signals are POSIX")
def test_frames_survive_a_child_stopped_and_continued_while_it_writes() -> None:
    """Ctrl-Z / fg (SIGSTOP, SIGCONT) of the child mid-write: every frame arrives whole.

    Python's buffered pipe files lose or repeat bytes when a large write is interrupted this way;
    the frames use plain descriptor loops.
    """
    frames_sent = 120
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(frames_sent)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    frames = _Frames(child.stdout, child.stdin)
    done = threading.Event()

    def stop_and_continue() -> None:
        while not done.is_set() and child.poll() is None:
            os.kill(child.pid, signal.SIGSTOP)
            time.sleep(0.001)
            os.kill(child.pid, signal.SIGCONT)
            time.sleep(0.003)

    pester = threading.Thread(target=stop_and_continue, daemon=True)
    pester.start()
    received = []
    try:
        while True:
            message = frames.recv()
            if message[0] == "done":
                break
            _, number, crc, blob = message
            assert zlib.crc32(blob) == crc, f"frame {number} arrived damaged"
            received.append(number)
    finally:
        done.set()
        pester.join()
        os.kill(child.pid, signal.SIGCONT)
        child.wait(timeout=30)
    assert received == list(range(frames_sent))


CAPTURED = Path(__file__).parent / "data/resto/resto5-captured/search_thisme_urlq_on_features.json"


def _refusing(refused: str, items: list[dict[str, Any]]) -> list[Any]:
    """A store's prepare that refuses one product."""
    for item in items:
        if item["id"] == refused:
            raise InvalidQuery(f"item {item['id']!r} has an invalid geometry")
    return prepare_rows(items)


def test_an_item_the_store_refuses_is_skipped_not_the_page() -> None:
    body = orjson.loads(CAPTURED.read_bytes())
    features = body["features"]
    page = RestoPage(
        features=features,
        url="http://127.0.0.1/features",
        next_url=None,
        total_results=len(features),
        duplicates=0,
        raw_count=len(features),
        flavour="5",
    )
    refused = features[1]["properties"]["productIdentifier"]
    translated = translate_page(page, "SoilMoisture", functools.partial(_refusing, refused))
    assert [row.id for row in translated.items] == [
        f["properties"]["productIdentifier"] for f in features if f is not features[1]
    ]
    assert translated.fetched == len(features)
    assert len(translated.skipped) == 1
    assert refused in translated.skipped[0]
    assert "the store refuses it" in translated.skipped[0]
