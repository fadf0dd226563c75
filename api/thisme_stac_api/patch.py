"""JSON Merge Patch (RFC 7396) and JSON Patch (RFC 6902) for the transaction PATCH routes."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from thisme_stac.errors import ConfigError


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: ``null`` removes a member, objects merge recursively, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ConfigError(f"JSON pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], path: str) -> Any:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise ConfigError(f"path {path!r} does not exist")
    return node


def _get(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    parent = _parent(doc, parts, path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise ConfigError(f"path {path!r} does not exist")


def _remove(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        raise ConfigError("cannot remove the whole document")
    parent = _parent(doc, parts, path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise ConfigError(f"path {path!r} does not exist")


def _add(doc: Any, path: str, value: Any, *, replace: bool) -> Any:
    parts = _pointer(path)
    if not parts:
        return copy.deepcopy(value)
    parent = _parent(doc, parts, path)
    last = parts[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise ConfigError(f"path {path!r} does not exist")
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        if last == "-" and not replace:
            parent.append(copy.deepcopy(value))
        elif last.isdigit() and int(last) <= len(parent) - (1 if replace else 0):
            if replace:
                parent[int(last)] = copy.deepcopy(value)
            else:
                parent.insert(int(last), copy.deepcopy(value))
        else:
            raise ConfigError(f"path {path!r} is not a valid array index")
    else:
        raise ConfigError(f"path {path!r} does not exist")
    return doc


def json_patch(document: Mapping[str, Any], operations: Iterable[Mapping[str, Any]]) -> Any:
    """Apply RFC 6902 operations to a copy of ``document``; ConfigError if one fails."""
    doc: Any = copy.deepcopy(dict(document))
    for op in operations:
        name = op.get("op")
        path = str(op.get("path", ""))
        if name == "add":
            doc = _add(doc, path, op.get("value"), replace=False)
        elif name == "replace":
            doc = _add(doc, path, op.get("value"), replace=True)
        elif name == "remove":
            _remove(doc, path)
        elif name == "test":
            if _get(doc, path) != op.get("value"):
                raise ConfigError(f"test failed at {path!r}")
        elif name in ("move", "copy"):
            source = str(op.get("from", op.get("from_", "")))
            value = _remove(doc, source) if name == "move" else copy.deepcopy(_get(doc, source))
            doc = _add(doc, path, value, replace=False)
        else:
            raise ConfigError(f"unknown JSON Patch operation {name!r}")
    return doc
