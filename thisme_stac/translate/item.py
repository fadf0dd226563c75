"""resto feature (resto 5, 2 or 6+) -> STAC 1.1 Item. Pure: no I/O, no clock."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pystac

from thisme_stac.errors import TranslationError
from thisme_stac.translate import constants as c

HASHTAG_RE = re.compile(r"#([A-Za-z0-9][\w\-]*)")
REL_ORBIT_RE = re.compile(r"_R(\d{1,3})(?:_|$)")
GEOMETRY_TYPES = frozenset(
    {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon"}
)
_EXTENSIONS = list(c.ITEM_EXTENSIONS)
#: isinstance() tuples: the concrete type first, so JSON input skips the slower ABC check
_MAP = (dict, Mapping)
_SEQ = (list, tuple)
_NUM = (int, float)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _label(feature: Mapping[str, Any], props: Mapping[str, Any]) -> str:
    """How messages name a feature (cut to a readable length)."""
    label = str(props.get("productIdentifier") or feature.get("id") or "<feature without id>")
    return label if len(label) <= 80 else label[:77] + "..."


def format_datetime(value: datetime) -> str:
    """RFC 3339 in UTC with ``Z``; microseconds only when not zero."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # isoformat() pads the year to 4 digits and writes .ffffff only when it is not zero
    return value.replace(tzinfo=None).isoformat() + "Z"


def _datetime(value: Any, name: str, label: str, *, required: bool) -> datetime | None:
    if value is None or value == "":
        if required:
            raise TranslationError(f"{label}: missing {name}")
        return None
    if not isinstance(value, str):
        raise TranslationError(f"{label}: {name} is not a date-time string")
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise TranslationError(f"{label}: invalid {name} {value[:40]!r}") from None


def _check_position(pos: Any, bounds: list[float], dims: set[int], label: str) -> None:
    if not isinstance(pos, _SEQ) or (size := len(pos)) not in (2, 3):
        raise TranslationError(f"{label}: invalid position in geometry")
    lon, lat = pos[0], pos[1]
    if type(lon) not in _NUM or type(lat) not in _NUM:
        raise TranslationError(f"{label}: non-numeric coordinate in geometry")
    if size == 3:
        if type(pos[2]) not in _NUM:
            raise TranslationError(f"{label}: non-numeric coordinate in geometry")
        if not math.isfinite(pos[2]):
            raise TranslationError(f"{label}: non-finite height in geometry")
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):  # also false for NaN
        raise TranslationError(f"{label}: coordinate outside EPSG:4326 bounds")
    dims.add(size)
    if lon < bounds[0]:
        bounds[0] = lon
    if lat < bounds[1]:
        bounds[1] = lat
    if lon > bounds[2]:
        bounds[2] = lon
    if lat > bounds[3]:
        bounds[3] = lat


def _walk_positions(
    coords: Any, depth: int, bounds: list[float], dims: set[int], label: str
) -> None:
    if depth == 0:
        _check_position(coords, bounds, dims, label)
        return
    if not isinstance(coords, _SEQ) or not coords:
        raise TranslationError(f"{label}: empty or malformed geometry coordinates")
    if depth == 1:
        for pos in coords:
            _check_position(pos, bounds, dims, label)
        return
    for child in coords:
        _walk_positions(child, depth - 1, bounds, dims, label)


_DEPTH = {"Point": 0, "MultiPoint": 1, "LineString": 1, "MultiLineString": 2, "Polygon": 2}


