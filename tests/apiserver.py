"""A real uvicorn server on 127.0.0.1 running the STAC API over a real SQLite store."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.stac_items import simulated_items
from thisme_stac.simulator import GeneratedCatalogue
from thisme_stac.simulator.server import Resto, _Options
from thisme_stac.store import open_store
from thisme_stac.translate.collection import build_collection
from thisme_stac_api import ApiSettings


def build_store(path: Path | str, step: int = 1) -> list[dict[str, Any]]:
    """A store (SQLite path or pgstac URL) with the SoilMoisture collection and every
    ``step``-th map of the simulator."""
    items = simulated_items(step=step)
    store = open_store(str(path))
    try:
        resto = Resto(GeneratedCatalogue(), _Options())
        store.upsert_collection(build_collection(resto.describe()))
        store.upsert_items(items)
    finally:
        store.close()
    return items


class ApiServer:
    """``uvicorn thisme_stac_api.app:create_app --factory`` in its own process, as deployed.

    Settings travel as ``THISME_*`` environment variables. (uvicorn's ``--fd`` would avoid
    choosing a port, but it treats the socket as AF_UNIX and leaves Nagle on: 40 ms stalls.)
    """

    def __init__(self, settings: ApiSettings, env: dict[str, str]) -> None:
        self.settings = settings
        self.port = 0
        self.env = {**os.environ, **env}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> ApiServer:
        for _ in range(5):  # a port taken between choosing and binding: choose again
            if self._start_once():
                return self
        raise RuntimeError("the API did not start")

    def _start_once(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "thisme_stac_api.app:create_app"),
                *("--factory", "--host", "127.0.0.1", "--port", str(self.port)),
                *("--log-level", "warning", "--no-proxy-headers"),
            ],
            env=self.env,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                if httpx.get(f"{self.url}_mgmt/ping", timeout=2).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("the API did not start within 30 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def running_api(store: Path | str, **settings: Any) -> Iterator[ApiServer]:
    env = {"THISME_STORE": str(store)}
    for key, value in settings.items():
        env[f"THISME_{key.upper()}"] = ",".join(value) if isinstance(value, list) else str(value)
    server = ApiServer(ApiSettings(store=str(store), **settings), env).start()
    try:
        yield server
    finally:
        server.stop()


def get(server: ApiServer, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(server.url + path.lstrip("/"), timeout=30, **kwargs)
