"""resto features -> STAC: golden files, validation, mapping rules, malformed input."""

from __future__ import annotations

import copy
import importlib.util
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thisme_stac.errors import TranslationError
from thisme_stac.translate.collection import build_collection
from thisme_stac.translate.item import (
    feature_to_item,
    feature_to_item_dict,
    format_datetime,
    multihash,
)
from thisme_stac.validate import ValidationError, validate, validation_errors

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = ROOT / "tests" / "expected"
RESTO = ROOT / "tests" / "data" / "resto"


def _regen() -> Any:
    spec = importlib.util.spec_from_file_location("regen", ROOT / "scripts/regenerate_examples.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REGEN = _regen()
OUTPUTS = REGEN.expected_outputs()


def _feature(path: str, index: int | None = None) -> dict[str, Any]:
    return copy.deepcopy(REGEN.load_feature(path, index))


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_golden_files(name: str) -> None:
    expected = json.loads((EXPECTED / f"{name}.json").read_text(encoding="utf-8"))
    assert OUTPUTS[name] == expected, f"run `make examples` and review the diff of {name}"


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_every_output_validates(name: str) -> None:
    assert validation_errors(OUTPUTS[name]) == []


def test_examples_are_the_golden_item_and_collection() -> None:
    item = json.loads((ROOT / "examples/item.json").read_text(encoding="utf-8"))
    collection = json.loads((ROOT / "examples/collection.json").read_text(encoding="utf-8"))
    assert item == OUTPUTS["resto5_feature_803d03a9"]
    assert collection == OUTPUTS["collection_SoilMoisture"]


def test_resto5_mapping_rules() -> None:
    feature = _feature("resto5-captured/feature_803d03a9.json")
    item = feature_to_item_dict(feature)
    props = item["properties"]
    assert item["id"] == "SM_CentralItaly_20200103T170619_S1A_R117"
    assert props["thisme:resto_id"] == feature["id"]
    assert props["datetime"] == "2020-01-03T17:06:19Z"
    assert "start_datetime" not in props
    assert props["created"] == feature["properties"]["published"]
    assert props["platform"] == "sentinel-1a"
    assert props["constellation"] == "sentinel-1"
    assert props["instruments"] == ["c-sar"]
    assert props["sat:relative_orbit"] == 117
    assert props["processing:level"] == "L3"
    assert props["thisme:site"] == "Central-Italy"
    assert props["keywords"][0] == "Central-Italy"
    assert item["bbox"] == [12.2, 42.6, 12.95, 43.2]
    data = item["assets"]["data"]
    assert data["href"] == feature["properties"]["links"][0]["href"]
    assert data["type"] == "application/zip"
    assert item["assets"]["overview"]["href"] == feature["properties"]["quicklook"]
    assert any(link["rel"] == "via" for link in item["links"])


def test_simulator_style_feature_maps_orbit_and_geotiff_scale() -> None:
    feature = _feature("resto5-captured/feature_803d03a9.json")
    props = feature["properties"]
    props.update(orbitDirection="descending", relativeOrbitNumber=22, polarisation="VV VH")
    props["links"][0]["type"] = "image/tiff; application=geotiff"
    props["completionDate"] = "2020-01-03T17:07:19.000000Z"
    item = feature_to_item_dict(feature)
    out = item["properties"]
    assert out["sat:orbit_state"] == "descending"
    assert out["sat:relative_orbit"] == 22
    assert out["sar:polarizations"] == ["VV", "VH"]
    assert out["start_datetime"] == "2020-01-03T17:06:19Z"
    assert out["end_datetime"] == "2020-01-03T17:07:19Z"
    data = item["assets"]["data"]
    assert data["raster:bands"][0]["scale"] == 0.2
    assert data["raster:bands"][0]["nodata"] == 0
    assert data["bands"][0]["unit"] == "%"
    assert data["proj:code"] == "EPSG:4326"
    validate(item)
    assert feature_to_item(feature).to_dict(transform_hrefs=False)["id"] == item["id"]


def test_resto2_download_size_and_checksum() -> None:
    feature = _feature("resto2-synthetic/search_page1.json", 0)
    data = feature_to_item_dict(feature)["assets"]["data"]
    assert data["file:size"] == feature["properties"]["services"]["download"]["size"]
    md5 = feature["properties"]["services"]["download"]["checksum"].split(":")[1]
    assert data["file:checksum"] == "d510" + md5


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("md5:" + "a" * 32, "d510" + "a" * 32),
        ("sha256:" + "b" * 64, "1220" + "b" * 64),
        ("1220" + "c" * 64, "1220" + "c" * 64),
        ("md5:xyz", None),
        (None, None),
    ],
)
def test_multihash(value: str | None, expected: str | None) -> None:
    assert multihash(value) == expected


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda f: f.pop("geometry"), "missing geometry"),
        (lambda f: f["geometry"].update(type="Circle"), "unsupported geometry"),
        (lambda f: f["geometry"]["coordinates"][0].pop(), "not closed"),
        (lambda f: f["geometry"]["coordinates"][0][1].__setitem__(0, 400), "outside"),
        (lambda f: f["properties"].pop("startDate"), "missing startDate"),
        (lambda f: f["properties"].update(startDate="2020/01/03"), "invalid startDate"),
        (lambda f: f["properties"].update(completionDate="2019-01-01"), "before"),
    ],
)
def test_broken_features_raise_translation_error(mutate: Any, reason: str) -> None:
    feature = _feature("resto5-captured/feature_803d03a9.json")
    mutate(feature)
    with pytest.raises(TranslationError, match=reason):
        feature_to_item_dict(feature)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    key=st.sampled_from(
        [
            "geometry",
            "properties",
            "id",
            "startDate",
            "completionDate",
            "links",
            "description",
            "platform",
            "published",
            "services",
            "quicklook",
            "relativeOrbitNumber",
        ]
    ),
    value=json_values,
)
def test_malformed_features_only_raise_translation_error(key: str, value: Any) -> None:
    feature = _feature("resto5-captured/feature_803d03a9.json")
    if key in ("geometry", "properties", "id"):
        feature[key] = value
    else:
        feature["properties"][key] = value
    try:
        item = feature_to_item_dict(feature)
    except TranslationError:
        return
    assert item["id"]
    json.dumps(item)