def _geometry(geometry: Any, label: str) -> tuple[dict[str, Any], list[float]]:
    """Check a GeoJSON geometry and return it with its bbox; nothing is repaired."""
    if not isinstance(geometry, _MAP):
        raise TranslationError(f"{label}: missing geometry")
    kind = geometry.get("type")
    if kind not in GEOMETRY_TYPES:
        raise TranslationError(f"{label}: unsupported geometry type {kind!r}")
    coords: Any = geometry.get("coordinates")
    depth = _DEPTH.get(str(kind), 3)
    bounds = [math.inf, math.inf, -math.inf, -math.inf]
    dims: set[int] = set()
    _walk_positions(coords, depth, bounds, dims, label)
    if len(dims) > 1:
        raise TranslationError(f"{label}: geometry mixes 2D and 3D positions")
    if kind in ("LineString", "MultiLineString"):
        lines: list[Any] = [coords] if kind == "LineString" else list(coords)
        if any(len(line) < 2 for line in lines):
            raise TranslationError(f"{label}: a line needs two positions")
    if kind in ("Polygon", "MultiPolygon"):
        polygons: list[Any] = [coords] if kind == "Polygon" else list(coords)
        for polygon in polygons:
            for ring in polygon:
                if len(ring) < 4 or list(ring[0]) != list(ring[-1]):
                    raise TranslationError(f"{label}: polygon ring is not closed")
    return {"type": kind, "coordinates": coords}, bounds


def site_of(props: Mapping[str, Any]) -> str | None:
    """The THISME site: first non-generic hashtag of the description (or of ``hashtags``)."""
    candidates: list[str] = HASHTAG_RE.findall(str(props.get("description") or ""))
    tags = props.get("hashtags")
    if isinstance(tags, list):
        candidates += [t for t in tags if isinstance(t, str)]
    keywords = props.get("keywords")
    if isinstance(keywords, _MAP):  # resto 2: {hash: {name, type}}
        candidates += [
            str(k["name"])
            for k in keywords.values()
            if isinstance(k, _MAP) and k.get("type") == "hashtag" and k.get("name")
        ]
    for tag in candidates:
        if ":" not in tag and tag.lower() not in c.GENERIC_TAGS and tag != props.get("collection"):
            return tag
    return None


def _download(feature: Mapping[str, Any], props: Mapping[str, Any]) -> dict[str, Any] | None:
    """The product link: resto 5 links[rel=download], resto 2 services.download, resto 6 assets."""
    for link in _list(props.get("links")) + _list(feature.get("links")):
        if isinstance(link, _MAP) and link.get("rel") == "download" and link.get("href"):
            return {"href": str(link["href"]), "type": link.get("type")}
    services = props.get("services")
    if isinstance(services, _MAP) and isinstance(services.get("download"), _MAP):
        dl = services["download"]
        if dl.get("url"):
            return {
                "href": str(dl["url"]),
                "type": dl.get("mimeType"),
                "size": dl.get("size"),
                "checksum": dl.get("checksum"),
            }
    assets = feature.get("assets")
    if isinstance(assets, _MAP):
        for key in ("download", "data"):
            asset = assets.get(key)
            if isinstance(asset, _MAP) and asset.get("href"):
                return {
                    "href": str(asset["href"]),
                    "type": asset.get("type"),
                    "size": asset.get("file:size"),
                    "checksum": asset.get("file:checksum"),
                }
    return None


_MULTIHASH = {"md5": "d510", "sha1": "1114", "sha256": "1220", "sha512": "1340"}
_HEX_LEN = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128}


def multihash(checksum: Any) -> str | None:
    """``md5:<hex>`` / ``sha256:<hex>`` / an existing multihash -> multihash hex, else None."""
    if not isinstance(checksum, str) or not checksum:
        return None
    algo, sep, digest = checksum.partition(":")
    if not sep:
        value = checksum.lower()
        if re.fullmatch(
            r"(d510[0-9a-f]{32}|1220[0-9a-f]{64}|1114[0-9a-f]{40}|1340[0-9a-f]{128})", value
        ):
            return value
        algo, digest = {32: "md5", 64: "sha256"}.get(len(value), ""), value
    algo, digest = algo.lower().replace("-", ""), digest.lower()
    if algo in _MULTIHASH and re.fullmatch(rf"[0-9a-f]{{{_HEX_LEN[algo]}}}", digest):
        return _MULTIHASH[algo] + digest
    return None


