"""Links of API responses, built from the URL the client used (proxy headers and root path
are already applied to ``request.base_url`` by the middleware stack)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from stac_fastapi.types.requests import get_base_url
from starlette.requests import Request

JSON_TYPE = "application/json"
GEOJSON_TYPE = "application/geo+json"
SCHEMA_TYPE = "application/schema+json"

#: Relations the API owns; stored links with these relations are replaced.
STRUCTURAL = frozenset({"self", "root", "parent", "collection", "item", "items", "child", "next"})
STRUCTURAL |= frozenset({"prev", "previous", "queryables"})


def base_url(request: Request) -> str:
    """The API root as the client sees it, always ending with ``/``."""
    url = get_base_url(request)
    return url if url.endswith("/") else url + "/"


def request_url(request: Request) -> str:
    """The URL of this request as the client sent it (for ``self`` links)."""
    return str(request.url)


_SAFE = re.compile(r"^[A-Za-z0-9._~-]*$")


def _segment(value: str) -> str:
    return value if _SAFE.match(value) else quote(value, safe="")


def collection_url(base: str, collection_id: str) -> str:
    return f"{base}collections/{_segment(collection_id)}"


def item_url(base: str, collection_id: str, item_id: str) -> str:
    return f"{collection_url(base, collection_id)}/items/{_segment(item_id)}"


def _kept(links: Iterable[Any] | None) -> list[dict[str, Any]]:
    """Stored links that are not structural (licence, product pages, ...)."""
    kept = []
    for link in links or ():
        if isinstance(link, dict) and link.get("rel") not in STRUCTURAL and link.get("href"):
            href = str(link["href"])
            if href.startswith(("http://", "https://")):
                kept.append(link)
    return kept


def item_links(base: str, item: dict[str, Any]) -> list[dict[str, Any]]:
    collection = collection_url(base, str(item.get("collection", "")))
    self_href = f"{collection}/items/{_segment(str(item.get('id', '')))}"
    return [
        {"rel": "self", "type": GEOJSON_TYPE, "href": self_href},
        {"rel": "parent", "type": JSON_TYPE, "href": collection},
        {"rel": "collection", "type": JSON_TYPE, "href": collection},
        {"rel": "root", "type": JSON_TYPE, "href": base},
        *_kept(item.get("links")),
    ]


def collection_links(
    base: str, collection: dict[str, Any], *, queryables: bool
) -> list[dict[str, Any]]:
    url = collection_url(base, str(collection.get("id", "")))
    links = [
        {"rel": "self", "type": JSON_TYPE, "href": url},
        {"rel": "parent", "type": JSON_TYPE, "href": base},
        {"rel": "root", "type": JSON_TYPE, "href": base},
        {"rel": "items", "type": GEOJSON_TYPE, "href": f"{url}/items"},
    ]
    if queryables:
        links.append(
            {
                "rel": "http://www.opengis.net/def/rel/ogc/1.0/queryables",
                "type": SCHEMA_TYPE,
                "title": "Queryables",
                "href": f"{url}/queryables",
            }
        )
    return [*links, *_kept(collection.get("links"))]
