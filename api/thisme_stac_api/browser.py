"""stac-browser at ``/browser/``, pointed at the API that serves it.

The build (``scripts/build_browser.sh``) has no catalogue URL: its ``index.html`` loads
``/browser/config.js`` before the application, and that file is generated here per request
with ``catalogUrl`` set to the API root as the client sees it (host, scheme and proxy headers
applied), so one build works under any host name. Every other path below ``/browser/`` is a
file of the build; a page address of the application's HTML5 history mode
(``/browser/collections/SoilMoisture``) that is not a file gets ``index.html``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from thisme_stac.errors import ConfigError
from thisme_stac_api.links import base_url

#: Where the application is served; the build's ``pathPrefix`` is the same.
BROWSER_PATH = "/browser"
#: Where ``scripts/build_browser.sh`` writes the build by default (git-ignored).
DEFAULT_BROWSER_DIR = Path(__file__).with_name("stac_browser")

#: Build files whose names carry a content hash: cacheable for ever.
_HASHED = ("js/", "css/", "img/", "fonts/")


def default_browser_dir() -> Path | None:
    """The default build directory when a build is there, else ``None``."""
    return DEFAULT_BROWSER_DIR if (DEFAULT_BROWSER_DIR / "index.html").is_file() else None


def browser_config(request: Request) -> dict[str, Any]:
    """stac-browser's run-time options (``window.STAC_BROWSER_CONFIG``) for this request."""
    title = getattr(request.app, "title", None) or "STAC Browser"
    return {"catalogUrl": base_url(request), "catalogTitle": title}


def config_script(config: dict[str, Any]) -> str:
    """The ``config.js`` text that hands ``config`` to stac-browser."""
    # JSON is a JavaScript expression; "<" is escaped so the text is also safe inline.
    text = json.dumps(config, ensure_ascii=True, sort_keys=True).replace("<", "\\u003c")
    return f"window.STAC_BROWSER_CONFIG = {text};\n"


async def config_js(request: Request) -> Response:
    """``GET /browser/config.js``: the configuration for the client's view of the API."""
    return Response(
        config_script(browser_config(request)),
        media_type="text/javascript",
        headers={"Cache-Control": "no-store", "Vary": "Host, Forwarded, X-Forwarded-Host"},
    )


class BrowserFiles(StaticFiles):
    """The build's files; page addresses of the single-page application get ``index.html``."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            response = await super().get_response(path, scope)
        except HTTPException as err:
            if err.status_code != 404 or not _wants_html(scope):
                raise
            response = await super().get_response("index.html", scope)
            response.headers["Cache-Control"] = "no-cache"
            return response
        normalised = path.replace(os.sep, "/")
        if normalised.startswith(_HASHED):
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        elif response.status_code == 200:
            response.headers["Cache-Control"] = "no-cache"
        return response


def _wants_html(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"accept":
            return b"text/html" in value
    return False


def mount_browser(app: FastAPI, directory: str | os.PathLike[str]) -> None:
    """Serve the stac-browser build in ``directory`` at ``/browser/`` with its ``config.js``.

    Raises ``ConfigError`` when ``directory`` holds no build.
    """
    root = Path(directory)
    if not (root / "index.html").is_file():
        raise ConfigError(
            f"no stac-browser build in {root} (index.html missing); run scripts/build_browser.sh"
        )
    # The route is added before the mount, so it wins over a config.js among the files.
    app.add_route(f"{BROWSER_PATH}/config.js", config_js, methods=["GET"], include_in_schema=False)
    app.mount(BROWSER_PATH, BrowserFiles(directory=root, html=True), name="browser")