def _media_type(value: Any, href: str) -> str:
    text = str(value or "").lower()
    lowered = href.lower().split("?")[0]
    if "tiff" in text or lowered.endswith((".tif", ".tiff")):
        return c.GEOTIFF
    if "zip" in text or lowered.endswith(".zip"):
        return c.ZIP
    return str(value) if value else c.GEOTIFF


def _image_type(href: str) -> str:
    return c.JPEG if href.lower().split("?")[0].endswith((".jpg", ".jpeg")) else c.PNG


def _image_asset(href: str, title: str, role: str) -> dict[str, Any]:
    return {"href": href, "type": _image_type(href), "title": title, "roles": [role]}


def _assets(feature: Mapping[str, Any], props: Mapping[str, Any]) -> dict[str, Any]:
    assets: dict[str, Any] = {}
    download = _download(feature, props)
    if download is not None:
        href = download["href"]
        media = _media_type(download.get("type"), href)
        data: dict[str, Any] = {"href": href, "type": media, "title": "Soil moisture map"}
        if media == c.GEOTIFF:
            data.update(c.data_asset_fields())
        else:
            data["roles"] = ["data"]
        size = download.get("size")
        if isinstance(size, int) and not isinstance(size, bool) and size > 0:
            data["file:size"] = size
        if (digest := multihash(download.get("checksum"))) is not None:
            data["file:checksum"] = digest
        assets["data"] = data
    thumbnail = props.get("thumbnail")
    quicklook = props.get("quicklook")
    if isinstance(thumbnail, str) and thumbnail:
        assets["thumbnail"] = _image_asset(thumbnail, "Thumbnail", "thumbnail")
    if isinstance(quicklook, str) and quicklook:
        assets["overview"] = _image_asset(quicklook, "Quicklook", "overview")
        # resto features often carry only a quicklook: it doubles as the thumbnail
        assets.setdefault("thumbnail", _image_asset(quicklook, "Thumbnail", "thumbnail"))
    return assets


def _links(feature: Mapping[str, Any], props: Mapping[str, Any]) -> list[dict[str, Any]]:
    # relative to a static layout <collection>/<item id>/<item id>.json; servers rewrite links
    links: list[dict[str, Any]] = [
        {"rel": "collection", "href": "../collection.json", "type": c.JSON}
    ]
    for link in _list(props.get("links")):
        if not isinstance(link, _MAP) or not link.get("href"):
            continue
        rel = link.get("rel")
        if rel == "self":
            links.append(
                {"rel": "via", "href": str(link["href"]), "type": c.JSON, "title": "resto metadata"}
            )
        elif rel == "license":
            links.append(
                {
                    "rel": "license",
                    "href": str(link["href"]),
                    "title": str(link.get("id") or "license"),
                }
            )
    return links


def _sar_sat(props: Mapping[str, Any], pid: str, out: dict[str, Any]) -> None:
    mode = props.get("sensorMode")
    out["sar:instrument_mode"] = str(mode) if mode else "IW"
    out["sar:frequency_band"] = "C"
    out["sar:center_frequency"] = 5.405
    out["sar:product_type"] = "GRD"  # the Sentinel-1 product the maps are inverted from
    pol = props.get("polarisation") or props.get("polarization")
    polarizations = [p for p in re.split(r"[\s,+/]+", str(pol).upper()) if p] if pol else []
    out["sar:polarizations"] = [p for p in polarizations if p in {"HH", "VV", "HV", "VH"}] or ["VV"]
    state = c.ORBIT_STATES.get(str(props.get("orbitDirection") or "").lower())
    if state:
        out["sat:orbit_state"] = state
    rel = props.get("relativeOrbitNumber")
    if not (isinstance(rel, int) and not isinstance(rel, bool)):
        match = REL_ORBIT_RE.search(pid)
        rel = int(match.group(1)) if match else None
    if rel is not None and rel > 0:
        out["sat:relative_orbit"] = rel


