"""stac-fastapi core client over a thisme-stac ``Store``.

Store calls are blocking (SQLite), so they run in the thread pool, never on the event loop.
Responses are serialised once with orjson (no per-field encoding by FastAPI).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlencode

import attr
import orjson
from fastapi import Request
from stac_fastapi.types.core import AsyncBaseCoreClient
from stac_fastapi.types.errors import NotFoundError
from stac_fastapi.types.search import BaseSearchPostRequest
from starlette.responses import JSONResponse, Response

from thisme_stac.errors import ConfigError
from thisme_stac.search_params import build_search, parse_datetime
from thisme_stac.store.base import SearchPage, SearchRequest, SortField, Store
from thisme_stac.store.freetext import free_text_terms, text_matches
from thisme_stac_api import links as L
from thisme_stac_api.fields import apply_fields, split_fields

T = TypeVar("T")

#: Sortable beyond the queryables: the temporal properties every item has.
EXTRA_SORTABLE = frozenset({"start_datetime", "end_datetime", "created", "updated"})


class JSONBody(JSONResponse):
    """``application/json`` serialised with orjson."""

    media_type = L.JSON_TYPE

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class GeoJSONBody(JSONBody):
    """``application/geo+json`` serialised with orjson (also when ``fields`` is used)."""

    media_type = L.GEOJSON_TYPE


class SchemaBody(JSONBody):
    media_type = L.SCHEMA_TYPE


#: Store calls run on a few long-lived threads: each keeps one SQLite connection (and its page
#: cache) for the life of the process, so memory stays bounded whatever the request rate.
STORE_THREADS = int(os.environ.get("THISME_STORE_THREADS", "4"))
_executor = ThreadPoolExecutor(max_workers=max(STORE_THREADS, 1), thread_name_prefix="store")


async def blocking(func: Callable[..., T], *args: Any) -> T:
    """Run a blocking store call off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(_executor, func, *args)


#: (include, exclude) of the fields extension; None = no ``fields`` asked: whole items.
FieldsSpec = tuple[set[str] | None, set[str]]


def _get_fields(request: Request, fields: list[str] | None) -> FieldsSpec | None:
    """GET ``fields``: absent -> whole items; ``fields=`` -> the default set."""
    if "fields" not in request.query_params:
        return None
    return split_fields(fields or ())


def _sort_fields(values: Sequence[Any] | None) -> list[SortField] | None:
    """GET strings (``-datetime``) or POST models (field, direction) into SortFields."""
    if not values:
        return None
    fields: list[SortField] = []
    for value in values:
        if isinstance(value, str):
            term = value.strip()
            if not term:
                continue
            name = term.lstrip("+-").strip()
            fields.append(SortField(name, "desc" if term.startswith("-") else "asc"))
        else:
            field = getattr(value, "field", None)
            raw = getattr(value, "direction", "asc")
            direction = str(getattr(raw, "value", raw))
            if not isinstance(field, str) or direction not in ("asc", "desc"):
                raise ConfigError(f"invalid sortby term {value!r}")
            fields.append(SortField(field, "desc" if direction == "desc" else "asc"))
    return fields or None


