"""Where items to download come from: resto directly, any STAC API, or an ItemCollection file."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson

from thisme_stac import __version__
from thisme_stac.download.core import TokenProvider
from thisme_stac.errors import ConfigError, DownloadError, TranslationError
from thisme_stac.resto.client import RestoClient, redact
from thisme_stac.resto.query import parse_urlq
from thisme_stac.translate.constants import COLLECTION_ID
from thisme_stac.translate.item import feature_to_item_dict


def resto_token_provider(client: RestoClient) -> TokenProvider:
    """Bearer headers from a resto account (Basic -> ``/auth``); ``refresh`` logs in again."""

    def provider(refresh: bool) -> dict[str, str]:
        if refresh:
            client.refresh_token()
        return client.auth_headers()

    return provider


def resto_items(
    client: RestoClient, urlq: str, *, page_size: int = 500
) -> Iterator[dict[str, Any]]:
    """STAC items of a THISME address-bar query, straight from resto (no store)."""
    query = parse_urlq(urlq)
    collection = query.collection or COLLECTION_ID
    for page in client.search_pages(query, limit=page_size):
        for feature in page.features:
            try:
                yield feature_to_item_dict(feature, collection_id=collection)
            except TranslationError as err:  # a broken feature is reported, the rest goes on
                fid = feature.get("id") if isinstance(feature, dict) else None
                print(f"skipped feature {fid}: {err}", file=sys.stderr)


def stac_items(
    url: str,
    *,
    collections: Sequence[str] = (),
    bbox: str | None = None,
    datetime: str | None = None,
    filter_text: str | None = None,
    q: str | None = None,
    limit: int = 100,
    max_items: int | None = None,
    timeout: float = 60.0,
) -> Iterator[dict[str, Any]]:
    """Items of a STAC API item search, following ``next`` links (GET or POST).

    GET first; an API that answers 405 to GET is asked again with POST and a JSON body.
    """
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"STAC API URL must start with http:// or https://: {url!r}")
    params: dict[str, Any] = {"limit": limit}
    if collections:
        params["collections"] = ",".join(collections)
    if bbox:
        parts = bbox.split(",")
        try:
            [float(x) for x in parts]
        except ValueError:
            parts = []
        if len(parts) not in (4, 6):
            raise ConfigError(f"bbox must be west,south,east,north: {bbox!r}")
        params["bbox"] = bbox
    if datetime:
        params["datetime"] = datetime
    if filter_text:
        params["filter"] = filter_text
        params["filter-lang"] = "cql2-text"
    if q:
        params["q"] = q
    headers = {"User-Agent": f"thisme-stac/{__version__}", "Accept": "application/geo+json"}
    count = 0
    with httpx.Client(timeout=timeout, follow_redirects=True, headers=headers) as http:
        request = http.build_request("GET", url.rstrip("/") + "/search", params=params)
        while True:
            try:
                response = http.send(request)
                if response.status_code == 405 and request.method == "GET":
                    request = http.build_request(
                        "POST", url.rstrip("/") + "/search", json=_post_body(params)
                    )
                    response = http.send(request)
            except httpx.HTTPError as err:
                raise DownloadError(f"cannot reach {redact(url)}: {err}") from None
            if response.status_code >= 400:
                raise DownloadError(
                    f"STAC API answered {response.status_code} for {redact(str(request.url))}: "
                    f"{response.text[:200]}"
                )
            try:
                page = orjson.loads(response.content)
            except orjson.JSONDecodeError:
                shown = redact(str(request.url))
                raise DownloadError(f"STAC API sent no JSON for {shown}") from None
            for feature in page.get("features") or []:
                yield feature
                count += 1
                if max_items is not None and count >= max_items:
                    return
            nxt = next(
                (link for link in page.get("links") or [] if link.get("rel") == "next"), None
            )
            if not nxt or not page.get("features"):
                return
            if str(nxt.get("method", "GET")).upper() == "POST":
                request = http.build_request("POST", nxt["href"], json=nxt.get("body") or {})
            else:
                request = http.build_request("GET", nxt["href"])


def _post_body(params: Mapping[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = dict(params)
    if "collections" in body:
        body["collections"] = str(body["collections"]).split(",")
    if "bbox" in body:
        try:
            body["bbox"] = [float(x) for x in str(body["bbox"]).split(",")]
        except ValueError:
            raise ConfigError(f"bbox must be numbers separated by commas: {body['bbox']}") from None
    return body


def file_items(source: str) -> list[dict[str, Any]]:
    """An ItemCollection (JSON or newline-delimited JSON) from a file, or ``-`` for stdin."""
    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read {source}: {err.strerror}") from None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            return [_item(orjson.loads(line)) for line in raw.splitlines() if line.strip()]
        except orjson.JSONDecodeError:
            raise ConfigError(f"{source} is neither JSON nor newline-delimited JSON") from None
    if isinstance(doc, Mapping) and doc.get("type") == "FeatureCollection":
        return [_item(f) for f in doc.get("features") or []]
    if isinstance(doc, Mapping) and doc.get("type") == "Feature":
        return [_item(doc)]
    raise ConfigError(f"{source} is not a STAC ItemCollection or Item")


def _item(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("assets"), dict):
        raise ConfigError("every feature must be a STAC Item with assets")
    return value
