"""The STAC API application: ``instantiate_api(settings, store)`` and ``create_app()``.

``uvicorn thisme_stac_api.app:create_app --factory`` serves the store named by ``THISME_STORE``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.params import Depends
from pydantic import model_validator
from stac_fastapi.api.app import StacApi
from stac_fastapi.api.middleware import ProxyHeaderMiddleware
from stac_fastapi.api.models import (
    ItemCollectionUri,
    create_get_request_model,
    create_post_request_model,
    create_request_model,
)
from stac_fastapi.api.routes import Scope
from stac_fastapi.extensions import (
    CollectionSearchExtension,
    FieldsExtension,
    FreeTextExtension,
    ItemCollectionFilterExtension,
    OffsetPaginationExtension,
    SearchFilterExtension,
    TokenPaginationExtension,
    TransactionExtension,
)
from stac_fastapi.extensions.fields import FieldsConformanceClasses
from stac_fastapi.extensions.free_text import FreeTextConformanceClasses
from stac_fastapi.extensions.sort import (
    ItemCollectionSortExtension,
    SearchSortExtension,
    SortConformanceClasses,
)
from stac_fastapi.types.extension import ApiExtension
from stac_fastapi.types.search import BaseSearchPostRequest
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response

from thisme_stac.store import Store, open_store
from thisme_stac.translate.constants import STAC_VERSION
from thisme_stac_api.browser import default_browser_dir, mount_browser
from thisme_stac_api.config import ApiSettings
from thisme_stac_api.core import JSONBody, StoreCoreClient, blocking
from thisme_stac_api.errors import add_error_handlers
from thisme_stac_api.filters import StoreFiltersClient
from thisme_stac_api.limits import RequestLimits
from thisme_stac_api.transactions import StoreTransactionsClient, api_key_dependency

#: Sort 1.0.0 has the same ``sortby`` semantics as 1.1.0; clients such as pystac-client only
#: recognise the 1.0 URIs, so both are advertised.
SORT_V1_0_SEARCH = "https://api.stacspec.org/v1.0.0/item-search#sort"
SORT_V1_0_FEATURES = "https://api.stacspec.org/v1.0.0/ogcapi-features#sort"

WRITE_SCOPES: list[Scope] = [
    {"path": "/collections", "method": "POST"},
    {"path": "/collections/{collection_id}", "method": "PUT"},
    {"path": "/collections/{collection_id}", "method": "PATCH"},
    {"path": "/collections/{collection_id}", "method": "DELETE"},
    {"path": "/collections/{collection_id}/items", "method": "POST"},
    {"path": "/collections/{collection_id}/items/{item_id}", "method": "PUT"},
    {"path": "/collections/{collection_id}/items/{item_id}", "method": "PATCH"},
    {"path": "/collections/{collection_id}/items/{item_id}", "method": "DELETE"},
]


#: Deepest JSON nesting of a POST /search body (a filter, a geometry): beyond it, a 400.
MAX_BODY_DEPTH = 64


def _depth_exceeds(data: Any, limit: int) -> bool:
    """Whether ``data`` nests arrays / objects more than ``limit`` levels (no recursion)."""
    pending: list[tuple[Any, int]] = [(data, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            pending += [(v, depth + 1) for v in node.values() if isinstance(v, dict | list)]
        elif isinstance(node, list):
            pending += [(v, depth + 1) for v in node if isinstance(v, dict | list)]
    return False


class SearchPostRequest(BaseSearchPostRequest):
    """The POST /search body; anything but a JSON object is a 400, not a validator crash."""

    @model_validator(mode="before")
    @classmethod
    def _object(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("the request body must be a JSON object")
        if _depth_exceeds(data, MAX_BODY_DEPTH):
            raise ValueError(f"the request body nests more than {MAX_BODY_DEPTH} levels")
        if "fields" in data and data["fields"] is None:
            raise ValueError("fields must be an object with include and/or exclude arrays")
        return data


def _extensions(store: Store) -> tuple[list[ApiExtension], list[ApiExtension]]:
    filters = StoreFiltersClient(store=store)
    search: list[ApiExtension] = [
        FieldsExtension(),
        SearchFilterExtension(client=filters),
        SearchSortExtension(
            conformance_classes=[SORT_V1_0_SEARCH, SortConformanceClasses.ITEM_SEARCH_SORT]
        ),
        FreeTextExtension(),
        TokenPaginationExtension(),
    ]
    items: list[ApiExtension] = [
        FieldsExtension(conformance_classes=[FieldsConformanceClasses.ITEMS]),
        ItemCollectionFilterExtension(client=filters),
        ItemCollectionSortExtension(
            conformance_classes=[SORT_V1_0_FEATURES, SortConformanceClasses.FEATURES_SORT]
        ),
        FreeTextExtension(conformance_classes=[FreeTextConformanceClasses.ITEMS]),
        TokenPaginationExtension(),
    ]
    return search, items


def instantiate_api(settings: ApiSettings | None = None, store: Store | None = None) -> StacApi:
    """Build the STAC API over ``store`` (opened from ``settings.store`` when not given)."""
    settings = settings or ApiSettings()
    owns_store = store is None
    if store is None:
        store = open_store(settings.store, create=settings.api_key is not None)
    search_extensions, item_extensions = _extensions(store)
    collection_search = CollectionSearchExtension.from_extensions(
        [
            FreeTextExtension(conformance_classes=[FreeTextConformanceClasses.COLLECTIONS]),
            OffsetPaginationExtension(),
        ]
    )
    extensions: list[ApiExtension] = [*search_extensions, *item_extensions, collection_search]
    route_dependencies: list[tuple[list[Scope], list[Depends]]] = []
    methods = ["GET", "POST", "OPTIONS"]
    if settings.api_key is not None and settings.api_key.get_secret_value():
        extensions.append(
            TransactionExtension(
                client=StoreTransactionsClient(store=store),
                settings=settings,
                response_class=JSONBody,
            )
        )
        route_dependencies.append((WRITE_SCOPES, [Depends(api_key_dependency(settings.api_key))]))
        methods += ["PUT", "PATCH", "DELETE"]

    items_get_model = create_request_model(
        model_name="ItemCollectionUri",
        base_model=ItemCollectionUri,
        extensions=item_extensions,
        request_type="GET",
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if owns_store:
            store.close()

    async def health(request: Request) -> Response:
        try:
            count = await blocking(store.count_items, None)
        except Exception as err:  # any store failure makes the service unhealthy
            return JSONBody(
                {"status": "DOWN", "store": {"status": "DOWN", "message": str(err)}}, 503
            )
        return JSONBody({"status": "UP", "store": {"status": "UP", "items": count}})

    app = FastAPI(
        openapi_url=settings.openapi_url,
        docs_url=settings.docs_url,
        redoc_url=None,
        root_path=settings.root_path,
        title=settings.stac_fastapi_title,
        version=settings.stac_fastapi_version,
        description=settings.stac_fastapi_description,
        lifespan=lifespan,
    )
    api = StacApi(
        app=app,
        router=APIRouter(),
        settings=settings,
        extensions=extensions,
        client=StoreCoreClient(
            store=store,
            max_limit=settings.max_limit,
            landing_page_id=settings.stac_fastapi_landing_id,
        ),
        stac_version=STAC_VERSION,
        exceptions={},
        search_get_request_model=create_get_request_model(search_extensions),
        search_post_request_model=create_post_request_model(
            search_extensions, base_model=SearchPostRequest
        ),
        items_get_request_model=items_get_model,  # type: ignore[arg-type]
        collections_get_request_model=collection_search.GET,
        response_class=JSONBody,
        middlewares=[
            Middleware(GZipMiddleware, minimum_size=4096, compresslevel=1),
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_origin_regex=settings.cors_origin_regex,
                allow_methods=methods,
                allow_headers=["Content-Type", "Authorization", "X-API-Key"],
                max_age=600,
            ),
            Middleware(
                RequestLimits,
                max_body_bytes=settings.max_body_bytes,
                max_url_bytes=settings.max_url_bytes,
                max_header_bytes=settings.max_header_bytes,
            ),
            Middleware(ProxyHeaderMiddleware),
        ],
        route_dependencies=route_dependencies,
        health_check=health,  # type: ignore[arg-type]
    )
    add_error_handlers(api.app)
    api.app.state.store = store
    browser_dir = settings.browser_dir or default_browser_dir()
    if browser_dir:
        mount_browser(api.app, browser_dir)
    return api


def create_app() -> FastAPI:
    """Application factory for ``uvicorn thisme_stac_api.app:create_app --factory``."""
    app: Any = instantiate_api().app
    return app  # type: ignore[no-any-return]
