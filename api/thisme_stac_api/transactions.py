"""Transactions (items and collections), mounted only when an API key is configured."""

from __future__ import annotations

import hmac
from typing import Any

import attr
from fastapi import HTTPException, Request
from pydantic import BaseModel, SecretStr
from stac_fastapi.extensions.transaction.client import AsyncBaseTransactionsClient
from stac_fastapi.types.errors import ConflictError, NotFoundError
from starlette.responses import Response

from thisme_stac.errors import ConfigError
from thisme_stac.store.base import Store
from thisme_stac_api import links as L
from thisme_stac_api.core import GeoJSONBody, JSONBody, blocking
from thisme_stac_api.patch import json_patch, merge_patch

API_KEY_HEADER = "X-API-Key"


def api_key_dependency(key: SecretStr) -> Any:
    """A FastAPI dependency that accepts ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``.

    The comparison runs in constant time; a missing key is 401, a wrong key 403.
    """
    expected = key.get_secret_value().encode()

    async def require_api_key(request: Request) -> None:
        given = request.headers.get(API_KEY_HEADER)
        if given is None:
            auth = request.headers.get("Authorization", "")
            scheme, _, value = auth.partition(" ")
            given = value.strip() if scheme.lower() == "bearer" else None
        if not given:
            raise HTTPException(
                status_code=401,
                detail=f"this route needs an API key ({API_KEY_HEADER} header)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not hmac.compare_digest(given.encode(), expected):
            raise HTTPException(status_code=403, detail="invalid API key")

    return require_api_key


def _dump(model: Any) -> dict[str, Any]:
    if isinstance(model, BaseModel):
        data: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
        return data
    return dict(model)


def _patch(document: dict[str, Any], patch: Any) -> dict[str, Any]:
    if isinstance(patch, list):
        operations = [_dump(op) for op in patch]
        result = json_patch(document, operations)
    else:
        changes = (
            patch.model_dump(mode="json", by_alias=True, exclude_unset=True)
            if isinstance(patch, BaseModel)
            else dict(patch)
        )
        result = merge_patch(document, changes)
    if not isinstance(result, dict):
        raise ConfigError("a patch must leave an object")
    return result


@attr.s
class StoreTransactionsClient(AsyncBaseTransactionsClient):
    """Create, replace, patch and delete items and collections in the store."""

    store: Store = attr.ib(kw_only=True)

    async def _require_collection(self, collection_id: str) -> None:
        if await blocking(self.store.get_collection, collection_id) is None:
            raise NotFoundError(f"collection {collection_id!r} does not exist")

    @staticmethod
    def _item_for(collection_id: str, item: dict[str, Any]) -> dict[str, Any]:
        if item.get("collection") not in (None, collection_id):
            raise ConfigError(
                f"item {item.get('id')!r} names collection {item.get('collection')!r}, "
                f"not {collection_id!r}"
            )
        item["collection"] = collection_id
        return item

    # --- items -------------------------------------------------------------------------------
    async def create_item(  # type: ignore[override]
        self, collection_id: str, item: Any, request: Request, **kwargs: Any
    ) -> Response:
        await self._require_collection(collection_id)
        data = _dump(item)
        if data.get("type") == "FeatureCollection":
            features = [self._item_for(collection_id, dict(f)) for f in data.get("features", [])]
            result = await blocking(self.store.upsert_items, features)
            return JSONBody(
                {"new": result.new, "updated": result.updated, "unchanged": result.unchanged},
                status_code=201,
            )
        data = self._item_for(collection_id, data)
        if await blocking(self.store.get_item, collection_id, str(data.get("id"))) is not None:
            raise ConflictError(f"item {data.get('id')!r} already exists in {collection_id!r}")
        await blocking(self.store.upsert_items, [data])
        return await self._item_response(request, collection_id, str(data["id"]), 201)

    async def update_item(  # type: ignore[override]
        self, collection_id: str, item_id: str, item: Any, request: Request, **kwargs: Any
    ) -> Response:
        data = self._item_for(collection_id, _dump(item))
        if data.get("id") != item_id:
            raise ConfigError(f"the body's id {data.get('id')!r} is not {item_id!r}")
        if await blocking(self.store.get_item, collection_id, item_id) is None:
            raise NotFoundError(f"item {item_id!r} does not exist in {collection_id!r}")
        await blocking(self.store.upsert_items, [data])
        return await self._item_response(request, collection_id, item_id, 200)

    async def patch_item(  # type: ignore[override]
        self, collection_id: str, item_id: str, patch: Any, request: Request, **kwargs: Any
    ) -> Response:
        current = await blocking(self.store.get_item, collection_id, item_id)
        if current is None:
            raise NotFoundError(f"item {item_id!r} does not exist in {collection_id!r}")
        current.pop("links", None)
        updated = _patch(current, patch)
        if updated.get("id") != item_id or updated.get("collection") != collection_id:
            raise ConfigError("a patch cannot change an item's id or collection")
        await blocking(self.store.upsert_items, [updated])
        return await self._item_response(request, collection_id, item_id, 200)

    async def delete_item(  # type: ignore[override]
        self, item_id: str, collection_id: str, request: Request, **kwargs: Any
    ) -> Response:
        if not await blocking(self.store.delete_item, collection_id, item_id):
            raise NotFoundError(f"item {item_id!r} does not exist in {collection_id!r}")
        return Response(status_code=204)

    async def _item_response(
        self, request: Request, collection_id: str, item_id: str, status: int
    ) -> Response:
        stored = await blocking(self.store.get_item, collection_id, item_id)
        if stored is None:  # deleted concurrently
            raise NotFoundError(f"item {item_id!r} does not exist in {collection_id!r}")
        stored["links"] = L.item_links(L.base_url(request), stored)
        return GeoJSONBody(stored, status_code=status)

    # --- collections -------------------------------------------------------------------------
    async def create_collection(self, collection: Any, request: Request, **kwargs: Any) -> Response:  # type: ignore[override]
        data = _dump(collection)
        if await blocking(self.store.get_collection, str(data.get("id"))) is not None:
            raise ConflictError(f"collection {data.get('id')!r} already exists")
        await blocking(self.store.upsert_collection, data)
        return await self._collection_response(request, str(data["id"]), 201)

    async def update_collection(  # type: ignore[override]
        self, collection_id: str, collection: Any, request: Request, **kwargs: Any
    ) -> Response:
        data = _dump(collection)
        if data.get("id") != collection_id:
            raise ConfigError(f"the body's id {data.get('id')!r} is not {collection_id!r}")
        await self._require_collection(collection_id)
        await blocking(self.store.upsert_collection, data)
        return await self._collection_response(request, collection_id, 200)

    async def patch_collection(  # type: ignore[override]
        self, collection_id: str, patch: Any, request: Request, **kwargs: Any
    ) -> Response:
        current = await blocking(self.store.get_collection, collection_id)
        if current is None:
            raise NotFoundError(f"collection {collection_id!r} does not exist")
        current.pop("links", None)
        updated = _patch(current, patch)
        if updated.get("id") != collection_id:
            raise ConfigError("a patch cannot change a collection's id")
        await blocking(self.store.upsert_collection, updated)
        return await self._collection_response(request, collection_id, 200)

    async def delete_collection(  # type: ignore[override]
        self, collection_id: str, request: Request, **kwargs: Any
    ) -> Response:
        if not await blocking(self.store.delete_collection, collection_id):
            raise NotFoundError(f"collection {collection_id!r} does not exist")
        return Response(status_code=204)

    async def _collection_response(
        self, request: Request, collection_id: str, status: int
    ) -> Response:
        stored = await blocking(self.store.get_collection, collection_id)
        if stored is None:
            raise NotFoundError(f"collection {collection_id!r} does not exist")
        stored["links"] = L.collection_links(L.base_url(request), stored, queryables=True)
        return JSONBody(stored, status_code=status)