@attr.s
class StoreCoreClient(AsyncBaseCoreClient):
    """Core STAC API endpoints answered from a ``Store``."""

    store: Store = attr.ib(kw_only=True)
    max_limit: int = attr.ib(default=1000, kw_only=True)
    default_limit: int = attr.ib(default=10, kw_only=True)

    # --- helpers -----------------------------------------------------------------------------
    def _filter_enabled(self) -> bool:
        return self.extension_is_enabled("SearchFilterExtension") or self.extension_is_enabled(
            "FilterExtension"
        )

    def _limit(self, limit: int | None) -> int:
        if limit is None:
            return self.default_limit
        if limit < 1:
            raise ConfigError("limit must be at least 1")
        # OGC API Features: a limit above the maximum is served as the maximum, not refused
        return min(int(limit), self.max_limit)

    _sortables: frozenset[str] | None = attr.ib(default=None, init=False)

    async def _sortable(self) -> frozenset[str]:
        """The queryables plus the temporal properties; read from the store once."""
        if self._sortables is None:
            queryables = await blocking(self.store.queryables, None)
            self._sortables = frozenset(queryables.get("properties", {})) | EXTRA_SORTABLE
        return self._sortables

    async def _check_sortby(self, sortby: list[SortField] | None) -> None:
        if not sortby:
            return
        allowed = await self._sortable()
        for term in sortby:
            name = term.field.removeprefix("properties.")
            if name not in allowed:
                raise ConfigError(
                    f"cannot sort by {term.field!r}; sortable fields: {', '.join(sorted(allowed))}"
                )

    async def _collection_or_404(self, collection_id: str) -> dict[str, Any]:
        collection = await blocking(self.store.get_collection, collection_id)
        if collection is None:
            raise NotFoundError(f"collection {collection_id!r} does not exist")
        return collection

    def _decorate_collection(self, base: str, collection: dict[str, Any]) -> dict[str, Any]:
        collection = dict(collection)
        collection["links"] = L.collection_links(
            base, collection, queryables=self._filter_enabled()
        )
        return collection

    # --- landing page ------------------------------------------------------------------------
    async def landing_page(self, **kwargs: Any) -> Response:  # type: ignore[override]
        request: Request = kwargs["request"]
        page: dict[str, Any] = dict(await super().landing_page(**kwargs))
        base = L.base_url(request)
        own = L.request_url(request).split("?", 1)[0]
        for link in page["links"]:
            if link["rel"] == "self":
                link["href"] = own
            if link["rel"] == "queryables":
                link["rel"] = "http://www.opengis.net/def/rel/ogc/1.0/queryables"
                link.pop("method", None)
        for collection in await blocking(self.store.list_collections):
            page["links"].append(
                {
                    "rel": "child",
                    "type": L.JSON_TYPE,
                    "title": collection.get("title") or collection["id"],
                    "href": L.collection_url(base, collection["id"]),
                }
            )
        page["links"] = [link for link in page["links"] if link.get("href")]
        return JSONBody(page)

    async def conformance(self, **kwargs: Any) -> Response:  # type: ignore[override]
        return JSONBody({"conformsTo": self.conformance_classes()})

    # --- collections -------------------------------------------------------------------------
    async def all_collections(  # type: ignore[override]
        self,
        request: Request,
        bbox: Sequence[float] | None = None,
        datetime: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
        q: list[str] | None = None,
        **kwargs: Any,
    ) -> Response:
        base = L.base_url(request)
        collections = await blocking(self.store.list_collections)
        selected = [c for c in collections if _collection_matches(c, bbox, datetime, q)]
        start = max(int(offset or 0), 0)
        size = self._limit(limit) if limit is not None else max(len(selected), 1)
        page = selected[start : start + size]
        links = [
            {"rel": "self", "type": L.JSON_TYPE, "href": L.request_url(request)},
            {"rel": "root", "type": L.JSON_TYPE, "href": base},
            {"rel": "parent", "type": L.JSON_TYPE, "href": base},
        ]
        if start + size < len(selected):
            params = dict(request.query_params)
            params["offset"] = str(start + size)
            params["limit"] = str(size)
            links.append(
                {
                    "rel": "next",
                    "type": L.JSON_TYPE,
                    "href": f"{base}collections?{urlencode(params)}",
                }
            )
        return JSONBody(
            {
                "collections": [self._decorate_collection(base, c) for c in page],
                "links": links,
                "numberMatched": len(selected),
                "numberReturned": len(page),
            }
        )

    async def get_collection(self, collection_id: str, request: Request, **kwargs: Any) -> Response:  # type: ignore[override]
        collection = await self._collection_or_404(collection_id)
        return JSONBody(self._decorate_collection(L.base_url(request), collection))

    # --- items -------------------------------------------------------------------------------
    async def get_item(  # type: ignore[override]
        self, item_id: str, collection_id: str, request: Request, **kwargs: Any
    ) -> Response:
        item = await blocking(self.store.get_item, collection_id, item_id)
        if item is None:
            await self._collection_or_404(collection_id)
            raise NotFoundError(f"item {item_id!r} does not exist in collection {collection_id!r}")
        item["links"] = L.item_links(L.base_url(request), item)
        return GeoJSONBody(item)

    async def item_collection(  # type: ignore[override]
        self,
        collection_id: str,
        request: Request,
        bbox: Sequence[float] | None = None,
        datetime: str | None = None,
        limit: int | None = None,
        token: str | None = None,
        fields: list[str] | None = None,
        sortby: list[str] | None = None,
        filter_expr: str | None = None,
        filter_lang: str | None = None,
        q: list[str] | None = None,
        **kwargs: Any,
    ) -> Response:
        await self._collection_or_404(collection_id)
        search = self._get_request(
            collections=[collection_id],
            bbox=bbox,
            datetime=datetime,
            limit=limit,
            token=token,
            sortby=sortby,
            filter_expr=filter_expr,
            filter_lang=filter_lang,
            q=q,
        )
        base = L.base_url(request)
        extra = [
            {
                "rel": "collection",
                "type": L.JSON_TYPE,
                "href": L.collection_url(base, collection_id),
            },
            {"rel": "parent", "type": L.JSON_TYPE, "href": L.collection_url(base, collection_id)},
        ]
        return await self._run(request, search, _get_fields(request, fields), extra_links=extra)

    # --- search ------------------------------------------------------------------------------
    async def get_search(  # type: ignore[override]
        self,
        request: Request,
        collections: list[str] | None = None,
        ids: list[str] | None = None,
        bbox: Sequence[float] | None = None,
        intersects: str | None = None,
        datetime: str | None = None,
        limit: int | None = None,
        token: str | None = None,
        fields: list[str] | None = None,
        sortby: list[str] | None = None,
        filter_expr: str | None = None,
        filter_lang: str | None = None,
        q: list[str] | None = None,
        **kwargs: Any,
    ) -> Response:
        search = self._get_request(
            collections=collections,
            ids=ids,
            bbox=bbox,
            intersects=intersects,
            datetime=datetime,
            limit=limit,
            token=token,
            sortby=sortby,
            filter_expr=filter_expr,
            filter_lang=filter_lang,
            q=q,
        )
        return await self._run(request, search, _get_fields(request, fields))

    def _get_request(
        self,
        *,
        collections: list[str] | None,
        bbox: Sequence[float] | None,
        datetime: str | None,
        limit: int | None,
        token: str | None,
        sortby: list[str] | None,
        filter_expr: str | None,
        filter_lang: str | None,
        q: list[str] | None,
        ids: list[str] | None = None,
        intersects: str | None = None,
    ) -> SearchRequest:
        """The query parameters of GET /search and GET /collections/{id}/items as a search."""
        return build_search(
            collections=collections,
            ids=ids,
            bbox=bbox,
            intersects=intersects,
            datetime_text=datetime,
            filter_text=filter_expr,
            filter_lang=filter_lang,
            q=q,
            sortby=_sort_fields(sortby),
            limit=self._limit(limit),
            token=token,
        )

    async def post_search(  # type: ignore[override]
        self, search_request: BaseSearchPostRequest, request: Request, **kwargs: Any
    ) -> Response:
        body = search_request.model_dump(mode="json", by_alias=True, exclude_unset=True)
        intersects = body.get("intersects")
        # stac-fastapi fills an absent ``fields`` with an empty model: look at what was sent
        spec: FieldsSpec | None = None
        fields = getattr(search_request, "fields", None)
        if fields is not None and "fields" in search_request.model_fields_set:
            include = set(fields.include or ()) if "include" in fields.model_fields_set else None
            spec = (include, set(fields.exclude or ()))
        search = build_search(
            collections=search_request.collections,
            ids=search_request.ids,
            bbox=list(search_request.bbox) if search_request.bbox else None,
            intersects=intersects,
            datetime_text=body.get("datetime"),
            filter_text=getattr(search_request, "filter_expr", None),
            filter_lang=getattr(search_request, "filter_lang", None) or "cql2-json",
            q=getattr(search_request, "q", None),
            sortby=_sort_fields(getattr(search_request, "sortby", None)),
            limit=self._limit(search_request.limit),
            token=getattr(search_request, "token", None),
        )
        return await self._run(request, search, spec, post_body=body)

    async def _run(
        self,
        request: Request,
        search: SearchRequest,
        fields: FieldsSpec | None,
        *,
        post_body: dict[str, Any] | None = None,
        extra_links: list[dict[str, Any]] | None = None,
    ) -> Response:
        await self._check_sortby(list(search.sortby) if search.sortby else None)
        page: SearchPage = await blocking(self.store.search, search)
        base = L.base_url(request)
        features = []
        for item in page.items:
            item["links"] = L.item_links(base, item)
            features.append(item if fields is None else apply_fields(item, *fields))
        links: list[dict[str, Any]] = [
            {"rel": "root", "type": L.JSON_TYPE, "href": base},
        ]
        if post_body is None:
            links.insert(0, {"rel": "self", "type": L.GEOJSON_TYPE, "href": L.request_url(request)})
        else:
            links.insert(0, {"rel": "self", "type": L.GEOJSON_TYPE, "href": f"{base}search"})
        links += extra_links or []
        if page.next_token:
            if post_body is None:
                params = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
                params.append(("token", page.next_token))
                url = str(request.url).split("?", 1)[0]
                links.append(
                    {"rel": "next", "type": L.GEOJSON_TYPE, "href": f"{url}?{urlencode(params)}"}
                )
            else:
                links.append(
                    {
                        "rel": "next",
                        "type": L.GEOJSON_TYPE,
                        "href": f"{base}search",
                        "method": "POST",
                        "body": {**post_body, "token": page.next_token},
                        "merge": False,
                    }
                )
        body: dict[str, Any] = {"type": "FeatureCollection", "features": features, "links": links}
        if page.number_matched is not None:
            body["numberMatched"] = page.number_matched
        body["numberReturned"] = len(features)
        return GeoJSONBody(body)


