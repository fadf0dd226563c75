"""The search bbox as both stores read it."""

from __future__ import annotations

import pytest

from thisme_stac.store.bbox import bbox_boxes
from thisme_stac.store.cql2sql import InvalidQuery


def test_plain_3d_and_antimeridian_boxes() -> None:
    assert bbox_boxes([10, 40, 12, 42]) == [(10.0, 40.0, 12.0, 42.0)]
    assert bbox_boxes([10, 40, -5, 12, 42, 900]) == [(10.0, 40.0, 12.0, 42.0)]
    assert bbox_boxes([170, -10, -170, 10]) == [
        (170.0, -10.0, 180.0, 10.0),
        (-180.0, -10.0, -170.0, 10.0),
    ]


@pytest.mark.parametrize(
    ("bbox", "message"),
    [
        ([1, 2, 3], "4 or 6 numbers"),
        ([1, 2, 3, 4, 5], "4 or 6 numbers"),
        (["west", 2, 3, 4], "4 or 6 numbers"),
        ([None, 2, 3, 4], "4 or 6 numbers"),
        ([0, 10, 1, 5], "south is greater than north"),
    ],
)
def test_bad_boxes_are_invalid_queries(bbox: list[object], message: str) -> None:
    with pytest.raises(InvalidQuery, match=message):
        bbox_boxes(bbox)  # type: ignore[arg-type]
