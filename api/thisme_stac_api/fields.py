"""The fields extension: include/exclude dotted paths of an item (pure functions)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: What an item keeps when only ``include`` is given (the extension's "default set").
DEFAULT_INCLUDE = frozenset(
    {
        "type",
        "stac_version",
        "stac_extensions",
        "id",
        "collection",
        "geometry",
        "bbox",
        "links",
        "assets",
        "properties.datetime",
    }
)


def split_fields(values: Iterable[str]) -> tuple[set[str], set[str]]:
    """GET form (``a,+b,-c``) into include and exclude sets."""
    include: set[str] = set()
    exclude: set[str] = set()
    for raw in values:
        name = raw.strip()
        if not name:
            continue
        if name.startswith("-"):
            exclude.add(name[1:].strip())
        else:
            include.add(name.removeprefix("+").strip())
    return include, exclude


def _copy_path(source: dict[str, Any], target: dict[str, Any], parts: list[str]) -> None:
    head = parts[0]
    if head not in source:
        return
    if len(parts) == 1:
        target[head] = source[head]
        return
    value = source[head]
    if isinstance(value, dict):
        child = target.get(head)
        if not isinstance(child, dict):
            child = {}
            target[head] = child
        _copy_path(value, child, parts[1:])


def _remove_path(target: dict[str, Any], parts: list[str]) -> None:
    head = parts[0]
    if len(parts) == 1:
        target.pop(head, None)
        return
    value = target.get(head)
    if isinstance(value, dict):
        value = dict(value)
        target[head] = value
        _remove_path(value, parts[1:])


def _position(item: dict[str, Any], path: str) -> tuple[int, str]:
    """Keep the item's own key order in the output."""
    head = path.split(".", 1)[0]
    keys = list(item)
    return (keys.index(head) if head in keys else len(keys), path)


def apply_fields(
    item: dict[str, Any], include: set[str] | None, exclude: set[str]
) -> dict[str, Any]:
    """Fields extension 1.0.0 on one item.

    ``include`` None (a POST body without ``include``) with an ``exclude``: the whole item minus
    the excluded fields; empty or None otherwise: the default set; else exactly those fields.
    An excluded field is kept when it is also included, or holds an included nested field.
    """
    wanted: frozenset[str] | set[str] | None
    if include:
        wanted = include
    elif include is None and exclude:
        wanted = None
    else:
        wanted = DEFAULT_INCLUDE
    if wanted is None:
        result = dict(item)
    else:
        result = {}
        for path in sorted(wanted, key=lambda p: _position(item, p)):
            _copy_path(item, result, path.split("."))
    kept = include or set()
    for path in exclude:
        if path in kept or any(k.startswith(path + ".") for k in kept):
            continue
        _remove_path(result, path.split("."))
    return result