def feature_to_item_dict(
    feature: Mapping[str, Any], *, collection_id: str = c.COLLECTION_ID
) -> dict[str, Any]:
    """Translate one resto feature into a STAC Item dict (fast path, no pystac objects)."""
    if not isinstance(feature, _MAP):
        raise TranslationError("feature is not a JSON object")
    props = feature.get("properties")
    if not isinstance(props, _MAP):
        props = {}
    label = _label(feature, props)
    pid = props.get("productIdentifier") or feature.get("id")
    if not isinstance(pid, str) or not pid.strip() or len(pid) > 512:
        raise TranslationError(f"{label}: missing productIdentifier and id")
    geometry, bbox = _geometry(feature.get("geometry"), label)
    start_raw = props.get("startDate") or props.get("start_datetime") or props.get("datetime")
    end_raw = props.get("completionDate") or props.get("end_datetime")
    start = _datetime(start_raw, "startDate", label, required=True)
    # resto repeats startDate as completionDate (and published as updated): parse once
    same = end_raw is not None and end_raw == start_raw
    end = start if same else _datetime(end_raw, "completionDate", label, required=False)
    assert start is not None
    if end is not None and end < start:
        raise TranslationError(f"{label}: completionDate is before startDate")

    out: dict[str, Any] = {"datetime": format_datetime(start)}
    if end is not None and end != start:
        out["start_datetime"] = out["datetime"]
        out["end_datetime"] = format_datetime(end)
    formatted: dict[str, str] = {}
    for source, target in (("published", "created"), ("updated", "updated")):
        raw = props.get(source)
        if isinstance(raw, str) and raw in formatted:
            out[target] = formatted[raw]
            continue
        value = _datetime(raw, source, label, required=False)
        if value is not None:
            out[target] = formatted[str(raw)] = format_datetime(value)
    title = props.get("title")
    out["title"] = str(title) if title else pid
    description = props.get("description")
    if description:
        out["description"] = " ".join(str(description).split())
    platform = str(props.get("platform") or "")
    if platform:
        out["platform"] = c.PLATFORMS.get(platform.upper(), platform.lower())
    out["constellation"] = "sentinel-1"
    instrument = str(props.get("instrument") or "SAR-C")
    out["instruments"] = [c.INSTRUMENTS.get(instrument.upper(), instrument.lower())]
    _sar_sat(props, pid, out)
    out["processing:level"] = str(props.get("processingLevel") or "L3")
    out["processing:lineage"] = c.PROCESSING_LINEAGE
    if props.get("productType"):
        out["thisme:product_type"] = str(props["productType"])
    resolution = props.get("resolution")
    if isinstance(resolution, _NUM) and not isinstance(resolution, bool) and resolution > 0:
        out["gsd"] = float(resolution)
    site = site_of(props)
    if site:
        out["thisme:site"] = site
    out["keywords"] = ([site] if site else []) + list(c.KEYWORDS)
    resto_id = feature.get("id")
    if isinstance(resto_id, str) and resto_id and resto_id != pid:
        out["thisme:resto_id"] = resto_id

    return {
        "type": "Feature",
        "stac_version": c.STAC_VERSION,
        "stac_extensions": list(_EXTENSIONS),
        "id": pid,
        "geometry": geometry,
        "bbox": bbox,
        "properties": out,
        "links": _links(feature, props),
        "assets": _assets(feature, props),
        "collection": collection_id,
    }


def feature_to_item(
    feature: Mapping[str, Any], *, collection_id: str = c.COLLECTION_ID
) -> pystac.Item:
    """Translate one resto feature into a ``pystac.Item``."""
    return pystac.Item.from_dict(
        feature_to_item_dict(feature, collection_id=collection_id), preserve_dict=False
    )
