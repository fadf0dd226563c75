"""The STAC API as outside conformance tools see it: stac-api-validator and schemathesis.

Both run against a real uvicorn server on 127.0.0.1 (``tests.apiserver``) over ~3,900 items.

* stac-api-validator runs once per conformance class, in a subprocess, through
  ``tests/validator_offline.py``: the STAC / GeoJSON / extension schemas come from
  ``tests/data/schemas`` and every connection outside loopback is refused. Its error list must be
  empty except for entries of ``VALIDATOR_ALLOWED``, each a validator bug or a conflict with the
  specification, with its reason. A real API bug is never allow-listed: the test fails until the
  API is fixed.
* schemathesis (its CLI, in a subprocess) fuzzes every operation of the API's own OpenAPI
  document (``/api``) with a fixed seed and at most 40 examples per operation (more with
  ``THISME_SCHEMATHESIS_EXAMPLES``; scripts/reliability_report.py asks for 200): no 5xx, and
  every response matches the schema and content type the document declares.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.apiserver import ApiServer, build_store, running_api
from tests.reliability import record

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = Path(__file__).resolve().parent / "data" / "schemas"
OFFLINE = Path(__file__).resolve().parent / "validator_offline.py"
COLLECTION = "SoilMoisture"
#: A property every item has, for the fields extension's nested include/exclude cases.
NESTED_PROPERTY = "properties.thisme:site"
SCHEMATHESIS_SEED = 20261125
SCHEMATHESIS_EXAMPLES = int(os.environ.get("THISME_SCHEMATHESIS_EXAMPLES") or 40)


@dataclass(frozen=True)
class Allowed:
    """A validator error that is not an API bug: ``pattern`` (regex) and why it is tolerated."""

    pattern: str
    reason: str

    def matches(self, error: str) -> bool:
        return re.search(self.pattern, error, re.DOTALL) is not None


#: Every tolerated stac-api-validator (0.6.8) error. Anything else fails the test.
VALIDATOR_ALLOWED = (
    Allowed(
        r'^\[Item Search - Sort Ext\] : POST \S+/search params=None body=\{"sortby": .*'
        r'"collections": "[^"]*"\} had unexpected status code 400 instead of 200',
        "validator bug: its POST sort requests send `collections` as a string where item-search "
        "requires an array (400 is right), and it never reads their responses anyway; "
        "test_post_sortby_orders_by_datetime does that check",
    ),
    Allowed(
        r"^\[Item Search - Fields Ext\] : POST \{'fields': \{'exclude': \['properties'\], "
        r"'include': \['properties\.[^']+'\]\}\} response contained fewer than 5 fields",
        "validator bug: fields 1.0.0 (rules 2 and 5.1) asks for only the included nested field "
        "here, yet the validator wants at least 5 top-level fields (it does not for GET)",
    ),
)

#: (test id, conformance classes given together to one validator run). ``filter`` is only
#: checked from inside the item-search checks, so the two run together.
VALIDATOR_RUNS = [
    ("core", ["core"]),
    ("collections", ["collections"]),
    ("features", ["features"]),
    ("item-search+filter", ["item-search", "filter"]),
    ("sort", ["item-search#sort"]),
    ("fields", ["item-search#fields"]),
]


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    path = tmp_path_factory.mktemp("conformance") / "api.sqlite"
    return path, build_store(path, step=5)


@pytest.fixture(scope="module")
def api(catalogue: tuple[Path, list[dict[str, Any]]]) -> Iterator[ApiServer]:
    with running_api(catalogue[0]) as server:
        yield server


# --- stac-api-validator --------------------------------------------------------------------------
@dataclass
class ValidatorReport:
    returncode: int
    stdout: str
    stderr: str
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    served: set[str] = field(default_factory=set)
    missing: set[str] = field(default_factory=set)
    complete: bool = False


def _parse_validator(returncode: int, stdout: str, stderr: str) -> ValidatorReport:
    """The ``Warnings:`` / ``Errors:`` lists the validator prints (``- `` starts an entry)."""
    report = ValidatorReport(returncode, stdout, stderr)
    section: list[str] | None = None
    for line in stdout.splitlines():
        if line.startswith("Warnings:"):
            section = report.warnings
        elif line.startswith("Errors:"):
            section = report.errors
            report.complete = True
        elif section is not None and line.startswith("- "):
            section.append(line[2:].strip())
        elif section is not None and section and line.strip():
            section[-1] += "\n" + line  # a message that spans lines
    for line in stderr.splitlines():
        kind, _, url = line.partition(": ")
        if kind == "offline-schema-served":
            report.served.add(url.strip())
        elif kind == "offline-schema-missing":
            report.missing.add(url.strip())
    return report


def run_validator(
    server: ApiServer, classes: list[str], geometry: dict[str, Any]
) -> ValidatorReport:
    command = [
        *(sys.executable, str(OFFLINE), str(SCHEMAS)),
        *("--root-url", server.url, "--collection", COLLECTION),
        *("--geometry", json.dumps(geometry), "--fields-nested-property", NESTED_PROPERTY),
        *("--validate-pagination", "--log-level", "WARNING"),
    ]
    for name in classes:
        command += ["--conformance", name]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False
    )
    return _parse_validator(done.returncode, done.stdout, done.stderr)


@pytest.mark.parametrize(("name", "classes"), VALIDATOR_RUNS, ids=[r[0] for r in VALIDATOR_RUNS])
def test_stac_api_validator(
    api: ApiServer,
    catalogue: tuple[Path, list[dict[str, Any]]],
    name: str,
    classes: list[str],
) -> None:
    report = run_validator(api, classes, catalogue[1][0]["geometry"])
    unfinished = f"stac-api-validator did not finish (exit {report.returncode}):\n"
    unfinished += f"{report.stdout[-4000:]}\n{report.stderr[-4000:]}"
    assert report.complete, unfinished
    assert report.returncode in (0, 1), unfinished
    assert not report.missing, f"schemas missing from {SCHEMAS}: {sorted(report.missing)}"
    unexpected = [e for e in report.errors if not any(a.matches(e) for a in VALIDATOR_ALLOWED)]
    assert not unexpected, (
        f"stac-api-validator --conformance {' '.join(classes)}: {len(unexpected)} error(s) that "
        "are neither fixed nor allow-listed (VALIDATOR_ALLOWED):\n- "
        + "\n- ".join(e[:600] for e in unexpected)
    )
    if name == "features":  # items and the collection were validated against the local schemas
        extensions = {
            url
            for url in catalogue[1][0]["stac_extensions"]
            if url.startswith("https://stac-extensions.github.io/")
        }
        core = {
            "https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json",
            "https://schemas.stacspec.org/v1.1.0/collection-spec/json-schema/collection.json",
            "https://geojson.org/schema/Feature.json",
        }
        assert core | extensions <= report.served, sorted((core | extensions) - report.served)


CHECK_ITEMS = """
import json, sys
from tests.validator_offline import install

