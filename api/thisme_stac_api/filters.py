"""Queryables (filter extension) answered from the store."""

from __future__ import annotations

from typing import Any

import attr
from fastapi import Request
from stac_fastapi.extensions.filter.client import AsyncBaseFiltersClient
from stac_fastapi.types.errors import NotFoundError
from starlette.responses import Response

from thisme_stac.store.base import Store
from thisme_stac_api import links as L
from thisme_stac_api.core import SchemaBody, blocking


@attr.s
class StoreFiltersClient(AsyncBaseFiltersClient):
    """``/queryables`` and ``/collections/{id}/queryables`` with the real property types."""

    store: Store = attr.ib(kw_only=True)

    async def get_queryables(self, collection_id: str | None = None, **kwargs: Any) -> Response:  # type: ignore[override]
        request: Request = kwargs["request"]
        base = L.base_url(request)
        if (
            collection_id is not None
            and await blocking(self.store.get_collection, collection_id) is None
        ):
            raise NotFoundError(f"collection {collection_id!r} does not exist")
        schema: dict[str, Any] = dict(await blocking(self.store.queryables, collection_id))
        schema["$id"] = (
            f"{L.collection_url(base, collection_id)}/queryables"
            if collection_id
            else f"{base}queryables"
        )
        return SchemaBody(schema)
