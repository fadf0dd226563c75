"""A self-contained static STAC catalogue with relative links.

Layout (as pystac's default layout)::

    DEST/catalog.json                          root Catalog, one child link per collection
    DEST/<collection>/collection.json          the Collection, one item link per item
    DEST/<collection>/<item id>/<item id>.json the Items

Every link between these files is relative (no ``self`` links: the folder can be moved or
served from anywhere); asset hrefs are left as they are (absolute). Files are written with
orjson, not pystac's ``save`` (too slow for tens of thousands of items); pystac reads the result
(``pystac.Catalog.from_file(...).get_items(recursive=True)``). A collection's item links are
spooled to a temporary file while its items are written, so memory does not grow with the
number of items.

Ids that are not safe as file names (``/``, spaces, leading dots, ...) get a cleaned name with a
short hash; the ids inside the documents are unchanged.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from thisme_stac.errors import ConfigError, StoreError
from thisme_stac.export.common import JSON, Progress, order_item, without_links

STAC_VERSION = "1.1.0"
JSON_TYPE = "application/json"
GEOJSON_TYPE = "application/geo+json"
SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
ITEM_ADDED_RELS = ("root", "parent", "self")
COLLECTION_ADDED_RELS = ("root", "parent", "self", "item", "child")
INDENT = orjson.OPT_INDENT_2


def safe_name(identifier: str) -> str:
    """A file-system-safe name for an id: the id itself when safe, else cleaned + hash."""
    if SAFE.fullmatch(identifier) and identifier not in {".", ".."}:
        return identifier
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", identifier).strip("._")[:120] or "id"
    digest = hashlib.sha1(identifier.encode(), usedforsecurity=False).hexdigest()[:10]
    return f"{cleaned}-{digest}"


def _static_item(item: JSON) -> JSON:
    """The item with root/parent links added and its collection link pointing to the file."""
    links: list[JSON] = []
    has_collection = False
    for link in item.get("links") or []:
        if not isinstance(link, dict):
            continue
        rel = link.get("rel")
        if rel in ITEM_ADDED_RELS:
            continue
        if rel == "collection":
            if has_collection:
                continue
            has_collection = True
            if link.get("href") != "../collection.json":
                link = {**link, "href": "../collection.json", "type": JSON_TYPE}
        links.append(link)
    if not has_collection:
        links.append({"rel": "collection", "href": "../collection.json", "type": JSON_TYPE})
    links.append({"rel": "root", "href": "../../catalog.json", "type": JSON_TYPE})
    links.append({"rel": "parent", "href": "../collection.json", "type": JSON_TYPE})
    return {**item, "links": links}


class _CollectionWriter:
    """Writes one collection's items; ``close`` writes collection.json with its item links."""

    def __init__(self, root: Path, collection: JSON) -> None:
        self.collection = collection
        self.folder_name = safe_name(str(collection["id"]))
        self.folder = root / self.folder_name
        self.folder.mkdir()
        self.folder_text = str(self.folder)
        self.spool_path = self.folder / ".item-links.part"
        self.spool: IO[bytes] = self.spool_path.open("wb")
        self.count = 0

    def add(self, item: JSON) -> None:
        name = safe_name(str(item["id"]))
        # plain strings and os calls: pathlib is slower and interns every path part
        folder = os.path.join(self.folder_text, name)
        try:
            os.mkdir(folder)
        except FileExistsError:
            raise StoreError(
                f"two items of collection {self.collection['id']!r} map to the file name {name!r}"
            ) from None
        with open(os.path.join(folder, name + ".json"), "wb") as out:
            out.write(orjson.dumps(_static_item(item), option=INDENT))
        link = {"rel": "item", "href": f"./{name}/{name}.json", "type": GEOJSON_TYPE}
        self.spool.write(orjson.dumps(link, option=orjson.OPT_APPEND_NEWLINE))
        self.count += 1

    def close(self) -> None:
        self.spool.close()
        collection = without_links(self.collection, COLLECTION_ADDED_RELS)
        head_links = [
            {"rel": "root", "href": "../catalog.json", "type": JSON_TYPE},
            {"rel": "parent", "href": "../catalog.json", "type": JSON_TYPE},
            *collection.pop("links", []),
        ]
        head = orjson.dumps(collection, option=INDENT)
        with (self.folder / "collection.json").open("wb") as out:
            # {... pretty-printed fields ...,\n  "links": [\n    {...},\n    {...}\n  ]\n}
            out.write(head[:-2] if head.endswith(b"\n}") else head[:-1])
            out.write(b',\n  "links": [')
            first = True
            for link in head_links:
                out.write(b"\n    " if first else b",\n    ")
                out.write(orjson.dumps(link))
                first = False
            with self.spool_path.open("rb") as spool:
                for line in spool:
                    out.write(b"\n    " if first else b",\n    ")
                    out.write(line.rstrip(b"\n"))
                    first = False
            out.write(b"\n  ]\n}\n")
        self.spool_path.unlink()