install(sys.argv[1])
from stac_validator.validate import StacValidate

results = {}
for name, item in json.load(sys.stdin).items():
    validator = StacValidate(links=False, assets=False)
    results[name] = [validator.validate_dict(item), str(validator.message)[:400]]
print(json.dumps(results))
"""


def test_offline_schemas_reject_invalid_items(
    catalogue: tuple[Path, list[dict[str, Any]]],
) -> None:
    """The local schemas are really used: a broken core, GeoJSON or extension field is caught."""
    item = json.loads(json.dumps(catalogue[1][0]))
    no_datetime = json.loads(json.dumps(item))
    del no_datetime["properties"]["datetime"]
    bad_geometry = {**item, "geometry": {"type": "Polygon", "coordinates": "nowhere"}}
    bad_band = json.loads(json.dumps(item))
    bad_band["properties"]["sar:frequency_band"] = "Q"
    cases = {"valid": item, "core": no_datetime, "geojson": bad_geometry, "sar": bad_band}
    done = subprocess.run(
        [sys.executable, "-c", CHECK_ITEMS, str(SCHEMAS)],
        cwd=ROOT,
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "offline-schema-missing" not in done.stderr, done.stderr
    results = json.loads(done.stdout)
    assert results["valid"][0], results["valid"][1]
    for name in ("core", "geojson", "sar"):
        assert not results[name][0], f"the {name} error went unnoticed: {results[name][1]}"


def test_post_sortby_orders_by_datetime(api: ApiServer) -> None:
    """What the validator means to check for POST sort (its own request is malformed)."""
    for direction in ("asc", "desc"):
        response = httpx.post(
            f"{api.url}search",
            json={
                "collections": [COLLECTION],
                "limit": 100,
                "sortby": [{"field": "properties.datetime", "direction": direction}],
            },
            timeout=30,
        )
        assert response.status_code == 200, response.text
        datetimes = [f["properties"]["datetime"] for f in response.json()["features"]]
        assert len(datetimes) == 100
        assert datetimes == sorted(datetimes, reverse=direction == "desc"), direction


# --- schemathesis --------------------------------------------------------------------------------
#: The API without THISME_API_KEY: read-only, so no transaction route is in the document.
READ_ONLY_OPERATIONS = {
    "GET /",
    "GET /conformance",
    "GET /queryables",
    "GET /collections",
    "GET /collections/{collection_id}",
    "GET /collections/{collection_id}/queryables",
    "GET /collections/{collection_id}/items",
    "GET /collections/{collection_id}/items/{item_id}",
    "GET /search",
    "POST /search",
    "GET /_mgmt/ping",
    "GET /_mgmt/health",
}

#: A schemathesis check (loaded from a hooks file) in place of response_schema_conformance.
#: With the fields extension, items legitimately lose members that the OpenAPI's Item schema
#: requires ("this may result in an entity that is not a valid STAC Item"), so such responses
#: need only be a FeatureCollection of objects; every other response gets the declared schema.
HOOKS = """
import schemathesis
from schemathesis.specs.openapi.checks import response_schema_conformance


