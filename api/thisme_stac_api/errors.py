"""Every error becomes a JSON body ``{"code", "description"}`` with the right status."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from stac_fastapi.types.errors import (
    ConflictError,
    DatabaseError,
    ForeignKeyError,
    InvalidQueryParameter,
    NotFoundError,
)
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from thisme_stac.errors import ConfigError, StoreError
from thisme_stac.store.cql2sql import InvalidQuery
from thisme_stac_api.core import JSONBody

logger = logging.getLogger("thisme_stac_api")

STATUS: dict[type[Exception], int] = {
    NotFoundError: 404,
    ConflictError: 409,
    ForeignKeyError: 424,
    DatabaseError: 503,
    InvalidQueryParameter: 400,
    ConfigError: 400,
    InvalidQuery: 400,
    StoreError: 503,
}


def error_body(status: int, code: str, description: str, **extra: Any) -> Response:
    return JSONBody({"code": code, "description": description, **extra}, status_code=status)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query"))
        message = error.get("msg", "invalid value")
        parts.append(f"{where}: {message}" if where else str(message))
    return "; ".join(parts) or "invalid request"


def add_error_handlers(app: FastAPI) -> None:
    """Install handlers so that no request ends in an HTML page or a bare 500."""

    def mapped(request: Request, exc: Exception) -> Response:
        status = next(code for cls, code in STATUS.items() if isinstance(exc, cls))
        if status >= 500:
            logger.error(
                "%s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc
            )
        return error_body(status, type(exc).__name__, _one_line(exc))

    for cls in STATUS:
        app.add_exception_handler(cls, mapped)

    def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else _one_line(exc.detail)
        response = error_body(exc.status_code, type(exc).__name__, detail)
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    def invalid_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_body(400, "InvalidParameterValue", _validation_message(exc))

    def unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_body(500, "InternalServerError", "internal error; see the server log")

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(Exception, unexpected)
