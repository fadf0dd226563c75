"""One THISME site's soil-moisture maps as an xarray time series in vol.%, with odc-stac.

Finds the site's maps in a STAC API with pystac-client (CQL2 filter on ``thisme:site``), loads
their ``data`` assets with ``odc.stac.load`` on the maps' own pixel grid, turns the stored values
(soil moisture x 5, uint8, 0 = no data) into volumetric soil moisture with the ``scale`` /
``offset`` / ``nodata`` declared in the assets' ``raster:bands`` (STAC 1.1 ``bands`` as a
fallback), then writes:

- ``<site>_timeseries.png``: the site's mean soil moisture over time;
- ``<site>_<date>_map.png``: the map of one date (the last one, or ``--date``);
- ``<site>_timeseries.csv``: date, mean vol.%, valid pixels;

and prints a short summary. Against a local catalogue (``make demo`` or ``thisme-stac serve``)::

    python examples/site_timeseries.py --api http://localhost:8080/ --site Central-Italy \\
        --datetime 2020-01-01/2020-03-31 --out out/

Needs ``pystac-client``, ``odc-stac``, ``xarray`` and ``matplotlib`` (the ``dev`` extras).
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import odc.stac
import pystac
import rasterio
import xarray as xr
from affine import Affine
from odc.geo import resxy_, xy_
from odc.geo.geobox import GeoBox
from pystac_client import Client

DEFAULT_API = "http://localhost:8080/"
DEFAULT_SITE = "Central-Italy"
COLLECTION = "SoilMoisture"
ASSET = "data"
#: GDAL over HTTP: no directory listing or side-car probes next to the asset URL
GDAL_OPTIONS: dict[str, Any] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MAX_RETRY": "3",
}
GROUPBY = {"solar_day": "solar_day", "time": "time", "none": "id", "id": "id"}


@dataclass(frozen=True, slots=True)
class BandInfo:
    """How stored values become physical ones: ``value * scale + offset`` where != nodata."""

    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None
    unit: str = ""


@dataclass(slots=True)
class SiteTimeseries:
    """What the example computed; ``main`` returns it so that tests can check the values."""

    site: str
    items: list[pystac.Item]
    band: BandInfo
    geobox: GeoBox | None
    soil_moisture: xr.DataArray  # (time, y, x) in vol.%, NaN where there is no data
    dates: list[str] = field(default_factory=list)  # YYYY-MM-DD of each time step
    means: list[float] = field(default_factory=list)  # site mean (vol.%) of each time step
    valid_pixels: list[int] = field(default_factory=list)
    outputs: dict[str, Path] = field(default_factory=dict)


# --- search -------------------------------------------------------------------------------------
def search_items(
    api: str,
    site: str,
    *,
    collection: str = COLLECTION,
    datetime: str | None = None,
    max_items: int | None = None,
) -> list[pystac.Item]:
    """The site's maps, oldest first (CQL2-JSON filter on ``thisme:site``)."""
    client = Client.open(api)
    search = client.search(
        collections=[collection],
        filter={"op": "=", "args": [{"property": "thisme:site"}, site]},
        filter_lang="cql2-json",
        datetime=datetime,
        max_items=max_items,
        limit=200,
    )
    items = [item for item in search.items() if ASSET in item.assets]
    items.sort(key=lambda item: (item.datetime or item.common_metadata.start_datetime, item.id))
    return items


# --- metadata -----------------------------------------------------------------------------------
def _number(value: Any, default: float | None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value)


def band_info(item: pystac.Item, asset: str = ASSET) -> BandInfo:
    """Scale, offset, nodata and unit of the asset's first band.

    ``raster:bands`` (raster extension v1) first, then STAC 1.1 ``bands`` (``raster:scale``,
    ``raster:offset``, ``nodata``, ``unit``), then the item's properties.
    """
    fields = item.assets[asset].extra_fields
    sources: list[dict[str, Any]] = []
    for key in ("raster:bands", "bands"):
        bands = fields.get(key)
        if isinstance(bands, list) and bands and isinstance(bands[0], dict):
            sources.append(bands[0])
    sources.append(item.properties)

    def first(*names: str) -> Any:
        for source in sources:
            for name in names:
                if name in source:
                    return source[name]
        return None

    scale = _number(first("scale", "raster:scale"), 1.0)
    offset = _number(first("offset", "raster:offset"), 0.0)
    nodata = _number(first("nodata"), None)
    unit = first("unit")
    return BandInfo(
        scale=1.0 if scale is None else scale,
        offset=0.0 if offset is None else offset,
        nodata=nodata,
        unit=str(unit) if unit else "",
    )


