"""A scripted file server on 127.0.0.1 for downloader tests: Range, throttling, faults, a log."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


def _block(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest() * 2048  # 64 KiB


def content(name: str, size: int) -> bytes:
    """Deterministic bytes of a file (a repeated digest of its name)."""
    block = _block(name)
    return (block * (size // len(block) + 1))[:size]


def content_slice(name: str, start: int, length: int) -> bytes:
    """``content(name, ...)[start:start + length]`` without building the whole file."""
    block = _block(name)
    offset = start % len(block)
    return (block[offset:] + block * (length // len(block) + 1))[:length]


@dataclass
class Behaviour:
    size: int = 100_000
    throttle: float | None = None  # bytes per second
    fail: list[int] = field(default_factory=list)  # statuses to answer first, in order
    retry_after: str | None = None
    wrong_bytes: bool = False
    close_after: int | None = None  # bytes sent before closing the connection (once)
    stall_after: int | None = None  # bytes sent before stalling (once)
    ignore_range: bool = False
    latency: float = 0.0  # seconds before each answer


@dataclass
class Logged:
    method: str
    path: str
    range: str | None
    status: int


class FileServer:
    def __init__(self) -> None:
        self.files: dict[str, Behaviour] = {}
        self.log: list[Logged] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(head=True)

            def do_GET(self) -> None:
                self._serve(head=False)

            def _reply(self, status: int, headers: dict[str, str], body: bytes, head: bool) -> None:
                with server.lock:
                    server.log.append(
                        Logged(self.command, self.path, self.headers.get("Range"), status)
                    )
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _serve(self, head: bool) -> None:
                name = urlsplit(self.path).path.rsplit("/", 1)[-1]
                behaviour = server.files.get(name)
                if behaviour is None:
                    self._reply(404, {}, b"not found", head)
                    return
                if behaviour.fail:
                    status = behaviour.fail.pop(0)
                    extra = {"Retry-After": behaviour.retry_after} if behaviour.retry_after else {}
                    self._reply(status, extra, b"try later", head)
                    return
                if behaviour.latency:
                    time.sleep(behaviour.latency)
                size = behaviour.size
                headers = {"Accept-Ranges": "bytes", "ETag": '"' + name + '"'}
                status, first = 200, 0
                wanted = self.headers.get("Range")
                if wanted and not behaviour.ignore_range:
                    match = re.fullmatch(r"bytes=(\d+)-", wanted)
                    if not match or int(match.group(1)) >= size:
                        self._reply(416, {"Content-Range": f"bytes */{size}"}, b"", head)
                        return
                    first = int(match.group(1))
                    status = 206
                    headers["Content-Range"] = f"bytes {first}-{size - 1}/{size}"
                with server.lock:
                    server.log.append(Logged(self.command, self.path, wanted, status))
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(size - first))
                self.end_headers()
                if head:
                    return
                sent = 0
                step = 65536
                try:
                    while first + sent < size:
                        if behaviour.close_after is not None and sent >= behaviour.close_after:
                            behaviour.close_after = None
                            self.close_connection = True
                            return
                        if behaviour.stall_after is not None and sent >= behaviour.stall_after:
                            behaviour.stall_after = None
                            time.sleep(5)
                            return
                        chunk = content_slice(name, first + sent, min(step, size - first - sent))
                        if behaviour.wrong_bytes and first + sent < 64:
                            chunk = bytes(b ^ 0xFF for b in chunk[:64]) + chunk[64:]
                        self.wfile.write(chunk)
                        sent += len(chunk)
                        if behaviour.throttle:
                            time.sleep(len(chunk) / behaviour.throttle)
                except (BrokenPipeError, ConnectionResetError):
                    return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
