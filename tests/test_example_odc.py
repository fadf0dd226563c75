"""examples/site_timeseries.py end to end: simulator -> harvest -> STAC API -> odc-stac -> vol.%.

The simulator serves real GeoTIFFs; the example loads them through GDAL over HTTP. The simulator
runs in a child process: rasterio holds the GIL while GDAL opens a URL, so a server thread in the
test's own process could never answer it.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tests.apiserver import running_api
from thisme_stac.harvest import Harvester
from thisme_stac.resto.client import RestoClient
from thisme_stac.resto.query import parse_urlq
from thisme_stac.simulator import GeneratedCatalogue
from thisme_stac.simulator.geotiff import NODATA, SIZE, encode, soil_moisture_field
from thisme_stac.store import open_store

#: odc-geo 0.5 still uses affine's ``*`` and shapely's ``ops.transform``: not ours to fix
pytestmark = pytest.mark.filterwarnings(
    "ignore::PendingDeprecationWarning:odc.geo", "ignore::DeprecationWarning:odc.geo"
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "site_timeseries.py"
SEED = "q=%23Central-Italy&collection=SoilMoisture"
SITE = "Central-Italy"
SCALE = 0.2
#: the simulated catalogue stops here: ten weeks of maps (2016-01-01 .. 2016-03-14)
END = datetime(2016, 3, 15, tzinfo=UTC)
#: the example loads two months of them
WINDOW = ("2016-01-01T00:00:00Z", "2016-02-29T23:59:59Z")


def _serve_simulator(conn: Any, end: datetime) -> None:
    """Child process: the simulator on 127.0.0.1, an ephemeral port sent back through ``conn``."""
    from thisme_stac.simulator import GeneratedCatalogue, SimulatorServer

    server = SimulatorServer(GeneratedCatalogue(end=end), host="127.0.0.1", port=0)
    conn.send(server.url)
    conn.close()
    server.serve_forever()


@pytest.fixture(scope="module")
def simulator_url() -> Iterator[str]:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe(duplex=False)
    process = context.Process(target=_serve_simulator, args=(child, END), daemon=True)
    process.start()
    try:
        if not parent.poll(60):
            raise RuntimeError("the simulator did not start within 60 s")
        yield str(parent.recv())
    finally:
        process.terminate()
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join()


@pytest.fixture(scope="module")
def example() -> ModuleType:
    # the example's dependencies are dev extras: a missing one is a failure, not a skip
    for name in ("odc.stac", "xarray", "matplotlib", "pystac_client", "rasterio"):
        importlib.import_module(name)
    spec = importlib.util.spec_from_file_location("site_timeseries", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _harvest(url: str, store_path: Path) -> Any:
    store = open_store(str(store_path))
    try:
        with RestoClient(url) as client:
            return Harvester(client, store).harvest(parse_urlq(SEED))
    finally:
        store.close()


def _expected() -> dict[str, npt.NDArray[np.float64]]:
    """Truth per date: the generator's field as stored (x 5, uint8) times 0.2; NaN = no data."""
    catalogue = GeneratedCatalogue(end=END)
    low, high = (datetime.fromisoformat(t).timestamp() for t in WINDOW)
    truth: dict[str, npt.NDArray[np.float64]] = {}
    for pos in catalogue.positions(SITE):
        record = catalogue.record(int(pos))
        if not low <= record["start"] <= high:
            continue
        stored = encode(soil_moisture_field(record["site"].bbox, record["start"]))
        values = np.where(stored == NODATA, np.nan, stored.astype(np.float64) * SCALE)
        date = datetime.fromtimestamp(record["start"], tz=UTC).strftime("%Y-%m-%d")
        assert date not in truth  # one map per date for this site
        truth[date] = values
    return truth


