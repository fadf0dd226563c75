"""PageWriter: background, ordered, grouped page transactions on a real SQLite store."""

from __future__ import annotations

import copy
import sqlite3
import threading
from pathlib import Path

import pytest

from tests.stac_items import simulated_items
from thisme_stac.errors import StoreError
from thisme_stac.store.base import UpsertResult
from thisme_stac.store.sqlite import SQLiteStore
from thisme_stac.store.writer import PageWriter

ITEMS = simulated_items(step=97)  # ~200 items
KEY = "harvest:test"


def _pages(size: int) -> list[list[dict[str, object]]]:
    return [ITEMS[i : i + size] for i in range(0, len(ITEMS), size)]


def test_pages_are_committed_in_order_with_their_checkpoints(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "w.sqlite")
    commits: list[tuple[UpsertResult, list[int]]] = []
    pages = _pages(20)
    with PageWriter(store, KEY, lambda r, tags: commits.append((r, tags))) as writer:
        for number, page in enumerate(pages):
            writer.add(page, f"after page {number}", number)
        writer.flush()
    assert [n for _, tags in commits for n in tags] == list(range(len(pages)))
    assert sum(r.new for r, _ in commits) == len(ITEMS) == store.count_items()
    assert store.get_checkpoint(KEY) == f"after page {len(pages) - 1}"
    store.close()


def test_pages_arriving_while_the_store_is_busy_share_one_transaction(tmp_path: Path) -> None:
    path = tmp_path / "w.sqlite"
    store = SQLiteStore(path)
    pages = _pages(10)
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # the writer thread waits for this lock
    commits: list[list[int]] = []
    seen: list[str | None] = []

    def on_commit(result: UpsertResult, tags: list[int]) -> None:
        commits.append(tags)
        seen.append(store.get_checkpoint(KEY))

    with PageWriter(store, KEY, on_commit) as writer:
        writer.add(pages[0], "cp 0", 0)  # submitted at once, then blocked
        for number in (1, 2, 3):
            writer.add(pages[number], f"cp {number}", number)  # queued behind it
        threading.Timer(0.3, blocker.rollback).start()
        writer.flush()
    assert commits == [[0], [1, 2, 3]]
    assert seen == ["cp 0", "cp 3"]
    assert store.count_items() == sum(len(p) for p in pages[:4])
    blocker.close()
    store.close()


def test_a_failed_transaction_stops_every_later_write(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "w.sqlite")
    pages = _pages(20)
    broken = copy.deepcopy(pages[1])
    broken[5]["geometry"] = {"type": "Polygon", "coordinates": []}
    commits: list[list[int]] = []

    def write_three_pages() -> None:
        writer.add(pages[0], "cp 0", 0)
        writer.add(broken, "cp 1", 1)
        writer.add(pages[2], "cp 2", 2)
        writer.flush()

    with (
        PageWriter(store, KEY, lambda r, tags: commits.append(tags)) as writer,
        pytest.raises(StoreError),
    ):
        write_three_pages()
    with pytest.raises(StoreError):
        writer.flush()  # still refuses: page 2 must not be stored after the failed page 1
    assert commits == [[0]]
    assert store.get_checkpoint(KEY) == "cp 0"
    assert store.count_items() == len(pages[0])
    store.close()
