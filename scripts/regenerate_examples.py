"""Regenerate the golden STAC files (tests/expected/) and examples/ from the recorded resto data.

Run after a deliberate mapping change and review the diff: `make examples`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from thisme_stac.translate.collection import build_collection
from thisme_stac.translate.item import feature_to_item_dict

ROOT = Path(__file__).resolve().parent.parent
RESTO = ROOT / "tests" / "data" / "resto"
EXPECTED = ROOT / "tests" / "expected"
EXAMPLES = ROOT / "examples"

#: golden name -> (input file, feature index or None for a single feature)
CASES: dict[str, tuple[str, int | None]] = {
    "resto5_feature_803d03a9": ("resto5-captured/feature_803d03a9.json", None),
    "resto5_search_page1_0": ("resto5-captured/search_page1.json", 0),
    "resto5_search_page2_2": ("resto5-captured/search_page2.json", 2),
    "resto2_search_page1_0": ("resto2-synthetic/search_page1.json", 0),
    "resto2_search_page2_1": ("resto2-synthetic/search_page2.json", 1),
}


def load_feature(path: str, index: int | None) -> dict[str, Any]:
    data = json.loads((RESTO / path).read_text(encoding="utf-8"))
    return data if index is None else data["features"][index]


def expected_outputs() -> dict[str, dict[str, Any]]:
    """Golden name -> STAC JSON (what tests compare the translator with)."""
    outputs = {
        name: feature_to_item_dict(load_feature(path, index))
        for name, (path, index) in CASES.items()
    }
    describe = json.loads(
        (RESTO / "resto5-captured/collection_SoilMoisture.json").read_text(encoding="utf-8")
    )
    outputs["collection_SoilMoisture"] = build_collection(
        describe,
        extent=([1.05, 42.6, 12.95, 43.8], ("2020-01-03T17:06:19Z", "2020-02-02T17:05:32Z")),
        sites=["Central-Italy", "Montpellier", "Occitanie"],
        license="other",
    )
    return outputs


def dump(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main() -> None:
    outputs = expected_outputs()
    for name, data in outputs.items():
        dump(EXPECTED / f"{name}.json", data)
    dump(EXAMPLES / "item.json", outputs["resto5_feature_803d03a9"])
    dump(EXAMPLES / "collection.json", outputs["collection_SoilMoisture"])
    print(f"wrote {len(outputs)} golden files and examples/")


if __name__ == "__main__":
    main()
