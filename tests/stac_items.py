"""THISME-like STAC items for store tests, made by the real translator from simulator records."""

from __future__ import annotations

from typing import Any

from thisme_stac.simulator import GeneratedCatalogue
from thisme_stac.simulator.server import Resto, _Options
from thisme_stac.translate.item import feature_to_item_dict


def simulated_items(count: int | None = None, step: int = 1) -> list[dict[str, Any]]:
    """Items translated from the simulator's catalogue (every ``step``-th map, newest first)."""
    catalogue = GeneratedCatalogue()
    resto = Resto(catalogue, _Options())
    positions = range(0, len(catalogue), step)
    items = [
        feature_to_item_dict(resto.feature(p, "http://127.0.0.1:5252", with_sort=True))
        for p in positions
    ]
    return items[:count] if count else items
