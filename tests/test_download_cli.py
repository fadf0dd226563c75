"""The `download` typer command on a small app (CliRunner), and the STAC API source."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer
from typer.testing import CliRunner

from thisme_stac.download import sources
from thisme_stac.download.command import download
from thisme_stac.errors import ConfigError, DownloadError
from thisme_stac.simulator import GeneratedCatalogue, SimulatorServer
from thisme_stac.simulator.fileserver import FileServer, content, content_sha256

app = typer.Typer()
app.command("download")(download)


@app.callback()
def _group() -> None:
    """A group, so that `download` is a sub-command as in thisme-stac."""


@pytest.fixture
def files() -> Iterator[FileServer]:
    with FileServer() as server:
        yield server


def _items(server: FileServer, sizes: dict[str, int]) -> bytes:
    features: list[dict[str, Any]] = []
    for name, size in sizes.items():
        asset = {
            "href": server.add(name, size=size),
            "roles": ["data"],
            "file:size": size,
            "file:checksum": "1220" + content_sha256(name, size),
        }
        features.append(
            {
                "type": "Feature",
                "id": name.removesuffix(".tif"),
                "collection": "C",
                "properties": {"thisme:site": "S"},
                "links": [],
                "assets": {"data": asset, "meta": {"href": "./meta.json", "roles": ["metadata"]}},
            }
        )
    return orjson.dumps({"type": "FeatureCollection", "features": features})


def test_stdin_source_downloads_and_summarises(files: FileServer, tmp_path: Path) -> None:
    runner = CliRunner()
    stdin = _items(files, {"a.tif": 1000, "b.tif": 2000})
    result = runner.invoke(app, ["download", "-", "--dest", str(tmp_path)], input=stdin)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "C" / "S" / "a" / "a.tif").read_bytes() == content("a.tif", 1000)
    assert (tmp_path / "C" / "S" / "b" / "b.tif").read_bytes() == content("b.tif", 2000)
    assert "downloaded" in result.stderr
    assert result.stdout == ""
    local = orjson.loads((tmp_path / "items.json").read_bytes())
    assert [f["assets"]["data"]["href"] for f in local["features"]] == [
        "./C/S/a/a.tif",
        "./C/S/b/b.tif",
    ]
    assert local["features"][0]["assets"]["meta"]["href"] == "./meta.json"


def test_dry_run_prints_the_plan(files: FileServer, tmp_path: Path) -> None:
    source = tmp_path / "items.json"
    source.write_bytes(_items(files, {"a.tif": 1000, "b.tif": 2500}))
    dest = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "download",
            str(source),
            "--dest",
            str(dest),
            "--dry-run",
            "--layout",
            "{asset}/{filename}",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert lines == [
        ["1000", "data/a.tif", files.file_url("a.tif")],
        ["2500", "data/b.tif", files.file_url("b.tif")],
    ]
    assert "3,500 bytes" in result.stderr
    assert not dest.exists()
    assert not [e for e in files.log if e.method == "GET"]


def test_asset_selection(files: FileServer, tmp_path: Path) -> None:
    source = tmp_path / "items.json"
    source.write_bytes(_items(files, {"a.tif": 10}))
    result = CliRunner().invoke(
        app, ["download", str(source), "--dest", str(tmp_path), "--asset", "nope", "--quiet"]
    )
    assert result.exit_code == 0
    assert orjson.loads((tmp_path / "manifest.json").read_bytes()) == []


def test_failures_raise_one_line_naming_the_products(files: FileServer, tmp_path: Path) -> None:
    source = tmp_path / "items.json"
    source.write_bytes(_items(files, {"ok.tif": 100, "bad.tif": 100}))
    files.files["bad.tif"].fail = [500] * 10
    result = CliRunner().invoke(
        app, ["download", str(source), "--dest", str(tmp_path / "o"), "--retries", "1", "--quiet"]
    )
    assert result.exit_code == 1
    assert isinstance(result.exception, DownloadError)
    assert str(result.exception) == "1 file(s) failed: bad/data (server answered 500)"
    assert (tmp_path / "o" / "C" / "S" / "ok" / "ok.tif").exists()


def test_cli_main_prints_one_line(
    files: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from thisme_stac.cli import main

    source = tmp_path / "items.json"
    source.write_bytes(_items(files, {"w.tif": 5000}))
    files.files["w.tif"].wrong_bytes = True
    with pytest.raises(SystemExit) as exit_info:
        main(["download", str(source), "--dest", str(tmp_path / "o"), "--quiet"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: 1 file(s) failed: w/data (w/data: checksum differs from file:checksum)"]


@pytest.mark.parametrize("args", [["--nope"], ["--concurrency", "0"], ["--retries", "x"]])
def test_cli_usage_errors_are_short_messages(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from thisme_stac.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["download", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "Error:" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give exactly one of"),
        (["x.json", "--stac", "http://127.0.0.1:9"], "give exactly one of"),
        (["--stac", "http://127.0.0.1:9", "--bbox", "1,2,3"], "bbox must be"),
        (["x.json", "--layout", "{id}"], "must contain {filename}"),
        (["--urlq", "q=x", "--username", "someone"], "no password for someone"),
    ],
)
def test_user_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.delenv("THISME_PASSWORD", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    (tmp_path / "x.json").write_text('{"type": "FeatureCollection", "features": []}')
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["download", *args, "--dest", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert isinstance(result.exception, ConfigError)
    assert message in str(result.exception)


def test_resto_login_from_netrc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login admin@thisme.test password thisme\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    for name in ("THISME_USERNAME", "THISME_PASSWORD", "THISME_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    catalogue = GeneratedCatalogue(end=datetime(2016, 2, 1, tzinfo=UTC))
    with SimulatorServer(catalogue, download_auth=True) as sim:
        dest = tmp_path / "out"
        result = CliRunner().invoke(
            app,
            [
                *("download", "--resto-url", sim.url, "--urlq", "q=%23Central-Italy"),
                *("--dest", str(dest), "--concurrency", "2"),
            ],
        )
        assert result.exit_code == 0, result.output
        assert len(list(dest.rglob("*.tif"))) == catalogue.count("Central-Italy")
        assert [r.status for r in sim.requests if r.path == "/auth"] == [200]
        assert "thisme" not in result.stderr.lower().replace("thisme-stac", "")


def test_stac_api_source_follows_next_links(tmp_path: Path) -> None:
    from tests.apiserver import build_store, running_api

    store = tmp_path / "api.sqlite"
    items = build_store(store, step=25)
    start, end = "2018-01-01T00:00:00Z", "2019-12-31T23:59:59Z"
    expected = {i["id"] for i in items if start <= i["properties"]["datetime"] <= end}
    assert len(expected) > 12
    with running_api(store) as api:
        got = list(
            sources.stac_items(
                api.url, collections=["SoilMoisture"], datetime=f"{start}/{end}", limit=5
            )
        )
        assert {i["id"] for i in got} == expected
        assert len(got) == len(expected)
        result = CliRunner().invoke(
            app,
            [
                *("download", "--stac", api.url, "--collection", "SoilMoisture"),
                *("--datetime", f"{start}/{end}", "--dry-run", "--dest", str(tmp_path / "o")),
            ],
        )
        assert result.exit_code == 0, result.output
        assert len(result.stdout.splitlines()) == len(expected)
