"""Opaque keyset-paging tokens, bound to the search that issued them."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson

from thisme_stac.store.base import SearchRequest
from thisme_stac.store.cql2sql import InvalidQuery


def query_fingerprint(request: SearchRequest) -> str:
    """A short digest of everything but limit and token: a token only continues its own search."""
    data = {
        "c": request.collections,
        "i": request.ids,
        "b": request.bbox,
        "g": request.intersects,
        "f": request.filter,
        "q": request.q,
        "d": [str(d) for d in request.datetime] if request.datetime else None,
        "s": [(s.field, s.direction) for s in request.sortby or ()],
    }
    raw = orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(raw).hexdigest()[:12]


def encode_token(fingerprint: str, value: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([fingerprint, value])).decode().rstrip("=")


def decode_token(token: str, fingerprint: str) -> Any:
    """The value inside a token; InvalidQuery if it is malformed or from another search."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        stamp, value = orjson.loads(raw)
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise InvalidQuery("invalid pagination token") from None
    if stamp != fingerprint:
        raise InvalidQuery("pagination token belongs to another search")
    return value