def _collection_matches(
    collection: dict[str, Any],
    bbox: Sequence[float] | None,
    datetime_text: str | None,
    q: list[str] | None,
) -> bool:
    """Collection-search: spatial and temporal extent overlap, free text on the metadata."""
    extent = collection.get("extent", {})
    if bbox:
        half = len(bbox) // 2
        west, south, east, north = bbox[0], bbox[1], bbox[half], bbox[half + 1]
        boxes = extent.get("spatial", {}).get("bbox") or [[-180, -90, 180, 90]]
        b = boxes[0]
        if b[0] > east or b[2] < west or b[1] > north or b[3] < south:
            return False
    if datetime_text:
        from thisme_stac.search_params import parse_instant

        start, end = parse_datetime(datetime_text)
        interval = (extent.get("temporal", {}).get("interval") or [[None, None]])[0]
        lo = parse_instant(interval[0]) if interval[0] else None
        hi = parse_instant(interval[1]) if interval[1] else None
        if start is not None and hi is not None and hi < start:
            return False
        if end is not None and lo is not None and lo > end:
            return False
    terms = free_text_terms(q)
    return not terms or text_matches(
        terms,
        collection.get("id"),
        collection.get("title"),
        collection.get("description"),
        *(collection.get("keywords") or []),
    )
