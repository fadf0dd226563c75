"""Run stac-api-validator with no internet.

    python tests/validator_offline.py SCHEMA_DIR [stac-api-validator options...]

or, for another tool in a fresh interpreter, ``install(SCHEMA_DIR)`` before it makes requests.

The validator (through stac-validator, stac-check and pystac) downloads JSON schemas from
schemas.stacspec.org, stac-extensions.github.io, geojson.org (and proj.org). Here every urllib3
connection pool (under ``requests`` and pystac alike) answers those URLs from files under
SCHEMA_DIR laid out as ``SCHEMA_DIR/<host>/<path>`` (tests/data/schemas, see its README), and
every socket connection or name lookup outside loopback is refused, so the run reaches nothing
but the API under test on 127.0.0.1. Each schema URL is reported on stderr as
``offline-schema-served: URL`` or, with no local file (answered 404),
``offline-schema-missing: URL``, so that the caller can tell a missing file from an API error.
"""

from __future__ import annotations

import io
import ipaddress
import os
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from urllib3 import HTTPConnectionPool, HTTPResponse

#: Hosts whose JSON schemas STAC tools fetch (proj.org: PROJJSON, behind ``proj:projjson``).
SCHEMA_HOSTS = (
    "schemas.stacspec.org",
    "stac-extensions.github.io",
    "geojson.org",
    "proj.org",
)
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")
LOOPBACK_NAMES = ("localhost", "localhost.localdomain")


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _guard_sockets() -> None:
    """Refuse connections and DNS lookups of anything but loopback (and Unix sockets)."""
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex
    getaddrinfo = socket.getaddrinfo

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise ConnectionRefusedError(f"network disabled (offline validator): {address!r}")

    def guarded_connect(self: socket.socket, address: Any) -> None:
        check(self, address)
        connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        check(self, address)
        return connect_ex(self, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and not _is_loopback(str(name)):
            raise socket.gaierror(socket.EAI_NONAME, f"network disabled: {name}")
        return getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = guarded_connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = guarded_connect_ex  # type: ignore[method-assign,assignment]
    socket.getaddrinfo = guarded_getaddrinfo


def _serve_schemas(root: Path) -> None:
    """Answer schema-host URLs from ``root/<host>/<path>`` in every urllib3 connection pool.

    Both ``requests`` (stac-validator, stac-check) and pystac's own schema reads go through
    urllib3, so one patch covers them; a pool for a schema host never opens a socket.
    """
    urlopen = HTTPConnectionPool.urlopen

    def offline_urlopen(
        self: HTTPConnectionPool, method: str, url: str, *args: Any, **kwargs: Any
    ) -> Any:
        if self.host not in SCHEMA_HOSTS:
            return urlopen(self, method, url, *args, **kwargs)
        address = f"{self.scheme}://{self.host}{url}"
        path = (root / self.host / urlsplit(url).path.lstrip("/")).resolve()
        if path.is_file() and path.is_relative_to(root):
            print(f"offline-schema-served: {address}", file=sys.stderr, flush=True)
            status, reason, data = 200, "OK", path.read_bytes()
        else:
            print(f"offline-schema-missing: {address}", file=sys.stderr, flush=True)
            status, reason, data = 404, "Not Found", b"{}"
        return HTTPResponse(
            body=io.BytesIO(data),
            headers={"Content-Type": "application/json", "Content-Length": str(len(data))},
            status=status,
            reason=reason,
            preload_content=kwargs.get("preload_content", True),
            decode_content=kwargs.get("decode_content", True),
            request_method=method,
            request_url=address,
        )

    HTTPConnectionPool.urlopen = offline_urlopen  # type: ignore[method-assign]


def install(schema_dir: Path | str) -> None:
    """Refuse the network outside loopback and serve the schemas from ``schema_dir``."""
    for name in PROXY_VARIABLES:  # a proxy would hide the schema hosts from the pools
        os.environ.pop(name, None)
        os.environ.pop(name.upper(), None)
    _guard_sockets()
    _serve_schemas(Path(schema_dir).resolve())


def main(argv: list[str]) -> None:
    install(argv[0])
    from stac_api_validator.__main__ import main as validator

    validator(args=argv[1:], prog_name="stac-api-validator")


if __name__ == "__main__":
    main(sys.argv[1:])
