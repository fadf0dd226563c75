"""Request size limits, enforced before the application reads anything.

A request whose target (path and query) or headers are too large is answered 414 / 431; a body
larger than the limit is answered 413 as soon as its ``Content-Length`` says so, or, when it is
sent in chunks, once the limit is passed (the rest is never read). Every answer is the usual
JSON error body ``{"code", "description"}``. (A request line over 64 KiB never reaches the
application: uvicorn's HTTP parser refuses it with a plain-text 400.)
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Defaults of ``THISME_MAX_BODY_BYTES``, ``THISME_MAX_URL_BYTES`` and ``THISME_MAX_HEADER_BYTES``.
DEFAULT_MAX_BODY_BYTES = 4 * 2**20
DEFAULT_MAX_URL_BYTES = 32 * 2**10
DEFAULT_MAX_HEADER_BYTES = 64 * 2**10


class PayloadTooLarge(HTTPException):
    """A chunked body passed the limit while the application read it (answered 413)."""

    def __init__(self, description: str) -> None:
        super().__init__(413, description)


class RequestLimits:
    """ASGI middleware refusing oversized request targets, header sets and bodies."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_url_bytes: int = DEFAULT_MAX_URL_BYTES,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    ) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.max_url = max_url_bytes
        self.max_headers = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        target = len(scope.get("raw_path") or scope["path"].encode()) + len(
            scope.get("query_string") or b""
        )
        if target > self.max_url:
            await _refuse(send, 414, "URITooLong", f"request target over {self.max_url} bytes")
            return
        headers: list[tuple[bytes, bytes]] = scope.get("headers") or []
        if sum(len(k) + len(v) + 4 for k, v in headers) > self.max_headers:
            await _refuse(
                send, 431, "HeadersTooLarge", f"request headers over {self.max_headers} bytes"
            )
            return
        declared = [v for k, v in headers if k.lower() == b"content-length"]
        if declared:
            try:
                length = int(declared[0])
            except ValueError:
                await _refuse(send, 400, "InvalidParameterValue", "invalid Content-Length")
                return
            if length > self.max_body:
                await _refuse(send, 413, "PayloadTooLarge", self._too_large())
                return
        await self.app(scope, self._counting(receive), send)

    def _too_large(self) -> str:
        return f"request body over {self.max_body} bytes"

    def _counting(self, receive: Receive) -> Receive:
        """``receive`` that stops a chunked body at the limit (the app answers 413)."""
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise PayloadTooLarge(self._too_large())
            return message

        return counted


async def _refuse(send: Send, status: int, code: str, description: str) -> None:
    body = orjson.dumps({"code": code, "description": description})
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    start: dict[str, Any] = {"type": "http.response.start", "status": status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": body})
