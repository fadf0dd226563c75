"""Constants of the THISME -> STAC mapping: extensions, providers, media types, item assets."""

from __future__ import annotations

from typing import Any, Final

STAC_VERSION: Final = "1.1.0"
COLLECTION_ID: Final = "SoilMoisture"

SAR: Final = "https://stac-extensions.github.io/sar/v1.0.0/schema.json"
SAT: Final = "https://stac-extensions.github.io/sat/v1.0.0/schema.json"
PROCESSING: Final = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
PROJECTION: Final = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
RASTER: Final = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
FILE: Final = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
ITEM_EXTENSIONS: Final = (SAR, SAT, PROCESSING, PROJECTION, RASTER, FILE)
COLLECTION_EXTENSIONS: Final = (RASTER, PROJECTION, SAR, SAT, PROCESSING)

GEOTIFF: Final = "image/tiff; application=geotiff"
ZIP: Final = "application/zip"
PNG: Final = "image/png"
JPEG: Final = "image/jpeg"
JSON: Final = "application/json"

PLATFORMS: Final = {
    "S1A": "sentinel-1a",
    "S1B": "sentinel-1b",
    "S1C": "sentinel-1c",
    "S1D": "sentinel-1d",
}
INSTRUMENTS: Final = {"SAR-C": "c-sar", "C-SAR": "c-sar", "SAR": "c-sar"}
ORBIT_STATES: Final = {
    "ascending": "ascending",
    "asc": "ascending",
    "descending": "descending",
    "desc": "descending",
}

#: Description hashtags that are not site names.
GENERIC_TAGS: Final = frozenset(
    {
        "soilmoisture",
        "sentinel-1",
        "sentinel1",
        "sentinel-2",
        "sentinel2",
        "thisme",
        "theia",
        "s2mp",
    }
)
KEYWORDS: Final = ("soil moisture", "Sentinel-1", "SAR", "THISME", "Theia")

#: Map values are soil moisture (vol.%) x 5, stored as unsigned bytes; 0 is nodata.
SCALE: Final = 0.2
NODATA: Final = 0
DATA_TYPE: Final = "uint8"
UNIT: Final = "%"
PROJ_CODE: Final = "EPSG:4326"

PROCESSING_LINEAGE: Final = (
    "Soil moisture inverted from Sentinel-1 C-band backscatter (VV) by a neural network trained on "
    "a water cloud model, with vegetation described by Sentinel-2 NDVI (S2MP method, INRAE/CESBIO)."
)


def band() -> dict[str, Any]:
    """STAC 1.1 ``bands`` entry of the soil-moisture map."""
    return {
        "name": "soil_moisture",
        "description": "Volumetric soil moisture (vol.%) x 5; multiply by 0.2 for vol.%",
        "nodata": NODATA,
        "data_type": DATA_TYPE,
        "unit": UNIT,
    }


def raster_band() -> dict[str, Any]:
    """raster v1.1 ``raster:bands`` entry: tools such as odc-stac apply scale/offset from it."""
    return {"nodata": NODATA, "data_type": DATA_TYPE, "scale": SCALE, "offset": 0.0, "unit": UNIT}


def data_asset_fields() -> dict[str, Any]:
    """Fields shared by every ``data`` asset and the collection's ``item_assets``."""
    return {
        "title": "Soil moisture map",
        "roles": ["data"],
        "bands": [band()],
        "raster:bands": [raster_band()],
        "proj:code": PROJ_CODE,
    }


def item_assets() -> dict[str, Any]:
    return {
        "data": {"type": GEOTIFF, **data_asset_fields()},
        "thumbnail": {"title": "Thumbnail", "type": PNG, "roles": ["thumbnail"]},
        "overview": {"title": "Quicklook", "type": PNG, "roles": ["overview"]},
    }


PROVIDERS: Final = (
    {
        "name": "INRAE UMR TETIS",
        "description": "Develops the S2MP soil-moisture inversion and produces the maps.",
        "roles": ["producer", "processor"],
        "url": "https://www.umr-tetis.fr",
    },
    {
        "name": "CESBIO",
        "description": "Co-develops the processing chain.",
        "roles": ["processor"],
        "url": "https://www.cesbio.cnrs.fr",
    },
    {
        "name": "CNES / Theia",
        "description": "Theia land data centre: distributes and hosts the THISME catalogue.",
        "roles": ["host", "licensor"],
        "url": "https://www.theia-land.fr",
    },
)

COLLECTION_TITLE: Final = "THISME very-high-resolution soil moisture (S2MP)"
COLLECTION_DESCRIPTION: Final = (
    "Soil-moisture maps at plot (sub-parcel) scale from the THISME catalogue (THeia and "
    "Irstea Soil MoisturE). One map every 6 days for each site and Sentinel-1 orbit, over 22 "
    "sites in France, Europe and around the Mediterranean. Soil moisture is inverted from "
    "Sentinel-1 C-band radar backscatter by a neural network, with vegetation described by "
    "Sentinel-2 NDVI (S2MP method); precision is about 6 vol.%. Maps are GeoTIFF rasters in "
    "EPSG:4326 whose values are soil moisture x 5: the `scale` of 0.2 declared in "
    "`raster:bands` gives volumetric soil moisture in %."
)
PRODUCT_PAGE: Final = "https://thisme.cines.teledetection.fr/home"
THEIA_PAGE: Final = "https://www.theia-land.fr/en/product/soil-moisture-at-very-high-resolution/"
