"""THISME address-bar queries: the seed byte for byte, URLs, encodings, errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thisme_stac.errors import QueryError
from thisme_stac.resto.query import normalise_argv, parse_urlq

SEED = "q=%23Central-Italy&collection=SoilMoisture"
BASE = "http://127.0.0.1:5252"


def test_seed_is_byte_for_byte() -> None:
    query = parse_urlq(SEED)
    assert query.collection == "SoilMoisture"
    assert query.get("q") == "#Central-Italy"
    assert query.search_url(BASE, limit=500) == (
        f"{BASE}/collections/SoilMoisture/features?q=%23Central-Italy&limit=500"
    )


@pytest.mark.parametrize(
    "text",
    [
        "?" + SEED,
        "  " + SEED + "\n",
        "q=#Central-Italy&collection=SoilMoisture",
        "https://thisme.cines.teledetection.fr/search?" + SEED + "&view=map",
        "https://thisme.cines.teledetection.fr/search?q=#Central-Italy&collection=SoilMoisture",
        "https://thisme.cines.teledetection.fr/#/search?" + SEED,
        "/collections/SoilMoisture/features?q=%23Central-Italy",
        "collection=SoilMoisture&q=%23Central-Italy&_pretty=1&page=3",
    ],
)
def test_variants_give_the_seed_query(text: str) -> None:
    query = parse_urlq(text)
    assert query.search_url(BASE, limit=500) == parse_urlq(SEED).search_url(BASE, limit=500)


def test_spaces_and_other_parameters() -> None:
    query = parse_urlq("q=%23Central-Italy+-%23Occitanie&startDate=2020-01-01&collection=S1")
    assert query.get("q") == "#Central-Italy -#Occitanie"
    assert query.hashtags() == ["Central-Italy"]
    url = query.search_url(BASE, limit=10, extra={"updated": "2020-01-01T00:00:00.000001Z"})
    assert url.startswith(f"{BASE}/collections/S1/features?q=%23Central-Italy")
    assert "startDate=2020-01-01" in url
    assert url.endswith("&updated=2020-01-01T00%3A00%3A00.000001Z&limit=10") or url.endswith(
        "&updated=2020-01-01T00:00:00.000001Z&limit=10"
    )
    assert parse_urlq("q=%23A").search_url(BASE) == f"{BASE}/features?q=%23A"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("%zz&&", "stray"),
        ("q", "expected key=value"),
        ("collection=../../etc", "invalid collection"),
        ("view=map", "selects nothing"),
    ],
)
def test_bad_queries(text: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse_urlq(text)


def test_key_is_stable_and_distinguishes_queries() -> None:
    assert parse_urlq(SEED).key() == parse_urlq("?" + SEED).key()
    assert parse_urlq(SEED).key() != parse_urlq("collection=SoilMoisture").key()


def test_single_dash_urlq_option() -> None:
    assert normalise_argv(["download", "-urlq", SEED]) == ["download", "--urlq", SEED]
    assert normalise_argv(["-urlq=" + SEED]) == ["--urlq=" + SEED]


tags = st.text(
    alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd")), min_size=1, max_size=12
)


@given(site=tags, other=tags)
def test_round_trip(site: str, other: str) -> None:
    query = parse_urlq(f"q=%23{site}+-%23{other}&collection=SoilMoisture")
    again = parse_urlq(query.search_url(BASE))
    assert again.get("q") == query.get("q") == f"#{site} -#{other}"
    assert again.collection == "SoilMoisture"
