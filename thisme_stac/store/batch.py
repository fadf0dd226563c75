"""Checks every store applies to a batch of items before writing it."""

from __future__ import annotations

from typing import Any

import orjson
import shapely

from thisme_stac.store.base import JSON
from thisme_stac.store.cql2sql import InvalidQuery


def item_key(item: JSON) -> tuple[str, str]:
    """An item's (id, collection), both non-empty strings; InvalidQuery otherwise."""
    item_id, collection = item.get("id"), item.get("collection")
    if not isinstance(item_id, str) or not item_id:
        raise InvalidQuery("an item needs a string id")
    if not isinstance(collection, str) or not collection:
        raise InvalidQuery(f"item {item_id!r} has no collection")
    return item_id, collection


def item_geometries(items: list[JSON]) -> list[Any]:
    """Each item's shapely geometry (one vectorised parse); InvalidQuery names a bad item."""
    texts: list[str] = []
    for item in items:
        item_id, _ = item_key(item)
        geometry = item.get("geometry")
        if not isinstance(geometry, dict):
            raise InvalidQuery(f"item {item_id!r} has no geometry")
        texts.append(orjson.dumps(geometry).decode())
    if not texts:
        return []
    try:
        geoms = list(shapely.from_geojson(texts, on_invalid="raise"))
    except Exception:  # shapely raises GEOSException and others for bad GeoJSON
        geoms = []
        for item, text in zip(items, texts, strict=True):
            try:
                geoms.append(shapely.from_geojson(text, on_invalid="raise"))
            except Exception:
                raise InvalidQuery(f"item {item['id']!r} has an invalid geometry") from None
    for item, geom in zip(items, geoms, strict=True):
        if geom is None or geom.is_empty:
            raise InvalidQuery(f"item {item['id']!r} has an empty geometry")
    return geoms


def time_span(item: JSON) -> tuple[str, str]:
    """(start, end) RFC 3339 strings of an item; InvalidQuery when it has no datetime."""
    props = item.get("properties") or {}
    start = props.get("start_datetime") or props.get("datetime")
    end = props.get("end_datetime") or props.get("datetime") or start
    if not isinstance(start, str) or not isinstance(end, str):
        raise InvalidQuery(f"item {item.get('id')!r} has no datetime")
    return start, end


def grow_extent(
    extents: dict[str, list[Any]],
    collection: str,
    bounds: tuple[float, float, float, float],
    start: Any,
    end: Any,
) -> None:
    """Grow ``extents[collection]`` = [minx, miny, maxx, maxy, start, end] to take one item in
    (times of any comparable kind: the stores keep microseconds or datetimes)."""
    minx, miny, maxx, maxy = bounds
    ext = extents.get(collection)
    if ext is None:
        extents[collection] = [minx, miny, maxx, maxy, start, end]
        return
    ext[0], ext[1] = min(ext[0], minx), min(ext[1], miny)
    ext[2], ext[3] = max(ext[2], maxx), max(ext[3], maxy)
    ext[4], ext[5] = min(ext[4], start), max(ext[5], end)
