"""`thisme-stac serve`: the STAC API (package ``thisme-stac-api``) over a store, with uvicorn."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from thisme_stac.errors import ConfigError


def load_api() -> Any:
    """The ``thisme_stac_api`` module, or a readable error when it is not installed."""
    try:
        import thisme_stac_api.app as api_app
    except ImportError as err:
        raise ConfigError(
            f"the STAC API is not installed ({err.name}); pip install thisme-stac-api"
        ) from None
    return api_app


def shown_store(url: str) -> str:
    """A store path as is; a store URL without its credentials (fit for logs)."""
    if "://" not in url or url.startswith("sqlite:"):
        return url
    from thisme_stac.resto.client import redact

    return redact(url)


def build_app(
    store: str | None = None,
    *,
    root_path: str | None = None,
    cors_origins: str | None = None,
    browser_dir: str | None = None,
) -> tuple[Any, Any]:
    """(ASGI app, settings) for a store path/URL; settings come from ``THISME_*`` otherwise."""
    api_app = load_api()
    from thisme_stac_api.config import ApiSettings

    overrides: dict[str, Any] = {}
    if store:
        overrides["store"] = store
    if root_path is not None:
        overrides["root_path"] = root_path
    if cors_origins is not None:
        overrides["cors_origins"] = cors_origins
    if browser_dir is not None:
        overrides["browser_dir"] = browser_dir
    try:
        settings = ApiSettings(**overrides)
    except ValueError as err:
        raise ConfigError(f"invalid API settings: {' '.join(str(err).split())}") from None
    return api_app.instantiate_api(settings).app, settings


def serve(
    store: Annotated[str | None, typer.Option(help="Store path or URL [env THISME_STORE].")] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    root_path: Annotated[
        str | None, typer.Option(help="Path prefix behind a reverse proxy [env THISME_ROOT_PATH].")
    ] = None,
    cors_origins: Annotated[
        str | None,
        typer.Option(help="Allowed browser origins, comma-separated [env THISME_CORS_ORIGINS]."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
) -> None:
    """Serve a harvested catalogue as a STAC API (transactions need THISME_API_KEY)."""
    import uvicorn

    app, settings = build_app(store, root_path=root_path, cors_origins=cors_origins)
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    prefix = settings.root_path.rstrip("/")
    print(
        f"STAC API on {shown_store(settings.store)} at http://{shown}:{port}{prefix}/ "
        f"(OpenAPI: http://{shown}:{port}{prefix}{settings.docs_url})",
        file=sys.stderr,
        flush=True,
    )
    target: Any = app
    if workers > 1:
        # each worker process builds its own app (and store connections) from the environment
        os.environ["THISME_STORE"] = settings.store
        os.environ["THISME_ROOT_PATH"] = settings.root_path
        os.environ["THISME_CORS_ORIGINS"] = ",".join(settings.cors_origins)
        target = "thisme_stac_api.app:create_app"
    try:
        # forwarded headers are handled once, by the app's ProxyHeaderMiddleware
        uvicorn.run(
            target,
            factory=workers > 1,
            workers=workers,
            host=host,
            port=port,
            log_level=log_level,
            proxy_headers=False,
        )
    except OSError as err:
        raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror}") from None
