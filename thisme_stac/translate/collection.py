"""resto collection description + harvested extent -> STAC 1.1 Collection. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pystac

from thisme_stac.translate import constants as c

Extent = tuple[Sequence[float], tuple[str | None, str | None]]
DEFAULT_EXTENT: Extent = ([-180.0, -90.0, 180.0, 90.0], ("2016-01-01T00:00:00Z", None))


def _describe_text(describe: Mapping[str, Any] | None) -> dict[str, str]:
    """resto's ``osDescription`` (one language, or the ``en`` entry of a multilingual one)."""
    if not describe:
        return {}
    os_description = describe.get("osDescription")
    if isinstance(os_description, Mapping) and isinstance(os_description.get("en"), Mapping):
        os_description = os_description["en"]
    if not isinstance(os_description, Mapping):
        return {}
    return {str(k): str(v) for k, v in os_description.items() if isinstance(v, str)}


def build_collection(
    describe: Mapping[str, Any] | None,
    *,
    extent: Extent | None = None,
    sites: Sequence[str] = (),
    license: str = "other",
    collection_id: str = c.COLLECTION_ID,
) -> dict[str, Any]:
    """The STAC Collection of THISME maps as a dict."""
    text = _describe_text(describe)
    bbox, (start, end) = extent or DEFAULT_EXTENT
    tags = [t for t in text.get("Tags", "").split() if t]
    keywords = list(dict.fromkeys([*c.KEYWORDS, "Sentinel-2", "NDVI", *sites, *tags]))
    summaries: dict[str, Any] = {
        "constellation": ["sentinel-1"],
        "platform": ["sentinel-1a", "sentinel-1b", "sentinel-1c"],
        "instruments": ["c-sar"],
        "sar:frequency_band": ["C"],
        "sar:instrument_mode": ["IW"],
        "sar:polarizations": ["VV", "VH"],
        "sat:orbit_state": ["ascending", "descending"],
        "processing:level": ["L3"],
    }
    if sites:
        summaries["thisme:site"] = sorted(sites)
    links: list[dict[str, Any]] = [
        {"rel": "about", "href": c.PRODUCT_PAGE, "type": "text/html", "title": "THISME catalogue"},
        {
            "rel": "describedby",
            "href": c.THEIA_PAGE,
            "type": "text/html",
            "title": "Theia product page: soil moisture at very high resolution",
        },
    ]
    collection: dict[str, Any] = {
        "type": "Collection",
        "stac_version": c.STAC_VERSION,
        "stac_extensions": list(c.COLLECTION_EXTENSIONS),
        "id": collection_id,
        "title": text.get("LongName") or c.COLLECTION_TITLE,
        "description": c.COLLECTION_DESCRIPTION,
        "keywords": keywords,
        "license": license,
        "providers": [dict(p) for p in c.PROVIDERS],
        "extent": {
            "spatial": {"bbox": [list(bbox)]},
            "temporal": {"interval": [[start, end]]},
        },
        "summaries": summaries,
        "item_assets": c.item_assets(),
        "links": links,
    }
    if text.get("Attribution"):
        collection["attribution"] = text["Attribution"]
    return collection


def build_pystac_collection(describe: Mapping[str, Any] | None, **kwargs: Any) -> pystac.Collection:
    """``build_collection`` as a ``pystac.Collection``."""
    return pystac.Collection.from_dict(build_collection(describe, **kwargs), preserve_dict=False)
