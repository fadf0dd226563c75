"""Pure parts of the downloader: path sanitising and layout, multihash checks."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from thisme_stac.download.layout import asset_filename, check_layout, local_path, sanitise
from thisme_stac.download.verify import Digests, Expected, expected_for, parse_multihash, problem
from thisme_stac.errors import ConfigError

RESERVED = ["CON", "prn", "Aux", "NUL", "COM1", "com9", "LPT1", "lpt9", "COM¹", "LPT³"]


@pytest.mark.parametrize("name", RESERVED)
@pytest.mark.parametrize("suffix", ["", ".tif", ".tar.gz", " ", "."])
def test_reserved_windows_names_are_renamed(name: str, suffix: str) -> None:
    clean = sanitise(name + suffix)
    stem = clean.split(".")[0].strip()
    assert stem.upper() != name.upper()
    assert clean.startswith("_")


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("..", "_"),
        (".", "_"),
        ("", "_"),
        ("a\x00b\x1fc\x7fd", "a_b_c_d"),
        ('<>:"/\\|?*', "_________"),
        ("name. . ", "name"),
        ("  lead", "lead"),
        ("C:", "C_"),
        ("C:\\Windows", "C__Windows"),
        ("ok-name_1.tif", "ok-name_1.tif"),
        ("conference.tif", "conference.tif"),
        ("COM10", "COM10"),
    ],
)
def test_sanitise(raw: str, clean: str) -> None:
    assert sanitise(raw) == clean


def test_long_components_are_cut_with_a_hash_and_keep_their_extension() -> None:
    long_a = "a" * 300 + ".tif"
    long_b = "a" * 299 + "b.tif"
    cut_a, cut_b = sanitise(long_a), sanitise(long_b)
    assert len(cut_a.encode()) <= 120
    assert cut_a.endswith(".tif")
    assert cut_a != cut_b
    accented = "é" * 200  # two bytes each: never cut inside a character
    cut = sanitise(accented)
    assert len(cut.encode()) <= 120
    cut.encode().decode()
    assert sanitise("x" * 120) == "x" * 120


def _item(item_id: str, href: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": item_id,
        "collection": extra.pop("collection", "C"),
        "properties": {"thisme:site": extra.pop("site", "S"), **extra},
        "assets": {"data": {"href": href}},
    }


@pytest.mark.parametrize(
    "template", ["../{filename}", "/abs/{filename}", "{id}/../../{filename}", "a\\..\\{filename}"]
)
def test_hostile_templates_stay_inside(tmp_path: Path, template: str) -> None:
    item = _item("i", "http://h/f.tif")
    path = local_path(tmp_path, check_layout(template), item, "data", item["assets"]["data"])
    assert path.is_relative_to(tmp_path.resolve())


def test_values_cannot_add_levels(tmp_path: Path) -> None:
    item = _item("a/b/c", "http://h/x/y%2Fz.tif", collection="../..", site="/etc")
    path = local_path(tmp_path, "{collection}/{site}/{id}/{filename}", item, "data", {})
    assert path.relative_to(tmp_path.resolve()).parts == ("_", "_etc", "a_b_c", "a_b_c")


def test_symlink_out_of_dest_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "C").symlink_to(outside)
    item = _item("i", "http://h/f.tif")
    with pytest.raises(ConfigError, match="outside"):
        local_path(dest, "{collection}/{filename}", item, "data", item["assets"]["data"])


def test_asset_filenames() -> None:
    assert asset_filename("i", "data", {"href": "http://h/a/b.tif?x=1#f"}) == "b.tif"
    assert asset_filename("i", "data", {"href": "http://h/features/i/download"}) == "i"
    tiff = {"href": "http://h/dl", "type": "image/tiff; application=geotiff"}
    assert asset_filename("i", "data", tiff) == "i.tif"
    assert (
        asset_filename("i", "thumb", {"href": "http://h/t", "type": "image/png"}) == "i-thumb.png"
    )
    assert asset_filename("i", "data", {"href": "http://h/..%2F..%2Fevil.tif"}) == "evil.tif"


def test_other_fields_and_bad_templates(tmp_path: Path) -> None:
    item = _item("i", "http://h/f.tif", datetime="2017-03-04T00:00:00Z", platform="S1A")
    path = local_path(tmp_path, "{year}/{platform}/{asset}/{filename}", item, "data", {})
    assert path.relative_to(tmp_path.resolve()).as_posix() == "2017/S1A/data/i"
    for bad in ("{nope}/{filename}", "{id}", "{filename", "{0}/{filename}"):
        with pytest.raises(ConfigError):
            check_layout(bad)


def _multihash(code_varint: str, digest: bytes) -> str:
    return code_varint + f"{len(digest):02x}" + digest.hex()


@pytest.mark.parametrize(
    ("varint", "factory"),
    [
        ("12", hashlib.sha256),
        ("13", hashlib.sha512),
        ("14", hashlib.sha3_512),
        ("d501", hashlib.md5),
        ("a0e402", lambda: hashlib.blake2b(digest_size=32)),
    ],
)
def test_multihash_codes(varint: str, factory: Any) -> None:
    data = b"soil moisture"
    digest = factory()
    digest.update(data)
    text = _multihash(varint, digest.digest())
    expected = expected_for({"file:size": len(data), "file:checksum": text})
    assert expected.verifiable
    digests = Digests(expected)
    digests.update(data)
    assert digests.declared == digest.digest()
    assert digests.sha256 == hashlib.sha256(data).hexdigest()
    assert problem(expected, len(data), digests.declared) is None
    other = Digests(expected)
    other.update(b"soil moisturE")
    assert problem(expected, len(data), other.declared) == "checksum differs from file:checksum"


def test_sha256_is_computed_once_when_declared() -> None:
    expected = expected_for({"file:checksum": "1220" + hashlib.sha256(b"").hexdigest()})
    digests = Digests(expected)
    assert digests.extra is digests.sha
    assert digests.all == [digests.sha]


@pytest.mark.parametrize(
    "text", ["", "zz", "1220abcd", "9999" + "00" * 32, "12", "1221" + "00" * 32, "ff"]
)
def test_bad_or_unknown_multihashes_are_ignored(text: str) -> None:
    assert parse_multihash(text) is None
    assert expected_for({"file:checksum": text}) == Expected()
    assert not Expected().verifiable


def test_declared_size_alone() -> None:
    expected = expected_for({"file:size": 10, "file:checksum": 12})
    assert expected == Expected(size=10)
    assert problem(expected, 9, None) == "size 9 differs from the declared 10"
    assert expected_for({"file:size": -1}) == Expected()
    assert expected_for({"file:size": True}) == Expected()
