"""A scripted HTTP server on 127.0.0.1 replaying recorded resto responses, with injected faults."""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FIXTURE_BASE = "http://127.0.0.1:5252"


@dataclass
class Reply:
    """One scripted response. ``drop`` closes the connection without an answer."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, Reply] = {}
        self.faults: dict[str, deque[Reply]] = defaultdict(deque)
        self.log: list[tuple[str, dict[str, str]]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def serve_fixture(self, path_and_query: str, body: bytes, status: int = 200) -> None:
        """Serve a recorded body (its recorded base URL rewritten to ours) at a path?query."""
        self.routes[path_and_query] = Reply(
            status, body.replace(FIXTURE_BASE.encode(), self.url.encode())
        )

    def fail_next(self, path_and_query: str, *replies: Reply) -> None:
        self.faults[path_and_query].extend(replies)


class _Handler(BaseHTTPRequestHandler):
    server: ScriptedServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.log.append((self.path, dict(self.headers)))
        faults = self.server.faults.get(self.path)
        reply = faults.popleft() if faults else self.server.routes.get(self.path)
        if reply is None:
            reply = Reply(404, b'{"ErrorMessage":"Not Found","ErrorCode":404}')
        if reply.drop:
            self.close_connection = True
            self.connection.close()
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply.body)))
        for key, value in reply.headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(reply.body)


@contextmanager
def scripted_server() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
