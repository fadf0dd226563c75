"""The one reading of a search ``bbox`` that both stores share."""

from __future__ import annotations

from collections.abc import Sequence

from thisme_stac.store.cql2sql import InvalidQuery

Box = tuple[float, float, float, float]


def bbox_boxes(bbox: Sequence[float]) -> list[Box]:
    """(west, south, east, north) of a 2D or 3D bbox; one crossing the antimeridian (west >
    east) as two boxes. InvalidQuery for anything else."""
    try:
        box = [float(v) for v in bbox]
    except (TypeError, ValueError):
        raise InvalidQuery("bbox needs 4 or 6 numbers") from None
    if len(box) not in (4, 6):
        raise InvalidQuery("bbox needs 4 or 6 numbers")
    half = len(box) // 2
    west, south, east, north = box[0], box[1], box[half], box[half + 1]
    if south > north:
        raise InvalidQuery("bbox south is greater than north")
    if west <= east:
        return [(west, south, east, north)]
    return [(west, south, 180.0, north), (-180.0, south, east, north)]