def test_collection_mapping() -> None:
    collection = OUTPUTS["collection_SoilMoisture"]
    assert collection["id"] == "SoilMoisture"
    assert collection["summaries"]["thisme:site"] == ["Central-Italy", "Montpellier", "Occitanie"]
    assert {p["name"] for p in collection["providers"]} >= {"INRAE UMR TETIS", "CNES / Theia"}
    assert collection["item_assets"]["data"]["raster:bands"][0]["scale"] == 0.2
    assert collection["title"] == "Theia VHSR Soil Moisture maps (S2MP)"
    assert build_collection(None, license="CC-BY-4.0")["license"] == "CC-BY-4.0"


def test_validation_rejects_bad_objects() -> None:
    item = copy.deepcopy(OUTPUTS["resto5_feature_803d03a9"])
    item["properties"]["sat:relative_orbit"] = 0
    with pytest.raises(ValidationError, match="sat"):
        validate(item)
    item["stac_extensions"].append("https://example.invalid/unknown/v1.0.0/schema.json")
    assert any("no offline schema" in e for e in validation_errors(item))


@given(
    st.datetimes(
        min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 30), timezones=st.timezones()
    )
)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_format_datetime_is_rfc3339_utc(value: datetime) -> None:
    text = format_datetime(value)
    utc = value.astimezone(UTC)
    expected = f"{utc.year:04d}" + utc.strftime("-%m-%dT%H:%M:%S")
    if utc.microsecond:
        expected += f".{utc.microsecond:06d}"
    assert text == expected + "Z"
    assert datetime.fromisoformat(text) == utc
