"""The simulator's fault switches, seen from a plain HTTP client on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import httpx
import orjson
import pytest

from thisme_stac.errors import ConfigError
from thisme_stac.simulator import Faults, GeneratedCatalogue, SimulatorServer

END = datetime(2016, 4, 1, tzinfo=UTC)
SEARCH = "/collections/SoilMoisture/features.json?limit=20"


@contextmanager
def _sim(spec: str | None) -> Iterator[tuple[SimulatorServer, httpx.Client]]:
    faults = Faults.parse(spec) if spec is not None else None
    with (
        SimulatorServer(GeneratedCatalogue(end=END), faults=faults) as sim,
        httpx.Client(base_url=sim.url, timeout=10) as client,
    ):
        yield sim, client


def _next(page: dict[str, object]) -> str:
    links = page["properties"]["links"]  # type: ignore[index]
    href = next(link["href"] for link in links if link["rel"] == "next")  # type: ignore[index]
    return str(href)


def test_spec_parsing() -> None:
    faults = Faults.parse("5xx=20%, truncate=0.05,latency=50ms,429=0.1,retry_after=2,dup=1,seed=7")
    assert (faults.error, faults.truncate, faults.latency) == (0.2, 0.05, 0.05)
    assert (faults.throttle, faults.retry_after, faults.duplicate, faults.seed) == (0.1, 2, 1, 7)
    assert Faults.parse("stall=1,stall_time=1.5s,publish=3,publish_step=6d").publish_step == 518400
    assert faults.active
    assert not Faults.parse("").active
    assert not Faults.parse("seed=3,retry_after=1").active
    assert Faults.parse(faults.describe()) == faults


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("5xx=1.5", "outside 0..1"),
        ("bogus=1", "unknown fault 'bogus=1'"),
        ("5xx", "unknown fault '5xx'"),
        ("latency=soon", "not a duration"),
        ("publish=-1", "not a whole number"),
    ],
)
def test_bad_specs_are_one_line_config_errors(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        Faults.parse(spec)
    assert "\n" not in str(caught.value)


def test_without_faults_the_answers_are_unchanged() -> None:
    with _sim(None) as (_, plain), _sim("seed=5") as (_, seeded):
        for path in (SEARCH, "/collections/SoilMoisture", "/collections"):
            a, b = plain.get(path), seeded.get(path)
            assert (a.status_code, a.content) == (
                b.status_code,
                b.content.replace(
                    f":{seeded.base_url.port}".encode(), f":{plain.base_url.port}".encode()
                ),
            )


def test_same_seed_same_faults_other_seed_other_faults() -> None:
    def statuses(spec: str) -> list[int]:
        with _sim(spec) as (_, client):
            return [client.get(SEARCH).status_code for _ in range(16)]

    first = statuses("5xx=0.3,429=0.2,seed=1")
    assert first == statuses("5xx=0.3,429=0.2,seed=1")
    assert first != statuses("5xx=0.3,429=0.2,seed=2")
    assert {200, 429} <= set(first)
    assert set(first) - {200, 429} <= {500, 502, 503, 504}


def test_5xx_and_429_answer_like_resto() -> None:
    with _sim("5xx=1") as (sim, client):
        answer = client.get(SEARCH)
        assert answer.status_code in (500, 502, 503, 504)
        assert answer.json()["ErrorCode"] == answer.status_code
        assert sim.fault_stats == {"5xx": 1}
    with _sim("429=1,retry_after=3") as (_, client):
        answer = client.get(SEARCH)
        assert answer.status_code == 429
        assert answer.headers["Retry-After"] == "3"


@pytest.mark.parametrize("spec", ["drop=1", "cut=1"])
def test_dropped_and_cut_connections(spec: str) -> None:
    with _sim(spec) as (sim, client):
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(SEARCH)
        assert sim.fault_stats == {spec.split("=")[0]: 1}


def test_truncated_json_is_a_complete_http_answer() -> None:
    with _sim("truncate=1") as (_, client):
        answer = client.get(SEARCH)
    assert answer.status_code == 200
    assert int(answer.headers["Content-Length"]) == len(answer.content)
    assert answer.content.startswith(b"{")
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(answer.content)


def test_duplicates_keep_the_cursor() -> None:
    with _sim(None) as (_, plain), _sim("dup=1") as (sim, client):
        clean, dup = plain.get(SEARCH).json(), client.get(SEARCH).json()
    ids = [f["id"] for f in dup["features"]]
    assert len(ids) > len(set(ids)) == len(clean["features"])
    assert ids[-1] == clean["features"][-1]["id"]
    assert sim.fault_stats["duplicates"] == len(ids) - len(set(ids))
    assert _next(dup).split("lt=")[1] == _next(clean).split("lt=")[1]


def test_shifted_page_repeats_the_end_of_the_previous_page() -> None:
    with _sim("shift=1") as (sim, client):
        first = client.get(SEARCH).json()
        second = client.get(_next(first).split(str(sim.url))[-1]).json()
    previous = [f["id"] for f in first["features"]]
    repeated = [f["id"] for f in second["features"] if f["id"] in previous]
    assert 1 <= len(repeated) <= 19
    assert repeated == previous[-len(repeated) :]
    assert sim.fault_stats["duplicates"] == len(repeated)


def test_publish_adds_maps_at_the_head_between_two_pages() -> None:
    with _sim("publish=2") as (sim, client):
        before = len(sim.catalogue)
        first = client.get(SEARCH).json()
        assert len(sim.catalogue) == before  # the first page publishes nothing
        follow = _next(first).split(str(sim.url))[-1]
        for _ in range(3):
            client.get(follow)
        published = sim.fault_stats["published"]
        assert published > 0
        assert len(sim.catalogue) == before + published
        newest = client.get(SEARCH).json()["features"][0]["properties"]["startDate"]
    assert newest > first["features"][0]["properties"]["startDate"]


def test_stalled_download_pauses_then_completes() -> None:
    with _sim(None) as (_, plain):
        page = plain.get(SEARCH).json()
        href = page["features"][0]["properties"]["links"][0]["href"]
        path = "/" + href.split("/", 3)[3]
        whole = plain.get(path).content
    with _sim("stall=1,stall_time=1s") as (sim, client):
        assert client.get(path).content == whole
        with pytest.raises(httpx.ReadTimeout):
            client.get(path, timeout=httpx.Timeout(10, read=0.2))
        assert sim.fault_stats["stall"] == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_simulate_command_options() -> None:
    cmd = [sys.executable, "-m", "thisme_stac", "simulate", "--end", "2016-03-01"]
    bad = subprocess.run([*cmd, "--faults", "5xx=2"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines() == ["error: fault 5xx: rate '2' is outside 0..1"]
    port = _free_port()
    proc = subprocess.Popen(
        [*cmd, "--port", str(port), "--faults", "429=1,retry_after=7", "--seed", "3"],
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ,
    )
    try:
        assert proc.stderr is not None
        banner = [proc.stderr.readline(), proc.stderr.readline()]
        assert banner[1].strip() == "injecting faults: seed=3,429=1,retry_after=7"
        answer = httpx.get(f"http://127.0.0.1:{port}{SEARCH}", timeout=10)
        assert (answer.status_code, answer.headers["Retry-After"]) == (429, "7")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