def _uses_fields(case):
    body = case.body if isinstance(case.body, dict) else {}
    return "fields" in (case.query or {}) or "fields" in body


@schemathesis.check
def stac_response_schema(ctx, response, case):
    \"\"\"The declared response schema; with `fields`, a FeatureCollection of (partial) items.\"\"\"
    if response.status_code != 200 or not _uses_fields(case):
        return response_schema_conformance(ctx, response, case)
    body = response.json()
    features = body.get("features") if isinstance(body, dict) else None
    if not isinstance(features, list) or body.get("type") != "FeatureCollection":
        raise AssertionError(f"not a FeatureCollection: {str(body)[:300]}")
    if not all(isinstance(feature, dict) for feature in features):
        raise AssertionError("an item shaped by fields is not a JSON object")
    return True
"""


def _schemathesis_config(items: list[dict[str, Any]], hooks: Path) -> str:
    """Checks, and real collection / item ids for 3 path parameters in 4 (others stay random)."""
    ids = ", ".join(json.dumps(i["id"]) for i in items[:: max(len(items) // 8, 1)])
    return (
        f"hooks = {json.dumps(str(hooks))}\n\n"
        "[checks]\nenabled = false\n"
        "not_a_server_error.enabled = true\n"
        "content_type_conformance.enabled = true\n"
        "stac_response_schema.enabled = true\n\n"
        f"[dictionaries.collections]\nvalues = [{json.dumps(COLLECTION)}]\n\n"
        f"[dictionaries.items]\nvalues = [{ids}]\n\n"
        "[parameters]\n"
        '"path.collection_id" = { dictionary = "collections", probability = 0.75 }\n'
        '"path.item_id" = { dictionary = "items", probability = 0.75 }\n'
    )


def _schemathesis_findings(output: str) -> str:
    """Per failing operation: each failure's title and first message line, and its curl."""
    lines: list[str] = []
    message_next = False
    for line in output.splitlines():
        text = line.strip()
        if re.fullmatch(r"_{3,} (GET|POST) \S+ _{3,}", text):
            lines.append(text.strip("_ "))
        elif re.match(r"- ST\d+ ", text):
            lines.append("  " + text)
            message_next = True
        elif message_next and text:
            lines.append("    " + text[:300])
            message_next = False
        elif text.startswith("curl "):
            lines.append("    " + text)
    return "\n".join(lines)


@pytest.mark.reliability
def test_schemathesis_openapi(
    api: ApiServer,
    catalogue: tuple[Path, list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    document = httpx.get(f"{api.url}api", timeout=30).json()
    operations = {
        f"{method.upper()} {path}"
        for path, methods in document["paths"].items()
        for method in methods
        if method in ("get", "put", "post", "patch", "delete")
    }
    assert operations == READ_ONLY_OPERATIONS  # nothing that writes is fuzzed

    hooks = tmp_path / "stac_hooks.py"
    hooks.write_text(HOOKS, encoding="utf-8")
    config = tmp_path / "schemathesis.toml"
    config.write_text(_schemathesis_config(catalogue[1], hooks), encoding="utf-8")
    report_path = tmp_path / "report.json"
    command = [
        *(sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()"),
        *("--config-file", str(config), "run", f"{api.url}api"),
        f"--max-examples={SCHEMATHESIS_EXAMPLES}",
        f"--seed={SCHEMATHESIS_SEED}",
        "--workers=1",  # several workers trip a CPython 3.11 AST error inside schemathesis
        "--phases=examples,coverage,fuzzing",
        "--suppress-health-check=all",
        "--generation-database=none",
        "--request-timeout=30",
        "--no-color",
        "--report=json",
        f"--report-json-path={report_path}",
    ]
    done = subprocess.run(  # cwd: schemathesis and hypothesis leave caches in the working dir
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240 + 6 * SCHEMATHESIS_EXAMPLES,
        check=False,
    )
    output = done.stdout + done.stderr
    assert report_path.exists(), output[-6000:]
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["complete"], output[-6000:]
    assert report["operations"]["tested"] == len(READ_ONLY_OPERATIONS), output[-6000:]
    problems = [
        f"{f['code']} {f['title']} ({f['count']}): {', '.join(f['operations'])}"
        for f in report["failures"]
    ] + [f"{e['title']} ({e['count']})" for e in report["errors"]]
    assert not problems, (
        f"schemathesis against our OpenAPI (seed {SCHEMATHESIS_SEED}):\n- "
        + "\n- ".join(problems)
        + "\n\n"
        + _schemathesis_findings(output)
    )
    record(
        "input",
        f"schemathesis: generated requests, {SCHEMATHESIS_EXAMPLES} examples per operation",
        runs=report["test_cases"]["generated"],
        errors=len(problems),
        operations=report["operations"]["tested"],
        seed=str(SCHEMATHESIS_SEED),
    )
