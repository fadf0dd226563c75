"""Exports (stac-geoparquet, ndjson, static catalogue) and imports back into a store."""

from __future__ import annotations

import copy
import gzip
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pystac
import pytest
import typer
from typer.testing import CliRunner

from tests.apiserver import build_store
from thisme_stac.errors import ConfigError, StoreError, ThismeError
from thisme_stac.export import (
    FORMATS,
    check_format,
    detect_format,
    export_store,
    import_items,
)
from thisme_stac.export.command import export, import_
from thisme_stac.export.static import safe_name
from thisme_stac.store.sqlite import SQLiteStore
from thisme_stac.validate import validation_errors

OUT_NAMES = {"geoparquet": "items.parquet", "ndjson": "items.ndjson", "static": "catalogue"}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of the simulator's SoilMoisture collection, every 20th map (~1,000 items)."""
    path = tmp_path_factory.mktemp("source") / "source.db"
    build_store(path, step=20)
    return path


@pytest.fixture
def store(source: Path) -> Iterator[SQLiteStore]:
    db = SQLiteStore(source, create=False)
    yield db
    db.close()


@pytest.fixture(scope="module")
def exports(source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One export of the source store in each format."""
    folder = tmp_path_factory.mktemp("exports")
    db = SQLiteStore(source, create=False)
    try:
        return {f: Path(export_store(db, f, folder / OUT_NAMES[f]).path) for f in FORMATS}
    finally:
        db.close()


def _items(db: SQLiteStore) -> list[dict[str, Any]]:
    return list(db.iter_items())


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_gives_identical_items(
    fmt: str, store: SQLiteStore, exports: dict[str, Path], tmp_path: Path
) -> None:
    fresh = SQLiteStore(tmp_path / "fresh.db")
    try:
        report = import_items(exports[fmt], fresh)
        assert report.format == fmt
        assert report.items == store.count_items() > 900
        assert report.new == report.items
        assert report.collections == 1
        assert _items(fresh) == _items(store)
        assert fresh.list_collections() == store.list_collections()
        # idempotent: a second import changes nothing
        again = import_items(exports[fmt], fresh)
        assert (again.new, again.updated, again.unchanged) == (0, 0, report.items)
        assert fresh.count_items() == report.items
    finally:
        fresh.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_import_into_the_source_changes_nothing(
    fmt: str, store: SQLiteStore, exports: dict[str, Path]
) -> None:
    """Byte-identical JSON: the store sees every imported item as unchanged."""
    report = import_items(exports[fmt], store)
    assert report.unchanged == report.items == store.count_items()


def test_ndjson_layout(exports: dict[str, Path], store: SQLiteStore) -> None:
    path = exports["ndjson"]
    lines = path.read_bytes().splitlines()
    assert len(lines) == store.count_items()
    assert orjson.loads(lines[0]) == next(iter(store.iter_items()))
    sidecar = orjson.loads((path.parent / "items.collections.json").read_bytes())
    assert [c["id"] for c in sidecar["collections"]] == ["SoilMoisture"]


def test_ndjson_gzip_round_trip(store: SQLiteStore, tmp_path: Path) -> None:
    out = tmp_path / "items.ndjson.gz"
    report = export_store(store, "ndjson", out)
    assert report.files == [str(out), str(tmp_path / "items.collections.json")]
    assert len(gzip.decompress(out.read_bytes()).splitlines()) == report.items
    fresh = SQLiteStore(tmp_path / "fresh.db")
    try:
        import_items(out, fresh)
        assert _items(fresh) == _items(store)
    finally:
        fresh.close()


def test_export_one_collection(store: SQLiteStore, tmp_path: Path) -> None:
    report = export_store(store, "ndjson", tmp_path / "x.ndjson", collection="SoilMoisture")
    assert report.items == store.count_items("SoilMoisture")
    with pytest.raises(ConfigError, match="no collection 'Nope' in the store"):
        export_store(store, "ndjson", tmp_path / "y.ndjson", collection="Nope")
    assert not (tmp_path / "y.ndjson").exists()


# --- geoparquet ----------------------------------------------------------------------------------


def test_geoparquet_read_by_duckdb(exports: dict[str, Path], store: SQLiteStore) -> None:
    import duckdb  # a dev extra: missing is a failure, not a skip

    path = str(exports["geoparquet"])
    first = next(iter(store.iter_items()))
    with duckdb.connect() as con:
        # the README form: the file name as a table (a fixed test path, nothing from users)
        count = con.execute(f"SELECT count(*) FROM '{path}'").fetchone()[0]  # noqa: S608
        assert count == store.count_items()
        site, orbit, platform = con.execute(
            'SELECT "thisme:site", "sat:relative_orbit", platform FROM read_parquet(?) '
            "WHERE id = ?",
            [path, first["id"]],
        ).fetchone()
        assert site == first["properties"]["thisme:site"]
        assert orbit == first["properties"]["sat:relative_orbit"]
        assert platform == first["properties"]["platform"]
        sites = con.execute(
            'SELECT count(DISTINCT "thisme:site") FROM read_parquet(?) '
            "WHERE datetime >= TIMESTAMP '2020-01-01' AND bbox.xmin > 0",
            [path],
        ).fetchone()[0]
        assert sites > 1


def test_geoparquet_read_by_geopandas(exports: dict[str, Path], store: SQLiteStore) -> None:
    geopandas = pytest.importorskip("geopandas")
    frame = geopandas.read_parquet(exports["geoparquet"])
    assert len(frame) == store.count_items()
    assert frame.crs.to_epsg() == 4326
    first = next(iter(store.iter_items()))
    row = frame.set_index("id").loc[first["id"]]
    assert row.geometry.bounds == tuple(first["bbox"])


def test_geoparquet_carries_collections_and_row_groups(store: SQLiteStore, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "small-batches.parquet"
    report = export_store(store, "geoparquet", out, batch_size=200)
    meta = pq.ParquetFile(out)
    assert meta.metadata.num_rows == report.items
    assert meta.metadata.num_row_groups == -(-report.items // 200)  # written batch by batch
    stac = orjson.loads(meta.schema_arrow.metadata[b"stac-geoparquet"])
    assert list(stac["collections"]) == ["SoilMoisture"]
    assert b"geo" in meta.schema_arrow.metadata


def test_geoparquet_with_uneven_fields(store: SQLiteStore, tmp_path: Path) -> None:
    """Fields present in some items only (and late in the stream) survive the round trip."""
    items = _items(store)[:50]
    odd = copy.deepcopy(items[-1])
    odd["id"] = "late-extra-fields"
    odd["properties"]["thisme:note"] = "only here"
    odd["properties"]["end_datetime"] = "2030-01-01T00:00:00.250000Z"
    odd["properties"]["start_datetime"] = odd["properties"]["datetime"]
    odd["assets"]["extra"] = {"href": "https://example.org/x.tif", "roles": ["metadata"]}
    del odd["properties"]["title"]
    src = SQLiteStore(tmp_path / "src.db")
    dst = SQLiteStore(tmp_path / "dst.db")
    try:
        src.upsert_collection(store.get_collection("SoilMoisture") or {})
        src.upsert_items([*items, odd])
        export_store(src, "geoparquet", tmp_path / "x.parquet", batch_size=7)
        import_items(tmp_path / "x.parquet", dst)
        assert _items(dst) == _items(src)
    finally:
        src.close()
        dst.close()


# --- static catalogue ----------------------------------------------------------------------------


def test_static_catalogue_validates(exports: dict[str, Path], store: SQLiteStore) -> None:
    root = exports["static"]
    catalog = orjson.loads((root / "catalog.json").read_bytes())
    collection = orjson.loads((root / "SoilMoisture" / "collection.json").read_bytes())
    assert validation_errors(catalog) == []
    assert validation_errors(collection) == []
    item_files = sorted(root.glob("SoilMoisture/*/*.json"))
    assert len(item_files) == store.count_items()
    for file in item_files[::20]:  # a sample: schema validation takes ~20 ms per item
        assert validation_errors(orjson.loads(file.read_bytes())) == [], file


def test_static_links_are_relative_and_assets_unchanged(
    exports: dict[str, Path], store: SQLiteStore
) -> None:
    root = exports["static"]
    first = next(iter(store.iter_items()))
    item = orjson.loads((root / "SoilMoisture" / first["id"] / f"{first['id']}.json").read_bytes())
    assert item["assets"] == first["assets"]
    assert item["assets"]["data"]["href"].startswith("http://")
    rels = {link["rel"]: link["href"] for link in item["links"]}
    assert rels["root"] == "../../catalog.json"
    assert rels["parent"] == rels["collection"] == "../collection.json"
    assert "self" not in rels
    collection = orjson.loads((root / "SoilMoisture" / "collection.json").read_bytes())
    item_links = [link for link in collection["links"] if link["rel"] == "item"]
    assert len(item_links) == store.count_items()
    for doc in (collection, orjson.loads((root / "catalog.json").read_bytes())):
        for link in doc["links"]:
            if link["rel"] in {"root", "parent", "child", "item", "self"}:
                assert "://" not in link["href"]
                assert not link["href"].startswith("/")


def test_static_catalogue_read_by_pystac(exports: dict[str, Path], store: SQLiteStore) -> None:
    catalog = pystac.Catalog.from_file(str(exports["static"] / "catalog.json"))
    items = list(catalog.get_items(recursive=True))
    assert len(items) == store.count_items()
    collection = catalog.get_child("SoilMoisture")
    assert isinstance(collection, pystac.Collection)
    first = next(iter(store.iter_items()))
    item = collection.get_item(first["id"])
    assert item is not None
    assert item.assets["data"].href == first["assets"]["data"]["href"]
    assert item.get_collection() is not None
    assert item.get_collection().id == "SoilMoisture"  # type: ignore[union-attr]


def test_static_odd_ids_and_empty_collection(store: SQLiteStore, tmp_path: Path) -> None:
    items = copy.deepcopy(_items(store)[:3])
    for item, new_id in zip(items, ["a/b c", "../up", ".hidden"], strict=True):
        item["id"] = new_id
    collection = store.get_collection("SoilMoisture") or {}
    empty = {**copy.deepcopy(collection), "id": "Empty", "title": "No items yet"}
    src = SQLiteStore(tmp_path / "src.db")
    dst = SQLiteStore(tmp_path / "dst.db")
    try:
        src.upsert_collection(collection)
        src.upsert_collection(empty)
        src.upsert_items(items)
        export_store(src, "static", tmp_path / "cat")
        names = sorted(p.name for p in (tmp_path / "cat" / "SoilMoisture").iterdir())
        assert all("/" not in n and not n.startswith(".") for n in names)
        assert (tmp_path / "cat" / "Empty" / "collection.json").is_file()
        report = import_items(tmp_path / "cat", dst)
        assert report.collections == 2
        assert _items(dst) == _items(src)
        catalog = pystac.Catalog.from_file(str(tmp_path / "cat" / "catalog.json"))
        assert {i.id for i in catalog.get_items(recursive=True)} == {"a/b c", "../up", ".hidden"}
    finally:
        src.close()
        dst.close()


def test_import_a_catalogue_saved_by_pystac(store: SQLiteStore, tmp_path: Path) -> None:
    """Static catalogues from other tools import too (pystac's own layout and links)."""
    originals = _items(store)[:5]
    collection = pystac.Collection.from_dict(copy.deepcopy(store.get_collection("SoilMoisture")))
    collection.clear_links()
    for item in originals:
        pystac_item = pystac.Item.from_dict(copy.deepcopy(item))
        pystac_item.clear_links()
        collection.add_item(pystac_item)
    catalog = pystac.Catalog("elsewhere", "made by pystac")
    catalog.add_child(collection)
    catalog.normalize_hrefs(str(tmp_path / "pystac-cat"))
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    fresh = SQLiteStore(tmp_path / "fresh.db")
    try:
        report = import_items(tmp_path / "pystac-cat", fresh)
        assert (report.collections, report.items) == (1, 5)
        back = _items(fresh)
        assert [i["id"] for i in back] == [i["id"] for i in originals]
        assert [i["assets"] for i in back] == [i["assets"] for i in originals]
        assert [i["properties"] for i in back] == [i["properties"] for i in originals]
    finally:
        fresh.close()


def test_import_geoparquet_written_by_stac_geoparquet(store: SQLiteStore, tmp_path: Path) -> None:
    sga = pytest.importorskip("stac_geoparquet.arrow")
    originals = _items(store)[:20]
    path = tmp_path / "theirs.parquet"
    sga.to_parquet(sga.parse_stac_items_to_arrow(copy.deepcopy(originals)), path)
    fresh = SQLiteStore(tmp_path / "fresh.db")
    try:
        report = import_items(path, fresh)
        assert (report.collections, report.items) == (0, 20)
        assert sorted(_items(fresh), key=lambda i: i["id"]) == sorted(
            originals, key=lambda i: i["id"]
        )
    finally:
        fresh.close()


def test_safe_name() -> None:
    assert safe_name("SM_Alsace_20160102T172517_S1A_R088") == "SM_Alsace_20160102T172517_S1A_R088"
    assert safe_name("a/b") != safe_name("a_b")
    assert "/" not in safe_name("a/b")
    assert safe_name("..").startswith("id-")


# --- errors and atomicity ------------------------------------------------------------------------


def test_unknown_format(store: SQLiteStore, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown format 'csv': choose one of geoparquet"):
        export_store(store, "csv", tmp_path / "x.csv")
    with pytest.raises(ConfigError, match="unknown format"):
        import_items(tmp_path, store, format="shapefile")
    assert check_format("GeoParquet") == "geoparquet"
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("fmt", FORMATS)
def test_existing_output_needs_overwrite(fmt: str, store: SQLiteStore, tmp_path: Path) -> None:
    out = tmp_path / OUT_NAMES[fmt]
    if fmt == "static":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    else:
        out.write_text("mine")
    with pytest.raises(ConfigError, match=r"exists and is not empty .*--overwrite"):
        export_store(store, fmt, out)
    assert (out / "keep.txt" if fmt == "static" else out).read_text() == "mine"
    report = export_store(store, fmt, out, overwrite=True)
    assert report.items == store.count_items()
    assert not (out / "keep.txt").exists() if fmt == "static" else out.stat().st_size > 4
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_existing_output_is_reused(fmt: str, store: SQLiteStore, tmp_path: Path) -> None:
    out = tmp_path / OUT_NAMES[fmt]
    out.mkdir() if fmt == "static" else out.touch()
    assert export_store(store, fmt, out).items == store.count_items()


def test_wrong_kind_of_output(store: SQLiteStore, source: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not a directory"):
        export_store(store, "static", tmp_path / "file")
    with pytest.raises(ConfigError, match="is a directory"):
        export_store(store, "ndjson", tmp_path)
    with pytest.raises(ConfigError, match="is the store itself"):
        export_store(store, "geoparquet", source, overwrite=True)
    with pytest.raises(ConfigError, match="only ndjson can be written to stdout"):
        export_store(store, "static", "-")


class FailingStore:
    """A store whose item stream breaks after ``fail_after`` items (a disk or database error)."""

    def __init__(self, inner: SQLiteStore, fail_after: int) -> None:
        self.inner = inner
        self.url = "failing"
        self.fail_after = fail_after

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def iter_items(self, collection_id: str | None = None) -> Iterator[dict[str, Any]]:
        for n, item in enumerate(self.inner.iter_items(collection_id)):
            if n == self.fail_after:
                raise StoreError("disk I/O error")
            yield item


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("existing", [False, True])
def test_failed_export_leaves_nothing(
    fmt: str, existing: bool, store: SQLiteStore, tmp_path: Path
) -> None:
    out = tmp_path / OUT_NAMES[fmt]
    if existing:
        export_store(store, fmt, out)
        before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    with pytest.raises(StoreError, match="disk I/O error"):
        export_store(FailingStore(store, 500), fmt, out, overwrite=True, batch_size=100)  # type: ignore[arg-type]
    assert _leftovers(tmp_path) == []
    if existing:  # the previous export is untouched
        assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
    else:
        assert list(tmp_path.iterdir()) == []


def test_import_errors(store: SQLiteStore, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file or folder"):
        import_items(tmp_path / "missing.ndjson", store)
    bad = tmp_path / "bad.ndjson"
    item = next(iter(store.iter_items()))
    bad.write_bytes(orjson.dumps(item) + b"\n{not json\n")
    with pytest.raises(ConfigError, match=r"bad.ndjson, line 2: not JSON"):
        import_items(bad, store)
    not_item = tmp_path / "list.ndjson"
    not_item.write_text('{"type": "Catalog"}\n')
    with pytest.raises(ConfigError, match="line 1: not a STAC Item"):
        import_items(not_item, store)
    fake = tmp_path / "fake.parquet"
    fake.write_text("not parquet")
    with pytest.raises(ConfigError, match="is not a Parquet file"):
        import_items(fake, store)
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(ConfigError, match=r"holds no catalog\.json"):
        import_items(tmp_path / "empty-dir", store)
    (tmp_path / "odd.bin").write_bytes(b"\x00\x01")
    with pytest.raises(ConfigError, match="cannot tell the format"):
        import_items(tmp_path / "odd.bin", store)


def test_import_static_with_broken_link(exports: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    copy_root = tmp_path / "cat"
    shutil.copytree(exports["static"], copy_root)
    victim = next((copy_root / "SoilMoisture").glob("*/*.json"))
    victim.unlink()
    fresh = SQLiteStore(tmp_path / "fresh.db")
    try:
        with pytest.raises(ConfigError, match="broken link in the catalogue"):
            import_items(copy_root, fresh)
    finally:
        fresh.close()


def test_invalid_items_are_refused_by_the_store(store: SQLiteStore, tmp_path: Path) -> None:
    path = tmp_path / "no-geometry.ndjson"
    item = next(iter(store.iter_items()))
    path.write_bytes(orjson.dumps({**item, "id": "x", "geometry": None}) + b"\n")
    with pytest.raises(StoreError, match="has no geometry"):
        import_items(path, store)


def test_detect_format(exports: dict[str, Path], tmp_path: Path) -> None:
    for fmt, path in exports.items():
        assert detect_format(path) == fmt
    renamed = tmp_path / "export.bin"
    renamed.write_bytes(exports["geoparquet"].read_bytes())
    assert detect_format(renamed) == "geoparquet"
    assert detect_format(exports["static"] / "catalog.json") == "static"
    assert detect_format(exports["static"] / "SoilMoisture" / "collection.json") == "static"
    compact = tmp_path / "catalog.json"
    compact.write_bytes(
        orjson.dumps(orjson.loads((exports["static"] / "catalog.json").read_bytes()))
    )
    assert detect_format(compact) == "static"
    lines = tmp_path / "items.json"
    lines.write_bytes(exports["ndjson"].read_bytes())
    assert detect_format(lines) == "ndjson"


def test_geoparquet_needs_items(tmp_path: Path) -> None:
    empty = SQLiteStore(tmp_path / "empty.db")
    try:
        with pytest.raises(ConfigError, match="nothing to export"):
            export_store(empty, "geoparquet", tmp_path / "x.parquet")
        assert not (tmp_path / "x.parquet").exists()
        assert export_store(empty, "ndjson", tmp_path / "x.ndjson").items == 0
    finally:
        empty.close()


# --- memory --------------------------------------------------------------------------------------


class GeneratedStore:
    """``count`` distinct items made on the fly from one template: nothing held in memory."""

    def __init__(self, template: dict[str, Any], collection: dict[str, Any], count: int) -> None:
        self.template = template
        self.collection = collection
        self.count = count
        self.url = "generated"

    def list_collections(self) -> list[dict[str, Any]]:
        return [self.collection]

    def get_collection(self, collection_id: str) -> dict[str, Any] | None:
        return self.collection if collection_id == self.collection["id"] else None

    def iter_items(self, collection_id: str | None = None) -> Iterator[dict[str, Any]]:
        for n in range(self.count):
            item = copy.deepcopy(self.template)
            item["id"] = f"{self.template['id']}-{n:07d}"
            item["properties"]["thisme:resto_id"] = f"{n:032x}"
            yield item


def _peak(fmt: str, db: GeneratedStore, out: Path) -> int:
    tracemalloc.start()
    try:
        export_store(db, fmt, out, batch_size=250)  # type: ignore[arg-type]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("fmt", FORMATS)
def test_memory_does_not_grow_with_items(fmt: str, store: SQLiteStore, tmp_path: Path) -> None:
    """Python memory of an export is the same for 500 and 2,500 items (batches of 250).

    Holding the 2,000 extra items, even as compact JSON bytes, would take over 5 MB.
    """
    template = next(iter(store.iter_items()))
    collection = store.get_collection("SoilMoisture") or {}
    _peak(fmt, GeneratedStore(template, collection, 50), tmp_path / f"warm-{fmt}")  # imports
    small = _peak(fmt, GeneratedStore(template, collection, 500), tmp_path / f"s-{fmt}")
    large = _peak(fmt, GeneratedStore(template, collection, 2500), tmp_path / f"l-{fmt}")
    assert large < small + 1_000_000, (small, large)


# --- command line --------------------------------------------------------------------------------


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("export")(export)
    app.command("import")(import_)
    return app


def test_cli_export_and_import(source: Path, store: SQLiteStore, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "items.parquet"
    result = runner.invoke(_cli(), ["export", "--store", str(source), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["format"] == "geoparquet"  # guessed from the name
    target = tmp_path / "target.db"
    result = runner.invoke(_cli(), ["import", str(out), "--store", str(target), "--json"])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["new"] == store.count_items()
    result = runner.invoke(_cli(), ["export", "--store", str(source), "-f", "ndjson", "-o", "-"])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == store.count_items()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "--out", "x.csv"], "give --format"),
        (["export", "--out", "x", "--format", "zip"], "unknown format 'zip'"),
        (["export", "--out", "-", "-f", "ndjson", "--json"], "both write to stdout"),
        (["import", "missing.parquet"], "no such file or folder"),
    ],
)
def test_cli_errors_are_one_line(
    args: list[str], message: str, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(_cli(), [*args, "--store", str(source)])
    assert isinstance(result.exception, ThismeError)
    assert message in str(result.exception)
    assert "\n" not in str(result.exception)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cli_missing_store(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        _cli(),
        ["export", "--store", str(tmp_path / "none.db"), "--out", str(tmp_path / "x.ndjson")],
    )
    assert isinstance(result.exception, StoreError)
    assert "no store at" in str(result.exception)
