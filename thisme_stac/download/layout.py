"""Local paths for downloaded assets: a template filled with sanitised components.

Every component is cleaned so that no id, href or file name coming from a server can leave the
destination directory or trip an operating system: no separators, no ``..``, no drive letters,
no control or reserved characters, no reserved Windows device names, bounded length.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from thisme_stac.errors import ConfigError

DEFAULT_LAYOUT = "{collection}/{site}/{id}/{filename}"
FIELDS = ("collection", "site", "id", "asset", "filename", "year", "platform")
MAX_COMPONENT_BYTES = 120
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])(\..*)?$", re.IGNORECASE)
_EXTENSIONS = {
    "image/tiff": ".tif",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "application/json": ".json",
    "application/geo+json": ".geojson",
    "application/zip": ".zip",
    "application/x-netcdf": ".nc",
}


def sanitise(component: str) -> str:
    """One safe path component (never empty, never ``.`` or ``..``)."""
    text = unicodedata.normalize("NFC", component)
    text = _UNSAFE.sub("_", text).strip(" .")
    if not text:
        text = "_"
    if _RESERVED.match(text):
        text = "_" + text
    raw = text.encode()
    if len(raw) > MAX_COMPONENT_BYTES:
        digest = hashlib.sha256(raw).hexdigest()[:10]
        stem, dot, ext = text.rpartition(".")
        keep_ext = f".{ext}" if dot and 0 < len(ext.encode()) <= 10 else ""
        budget = MAX_COMPONENT_BYTES - len(keep_ext.encode()) - len(digest) - 1
        head = (stem if keep_ext else text).encode()[:budget].decode(errors="ignore")
        text = f"{head}-{digest}{keep_ext}"
    return text


def _extension(media_type: str | None) -> str:
    base = (media_type or "").split(";")[0].strip().lower()
    return _EXTENSIONS.get(base) or mimetypes.guess_extension(base) or ""


def asset_filename(item_id: str, key: str, asset: Mapping[str, Any]) -> str:
    """The href's last path segment when it names a file, else ``<id>[-<key>]<ext>``."""
    path = unquote(urlsplit(str(asset.get("href", ""))).path)
    name = PurePosixPath(path.replace("\\", "/")).name
    if "." in name.strip("."):
        return name
    suffix = "" if key == "data" else f"-{key}"
    return f"{item_id}{suffix}{_extension(asset.get('type'))}"


def check_layout(template: str) -> str:
    """Refuse templates with unknown fields or absolute/parent components."""
    try:
        template.format(**dict.fromkeys(FIELDS, "x"))
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(
            f"layout {template!r} is not valid (fields: {', '.join(FIELDS)}): {err}"
        ) from None
    if "{filename}" not in template:
        raise ConfigError(f"layout {template!r} must contain {{filename}}")
    return template


def local_path(
    dest: Path, template: str, item: Mapping[str, Any], key: str, asset: Mapping[str, Any]
) -> Path:
    """Where an asset goes under ``dest``; raises ConfigError if it would leave ``dest``."""
    props = item.get("properties") or {}
    item_id = str(item.get("id") or "item")
    values = {
        "collection": str(item.get("collection") or "items"),
        "site": str(props.get("thisme:site") or "any-site"),
        "id": item_id,
        "asset": key,
        "filename": asset_filename(item_id, key, asset),
        "year": str(props.get("datetime") or "")[:4] or "undated",
        "platform": str(props.get("platform") or "unknown"),
    }
    # fill with placeholders first, so that separators inside values cannot add levels
    marks = {name: f"\x00{name}\x00" for name in FIELDS}
    parts = []
    for raw in template.format(**marks).replace("\\", "/").split("/"):
        if raw in ("", ".", ".."):
            continue
        for name, mark in marks.items():
            raw = raw.replace(mark, values[name])
        parts.append(sanitise(raw))
    root = dest.resolve()
    target = root.joinpath(*parts).resolve()
    if os.path.commonpath([root, target]) != str(root) or target == root:
        raise ConfigError(f"refusing to write outside {dest}: {'/'.join(parts)}")
    return target