def _proj_crs(fields: dict[str, Any]) -> str | None:
    if fields.get("proj:code"):
        return str(fields["proj:code"])
    if fields.get("proj:epsg"):
        return f"EPSG:{fields['proj:epsg']}"
    return None


def native_geobox(item: pystac.Item, asset: str = ASSET) -> GeoBox:
    """The pixel grid of one map: projection v2 metadata if complete, else the file's header."""
    fields = {**item.properties, **item.assets[asset].extra_fields}
    crs = _proj_crs(fields)
    shape, transform = fields.get("proj:shape"), fields.get("proj:transform")
    if crs and shape and transform and len(transform) >= 6:
        return GeoBox((int(shape[0]), int(shape[1])), Affine(*transform[:6]), crs)
    # not declared: read the GeoTIFF header (a few HTTP range requests, no pixels)
    href = item.assets[asset].get_absolute_href() or item.assets[asset].href
    with rasterio.Env(**GDAL_OPTIONS), rasterio.open(href) as src:
        return GeoBox(src.shape, src.transform, crs or src.crs)


def item_grids(items: Sequence[pystac.Item], asset: str = ASSET) -> list[GeoBox]:
    """Each item's grid; maps without projection info but with the same bbox share a header read."""
    cache: dict[tuple[Any, ...], GeoBox] = {}
    grids = []
    for item in items:
        fields = {**item.properties, **item.assets[asset].extra_fields}
        declared = fields.get("proj:shape") and fields.get("proj:transform")
        key = ("bbox", tuple(item.bbox or ()), _proj_crs(fields))
        if declared or key not in cache:
            grid = native_geobox(item, asset)
            if not declared:
                cache[key] = grid
        else:
            grid = cache[key]
        grids.append(grid)
    return grids


def _anchor(grid: GeoBox) -> Any:
    """Pixel-grid offset (in pixel fractions) that puts output pixel edges on the native ones."""
    a = grid.affine
    return xy_((a.c / abs(a.a)) % 1.0, (a.f / abs(a.e)) % 1.0)


# --- load ---------------------------------------------------------------------------------------
def load_site(
    items: Sequence[pystac.Item], *, groupby: str = "solar_day", asset: str = ASSET
) -> tuple[xr.DataArray, GeoBox | None]:
    """Stored values (time, y, x) on the maps' native grid, without resampling."""
    odc.stac.configure_rio(**GDAL_OPTIONS)  # for odc-stac's own reads
    grids = item_grids(items, asset)
    first = grids[0]
    common: dict[str, Any] = {
        "bands": [asset],
        "groupby": GROUPBY.get(groupby, groupby),
        "chunks": None,  # load now, no dask graph
        "resampling": "nearest",
    }
    if all(grid == first for grid in grids):
        # every map on one grid (the usual case for a site): load exactly that grid
        data = odc.stac.load(items, geobox=first, **common)
        geobox: GeoBox | None = first
    else:
        # maps on different footprints: the union at the native resolution, pixel edges aligned
        res = first.resolution
        data = odc.stac.load(
            items,
            crs=first.crs,
            resolution=resxy_(res.x, res.y),
            anchor=_anchor(first),
            **common,
        )
        geobox = None
    return data[asset], geobox


def to_physical(raw: xr.DataArray, band: BandInfo) -> xr.DataArray:
    """Stored values -> physical values (float64), NaN where nodata.

    odc-stac returns the files' stored values (it reads ``scale``/``offset`` from the metadata
    but does not apply them), so they are applied here, once, from the asset's band metadata.
    """
    nodata = band.nodata if band.nodata is not None else raw.attrs.get("nodata")
    valid = raw.notnull()
    if nodata is not None and not math.isnan(float(nodata)):
        valid = valid & (raw != nodata)
    physical = (raw.astype(np.float64) * band.scale + band.offset).where(valid)
    physical.name = "soil_moisture"
    physical.attrs = {
        "long_name": "volumetric soil moisture",
        "units": band.unit or "%",
        "scale_applied": band.scale,
        "offset_applied": band.offset,
    }
    return physical


# --- outputs ------------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "site"


