"""Soil-moisture GeoTIFFs of the simulator: EPSG:4326, uint8, values = soil moisture (vol.%) x 5."""

from __future__ import annotations

import io
import math
import zlib
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import tifffile

SIZE = 128
NODATA = 0
BORDER = 3  # a nodata frame around each map (outside the plots)


def soil_moisture_field(
    site_bbox: tuple[float, float, float, float], start: int, size: int = SIZE
) -> npt.NDArray[np.float64]:
    """Volumetric soil moisture (%) of one map; NaN where there is no data. Deterministic."""
    day = datetime.fromtimestamp(start, tz=UTC).timetuple().tm_yday
    seed = zlib.crc32(repr(site_bbox).encode()) % 1000
    seasonal = 22.0 + 9.0 * math.cos(2 * math.pi * (day - 15) / 365.25)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    pattern = 5.0 * np.sin((x + seed) / 9.0) * np.cos((y - seed) / 13.0)
    rain = 4.0 * math.sin(start / 86400.0 / 6.0 + seed)
    field = np.clip(seasonal + pattern + rain, 2.0, 50.0)
    field[:BORDER, :] = np.nan
    field[-BORDER:, :] = np.nan
    field[:, :BORDER] = np.nan
    field[:, -BORDER:] = np.nan
    return np.asarray(field, dtype=np.float64)


def encode(field: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]:
    """Soil moisture (%) -> stored values (x 5, rounded), 0 = nodata."""
    scaled = np.where(np.isnan(field), NODATA, np.rint(np.nan_to_num(field) * 5.0))
    return np.clip(scaled, 1, 255).astype(np.uint8) * (~np.isnan(field))


def geotiff_bytes(site_bbox: tuple[float, float, float, float], start: int) -> bytes:
    """A GeoTIFF (EPSG:4326, north-up) of one map."""
    values = encode(soil_moisture_field(site_bbox, start))
    west, south, east, north = site_bbox
    height, width = values.shape
    scale = ((east - west) / width, (north - south) / height, 0.0)
    tiepoint = (0.0, 0.0, 0.0, west, north, 0.0)
    # GeoKeyDirectory: version 1.1.0, 3 keys: raster type = area, model = geographic, EPSG:4326
    geokeys = (1, 1, 0, 3, 1024, 0, 1, 2, 1025, 0, 1, 1, 2048, 0, 1, 4326)
    buffer = io.BytesIO()
    tifffile.imwrite(
        buffer,
        values,
        photometric="minisblack",
        compression="zlib",
        extratags=[
            (33550, "d", 3, scale, True),
            (33922, "d", 6, tiepoint, True),
            (34735, "H", len(geokeys), geokeys, True),
            (42113, "s", 0, f"{NODATA}\x00", True),
        ],
    )
    return buffer.getvalue()