def test_site_timeseries_values_equal_the_generator(
    example: ModuleType, simulator_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    store = tmp_path / "central-italy.sqlite"
    report = _harvest(simulator_url, store)
    assert report.complete
    assert report.failed == 0
    assert report.fetched == GeneratedCatalogue(end=END).count(SITE)

    with running_api(store) as api:
        out = tmp_path / "out"
        result = example.main(
            [
                *("--api", api.url, "--site", SITE, "--out", str(out)),
                *("--datetime", "/".join(WINDOW), "--groupby", "solar_day"),
            ]
        )

    truth = _expected()
    assert len(truth) >= 15  # two months of maps on two orbits
    assert result.dates == sorted(truth)
    assert len(result.items) == len(truth)
    assert {item.properties["thisme:site"] for item in result.items} == {SITE}

    # metadata read from the items, not assumed
    assert result.band.scale == pytest.approx(SCALE)
    assert result.band.offset == 0.0
    assert result.band.nodata == NODATA

    # the maps' native grid: 128 x 128 pixels over the site's bbox, no resampling
    sm = result.soil_moisture
    assert sm.dims == ("time", "latitude", "longitude")
    assert sm.shape[1:] == (SIZE, SIZE)
    assert str(result.geobox.crs) == "EPSG:4326"
    west, _south, east, north = result.items[0].bbox
    assert result.geobox.boundingbox.left == pytest.approx(west, abs=1e-9)
    assert result.geobox.boundingbox.top == pytest.approx(north, abs=1e-9)
    assert result.geobox.resolution.x == pytest.approx((east - west) / SIZE, rel=1e-12)

    for n, date in enumerate(result.dates):
        expected = truth[date]
        valid = ~np.isnan(expected)
        mean = float(expected[valid].mean())
        assert result.means[n] == pytest.approx(mean, abs=1e-6), date
        assert result.valid_pixels[n] == int(valid.sum())
        # pixel by pixel too: same nodata mask, same vol.% everywhere
        loaded = sm.isel(time=n).values
        np.testing.assert_array_equal(np.isnan(loaded), ~valid)
        np.testing.assert_allclose(loaded[valid], expected[valid], rtol=0, atol=1e-9)
    assert min(result.means) >= 2.0
    assert max(result.means) <= 50.0

    # outputs: two non-empty PNGs and the CSV of the series
    for key in ("timeseries", "map"):
        path = result.outputs[key]
        assert path.parent == out
        assert path.stat().st_size > 1000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.outputs["map"].name == f"{SITE}_{result.dates[-1]}_map.png"
    rows = result.outputs["csv"].read_text().splitlines()
    assert rows[0] == "date,mean_vol_percent,valid_pixels"
    assert [row.split(",")[0] for row in rows[1:]] == result.dates
    assert [float(row.split(",")[1]) for row in rows[1:]] == result.means

    printed = capsys.readouterr().out
    assert f"{SITE}: {len(truth)} maps -> {len(truth)} dates" in printed
    assert f"{result.dates[0]}  {result.means[0]:6.2f} vol.%" in printed
    assert time.monotonic() - started < 60


def test_band_and_grid_metadata_fallbacks(example: ModuleType) -> None:
    """STAC 1.1 ``bands`` alone still give scale/nodata; declared projection needs no file read."""
    import pystac

    transform = [0.005859375, 0.0, 12.2, 0.0, -0.0046875, 43.2]
    item = pystac.Item(
        "m",
        geometry=None,
        bbox=None,
        datetime=datetime(2016, 1, 1, tzinfo=UTC),
        properties={},
    )
    item.add_asset(
        "data",
        pystac.Asset(
            "http://127.0.0.1:9/never-read.tif",
            extra_fields={
                "bands": [{"nodata": 0, "raster:scale": 0.2, "raster:offset": 1.5, "unit": "%"}],
                "proj:code": "EPSG:4326",
                "proj:shape": [SIZE, SIZE],
                "proj:transform": transform,
            },
        ),
    )
    band = example.band_info(item)
    assert (band.scale, band.offset, band.nodata, band.unit) == (0.2, 1.5, 0.0, "%")
    grid = example.native_geobox(item)
    assert grid.shape == (SIZE, SIZE)
    assert str(grid.crs) == "EPSG:4326"
    assert tuple(grid.affine)[:6] == tuple(transform)
    # an output grid on another footprint keeps the native pixel edges: edge = anchor + k * res
    anchor = example._anchor(grid)
    for edge, fraction, res in ((12.2, anchor.x, transform[0]), (43.2, anchor.y, -transform[4])):
        steps = (edge - fraction * res) / res
        assert steps == pytest.approx(round(steps), abs=1e-9)