def plot_timeseries(result: SiteTimeseries, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = result.soil_moisture["time"].values
    fig, ax = plt.subplots(figsize=(9, 4), dpi=100)
    ax.plot(times, result.means, marker="o", linewidth=1.2, markersize=3, color="tab:blue")
    ax.set_title(f"{result.site}: mean soil moisture ({len(result.means)} maps)")
    ax.set_ylabel(f"soil moisture (vol.{result.band.unit or '%'})")
    ax.set_xlabel("date")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_map(result: SiteTimeseries, index: int, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layer = result.soil_moisture.isel(time=index)
    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    mesh = layer.plot.imshow(ax=ax, cmap="YlGnBu", vmin=0, vmax=50, add_colorbar=False)
    fig.colorbar(mesh, ax=ax, shrink=0.8, label=f"soil moisture (vol.{result.band.unit or '%'})")
    ax.set_title(f"{result.site} {result.dates[index]}: mean {result.means[index]:.2f} vol.%")
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    if layer.odc.geobox.crs.geographic:  # degrees: keep ground distances in proportion
        latitude = float(layer[layer.odc.spatial_dims[0]].mean())
        ax.set_aspect(1.0 / max(math.cos(math.radians(latitude)), 0.01))
    else:
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_csv(result: SiteTimeseries, path: Path) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["date", "mean_vol_percent", "valid_pixels"])
        for date, mean, count in zip(result.dates, result.means, result.valid_pixels, strict=True):
            writer.writerow([date, repr(mean), count])
    return path


# --- command line -------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Load one THISME site's soil-moisture maps with odc-stac (vol.%), plot them."
    )
    parser.add_argument("--api", default=DEFAULT_API, help="STAC API root (default: %(default)s)")
    parser.add_argument("--site", default=DEFAULT_SITE, help="thisme:site (default: %(default)s)")
    parser.add_argument("--collection", default=COLLECTION, help="default: %(default)s")
    parser.add_argument("--out", type=Path, default=Path("."), help="output folder")
    parser.add_argument(
        "--datetime", default=None, help="STAC datetime interval, e.g. 2020-01-01/2020-03-31"
    )
    parser.add_argument("--max-items", type=int, default=None, help="load at most N maps")
    parser.add_argument(
        "--groupby",
        choices=sorted(GROUPBY),
        default="solar_day",
        help="maps of one solar day as one time step (default), or one per map (none)",
    )
    parser.add_argument("--date", default=None, help="date of the map PNG (default: the last)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> SiteTimeseries:
    args = parse_args(argv)
    items = search_items(
        args.api,
        args.site,
        collection=args.collection,
        datetime=args.datetime,
        max_items=args.max_items,
    )
    if not items:
        raise SystemExit(f"no {args.collection} maps of site {args.site!r} at {args.api}")
    band = band_info(items[0])
    raw, geobox = load_site(items, groupby=args.groupby)
    soil_moisture = to_physical(raw, band)

    spatial = soil_moisture.odc.spatial_dims  # ("latitude", "longitude") in EPSG:4326
    means = soil_moisture.mean(dim=spatial, skipna=True)
    counts = soil_moisture.notnull().sum(dim=spatial)
    result = SiteTimeseries(
        site=args.site,
        items=items,
        band=band,
        geobox=geobox,
        soil_moisture=soil_moisture,
        dates=[str(t)[:10] for t in soil_moisture["time"].values],
        means=[float(v) for v in means.values],
        valid_pixels=[int(v) for v in counts.values],
    )

    index = len(result.dates) - 1
    if args.date is not None:
        if args.date not in result.dates:
            raise SystemExit(f"no map of {args.site} on {args.date}")
        index = result.dates.index(args.date)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    slug = _slug(args.site)
    result.outputs = {
        "timeseries": plot_timeseries(result, out / f"{slug}_timeseries.png"),
        "map": plot_map(result, index, out / f"{slug}_{result.dates[index]}_map.png"),
        "csv": write_csv(result, out / f"{slug}_timeseries.csv"),
    }
    print_summary(result)
    return result


def print_summary(result: SiteTimeseries) -> None:
    ny, nx = result.soil_moisture.odc.geobox.shape
    print(
        f"{result.site}: {len(result.items)} maps -> {len(result.dates)} dates "
        f"{result.dates[0]} .. {result.dates[-1]}, grid {ny}x{nx} "
        f"(scale {result.band.scale:g}, offset {result.band.offset:g}, "
        f"nodata {result.band.nodata})"
    )
    valid = [m for m in result.means if not math.isnan(m)]
    if valid:
        print(
            f"mean soil moisture: {sum(valid) / len(valid):.2f} vol.% "
            f"(min {min(valid):.2f}, max {max(valid):.2f})"
        )
    for date, mean, count in zip(result.dates, result.means, result.valid_pixels, strict=True):
        print(f"  {date}  {mean:6.2f} vol.%  ({count} valid pixels)")
    for name, path in result.outputs.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:
        sys.exit(130)