def write_static(
    items: Iterable[JSON],
    collections: list[JSON],
    root: Path,
    *,
    title: str = "THISME soil-moisture maps",
    description: str = "Static STAC catalogue exported by thisme-stac.",
    progress: Progress | None = None,
) -> int:
    """Write the catalogue into the (new, empty) folder ``root``; returns the item count."""
    by_id = {str(c["id"]): c for c in collections}
    written: list[_CollectionWriter] = []
    current: _CollectionWriter | None = None
    done: set[str] = set()
    n = 0
    for item in items:
        cid = item.get("collection")
        if current is None or cid != current.collection["id"]:
            if current is not None:
                current.close()
                done.add(str(current.collection["id"]))
            if not isinstance(cid, str) or cid not in by_id:
                raise StoreError(
                    f"item {item.get('id')!r} belongs to collection {cid!r}, "
                    "which has no collection document in the store"
                )
            if cid in done:
                raise StoreError(f"the items of collection {cid!r} do not come together")
            current = _CollectionWriter(root, by_id[cid])
            written.append(current)
        current.add(item)
        n += 1
        if progress is not None and n % 1000 == 0:
            progress(n)
    if current is not None:
        current.close()
    # collections without items still belong to the catalogue
    for cid, collection in by_id.items():
        if not any(w.collection["id"] == cid for w in written):
            empty = _CollectionWriter(root, collection)
            empty.close()
            written.append(empty)
    if progress is not None:
        progress(n)

    child_links = [
        {
            "rel": "child",
            "href": f"./{w.folder_name}/collection.json",
            "type": JSON_TYPE,
            **({"title": w.collection["title"]} if w.collection.get("title") else {}),
        }
        for w in sorted(written, key=lambda w: str(w.collection["id"]))
    ]
    catalog = {
        "type": "Catalog",
        "stac_version": STAC_VERSION,
        "id": "thisme-stac",
        "title": title,
        "description": description,
        "links": [
            {"rel": "root", "href": "./catalog.json", "type": JSON_TYPE, "title": title},
            *child_links,
        ],
    }
    (root / "catalog.json").write_bytes(orjson.dumps(catalog, option=INDENT))
    return n


# --- reading -------------------------------------------------------------------------------------


def _load(path: Path) -> JSON:
    try:
        doc = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"broken link in the catalogue: {path} does not exist") from None
    except orjson.JSONDecodeError as err:
        raise ConfigError(f"{path} is not JSON: {err}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} is not a STAC object")
    return doc


def _target(base: Path, href: Any) -> Path:
    if not isinstance(href, str) or not href:
        raise ConfigError(f"{base}: a link has no href")
    text = str(href)
    if text.startswith("file://"):
        text = text.removeprefix("file://")
    elif "://" in text:
        raise ConfigError(f"{base}: link to {text} is not a local file (offline import only)")
    return (base.parent / text).resolve()


def _links(doc: JSON, rel: str) -> list[JSON]:
    return [
        link for link in doc.get("links") or [] if isinstance(link, dict) and link.get("rel") == rel
    ]


def static_root(path: Path) -> Path:
    """The root document of a static catalogue given as a folder or a JSON file."""
    if path.is_dir():
        for name in ("catalog.json", "collection.json"):
            if (path / name).is_file():
                return path / name
        raise ConfigError(f"{path} holds no catalog.json or collection.json")
    return path


def restore_static_item(item: JSON) -> JSON:
    return order_item(without_links(item, ITEM_ADDED_RELS))


def read_static(path: Path) -> Iterator[tuple[str, JSON]]:
    """Walk a static catalogue from its root: ``("collection", doc)`` then its ``("item", ...)``.

    The links this module adds on export (root, parent, self, item, child) are removed, so an
    exported store imports back to identical documents.
    """
    start = static_root(path).resolve()
    seen: set[Path] = set()
    stack: list[tuple[Path, str | None]] = [(start, None)]
    while stack:
        file, parent_collection = stack.pop()
        if file in seen:
            continue
        seen.add(file)
        doc = _load(file)
        kind = doc.get("type")
        if kind == "Feature":
            item = restore_static_item(doc)
            if not item.get("collection") and parent_collection:
                item["collection"] = parent_collection
            yield "item", item
            continue
        if kind not in {"Catalog", "Collection"}:
            raise ConfigError(f"{file} is not a STAC Catalog, Collection or Item")
        collection_id = parent_collection
        if kind == "Collection":
            collection_id = str(doc.get("id"))
            yield "collection", without_links(doc, COLLECTION_ADDED_RELS)
        for link in _links(doc, "item"):
            item_file = _target(file, link.get("href"))
            if item_file in seen:
                continue
            seen.add(item_file)
            item_doc = _load(item_file)
            if item_doc.get("type") != "Feature":
                raise ConfigError(f"{item_file} is not a STAC Item")
            item = restore_static_item(item_doc)
            if not item.get("collection") and collection_id:
                item["collection"] = collection_id
            yield "item", item
        # children in link order: push reversed onto the stack
        for link in reversed(_links(doc, "child")):
            stack.append((_target(file, link.get("href")), collection_id))
