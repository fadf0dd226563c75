"""Regenerate docs/reliability.md from the reliability trials and the API load benchmark.

Runs ``pytest -m reliability`` with ``THISME_RELIABILITY_LOG`` set (each trial appends one JSON
line, see tests/reliability.py) and a long schemathesis run, then ``benchmarks/load.py --json``,
and writes one table per area (each fault or attack tried, how many times, what was lost,
duplicated or went wrong) plus the load figures per store. Rows are sorted, so two runs with
the same results give the same tables.

    python scripts/reliability_report.py                         # everything (~10 min)
    python scripts/reliability_report.py --seconds 20            # a shorter load run
    python scripts/reliability_report.py --log trials.jsonl --load load.json   # render only
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "reliability.md"
#: Sections in this order; areas not listed follow alphabetically.
AREAS = {
    "harvest": "Harvest under faults",
    "download": "Downloads under faults",
    "api": "STAC API under load and concurrent writes",
    "input": "Hostile input and secrets",
}
COUNTS = ("runs", "lost", "duplicated", "errors")


def read_records(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The JSON lines of a trial log (blank or broken lines are skipped)."""
    records = []
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and {"area", "trial", "runs"} <= set(record):
            records.append(record)
    return records


def merge(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """area -> trial -> counts summed over its records, figures kept (ranges when they vary)."""
    areas: dict[str, dict[str, dict[str, Any]]] = {}
    for record in records:
        row = areas.setdefault(str(record["area"]), {}).setdefault(
            str(record["trial"]), {**dict.fromkeys(COUNTS, 0), "figures": {}, "records": 0}
        )
        row["records"] += 1
        for key in COUNTS:
            row[key] += int(record.get(key) or 0)
        for name, value in (record.get("figures") or {}).items():
            row["figures"].setdefault(name, []).append(value)
    return areas


def _figure(values: list[Any]) -> str:
    distinct = sorted({json.dumps(v, sort_keys=True) for v in values})
    if len(distinct) == 1:
        return _plain(values[0])
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numbers) == len(values):
        return f"{_plain(min(numbers))}–{_plain(max(numbers))}"
    return f"{len(distinct)} kinds: " + "; ".join(str(json.loads(d)) for d in distinct)


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def area_tables(areas: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    order = [a for a in AREAS if a in areas] + sorted(a for a in areas if a not in AREAS)
    lines: list[str] = []
    for area in order:
        trials = areas[area]
        lines += [f"## {AREAS.get(area, area)}", ""]
        lines += ["| trial | runs | lost | duplicated | errors | result | figures |"]
        lines += ["|---|---:|---:|---:|---:|---|---|"]
        for trial in sorted(trials):
            row = trials[trial]
            clean = row["lost"] == row["duplicated"] == row["errors"] == 0
            figures = "; ".join(
                f"{name} {_figure(values)}" for name, values in sorted(row["figures"].items())
            )
            lines.append(
                f"| {_cell(trial)} | {row['runs']:,} | {row['lost']:,} | {row['duplicated']:,} "
                f"| {row['errors']:,} | {'pass' if clean else '**FAIL**'} | {_cell(figures)} |"
            )
        total = {key: sum(r[key] for r in trials.values()) for key in COUNTS}
        lines += [
            "",
            f"{len(trials)} trials, {total['runs']:,} runs: {total['lost']:,} lost, "
            f"{total['duplicated']:,} duplicated, {total['errors']:,} errors.",
            "",
        ]
    return lines


def load_tables(load: dict[str, Any]) -> list[str]:
    stores = load.get("stores") or {}
    if not stores:
        return []
    lines = [
        "## STAC API load on loopback",
        "",
        f"`benchmarks/load.py`: {load['seconds']:.0f} s per store at concurrency "
        f"{load['concurrency']}, the simulator's catalogue ({load.get('size', 'thisme')}), "
        "the API in its own process. Target: 0 errors.",
        "",
        "| store | query | requests | errors | req/s | p50 ms | p99 ms | server peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for store in sorted(stores):
        figures = stores[store]
        lines.append(
            f"| {store} | **all** | {figures['requests']:,} | {figures['errors']:,} "
            f"| {figures['requests_per_s']:.1f} | {figures['p50_ms']:.1f} "
            f"| {figures['p99_ms']:.1f} | {figures['server_peak_rss_mb']:.0f} |"
        )
        for kind in sorted(figures.get("kinds", {})):
            k = figures["kinds"][kind]
            lines.append(
                f"| {store} | {kind} | {k['requests']:,} | {k['errors']:,} "
                f"| {k['requests_per_s']:.1f} | {k['p50_ms']:.1f} | {k['p99_ms']:.1f} | |"
            )
    lines.append("")
    loads = ", ".join(
        f"{store} {stores[store].get('load_before', '?')} before / "
        f"{stores[store].get('load_after', '?')} after"
        for store in sorted(stores)
    )
    lines += [f"Load average (1 min) around each run: {loads}.", ""]
    return lines


def render(
    records: list[dict[str, Any]],
    load: dict[str, Any] | None,
    *,
    date: str,
    pytest_summary: str | None,
    examples: int | None,
) -> str:
    areas = merge(records)
    every = [row for trials in areas.values() for row in trials.values()]
    total = {key: sum(row[key] for row in every) for key in COUNTS}
    lines = [
        "# Reliability and security trials",
        "",
        f"Generated by `python scripts/reliability_report.py` on {date}, on "
        f"{os.cpu_count()} cores, Python {platform.python_version()} "
        f"({platform.system()} {platform.machine()}).",
        "",
        f"**{len(every)} trials, {total['runs']:,} runs: {total['lost']:,} items or files lost, "
        f"{total['duplicated']:,} duplicated, {total['errors']:,} errors.**",
    ]
    if pytest_summary:
        lines += ["", f"`pytest -m reliability`: {pytest_summary}."]
    lines += [
        "",
        "Each row is one trial recorded by a test marked `reliability` (tests/reliability.py): "
        "how many times it ran, what was lost or duplicated, unexpected errors, and its own "
        "figures. A trial's test asserts on these numbers, so a row exists only if it passed.",
        "",
    ]
    lines += area_tables(areas)
    if load:
        lines += load_tables(load)
    lines += [
        "## How to regenerate",
        "",
        "```",
        "python scripts/reliability_report.py               # trials + 60 s load per store",
        "python -m pytest -m reliability                    # the trials alone (default sizes)",
        "python benchmarks/load.py --seconds 60 --concurrency 16",
        "```",
        "",
        "The script runs the trials with `THISME_RELIABILITY_LOG` set and "
        f"`THISME_SCHEMATHESIS_EXAMPLES={examples or 200}` (the default test run uses 40).",
        "",
    ]
    return "\n".join(lines)


def run_trials(log: Path, examples: int, extra: list[str]) -> str:
    """``pytest -m reliability``; its summary line (e.g. ``62 passed in 180.2s``)."""
    env = {
        **os.environ,
        "THISME_RELIABILITY_LOG": str(log),
        "THISME_SCHEMATHESIS_EXAMPLES": str(examples),
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "reliability", "-q", "-p", "no:randomly", *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    sys.stderr.write(done.stdout[-3000:] + done.stderr[-2000:])
    summary = [line for line in done.stdout.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    text = summary[-1].strip("= ") if summary else f"exit code {done.returncode}"
    return re.sub(r" in [\d.]+s( \([\d:]+\))?$", "", text)


def run_load(path: Path, seconds: float, concurrency: int) -> dict[str, Any]:
    subprocess.run(
        [
            *(sys.executable, str(ROOT / "benchmarks" / "load.py")),
            *("--seconds", str(seconds), "--concurrency", str(concurrency)),
            *("--json", str(path)),
        ],
        cwd=ROOT,
        check=False,
    )
    if not path.exists():
        raise SystemExit("error: benchmarks/load.py wrote no figures")
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seconds", type=float, default=60.0, help="load per store")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--examples", type=int, default=200, help="schemathesis, per operation")
    parser.add_argument("--log", type=Path, help="render this trial log instead of running")
    parser.add_argument("--load", type=Path, help="render this load JSON instead of running")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments")
    args = parser.parse_args()
    summary: str | None = None
    with tempfile.TemporaryDirectory(prefix="thisme-reliability-") as tmp:
        log = args.log
        if log is None:
            log = Path(tmp) / "trials.jsonl"
            summary = run_trials(log, args.examples, args.pytest_args)
        records = read_records(log.read_text(encoding="utf-8").splitlines()) if log.exists() else []
        if args.load is not None:
            load = json.loads(args.load.read_text(encoding="utf-8"))
        else:
            load = run_load(Path(tmp) / "load.json", args.seconds, args.concurrency)
    text = render(
        records,
        load,
        date=dt.date.today().isoformat(),
        pytest_summary=summary,
        examples=args.examples,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    part = args.out.with_suffix(".md.part")
    part.write_text(text, encoding="utf-8")
    part.replace(args.out)
    print(f"wrote {args.out} ({len(records)} trial records)", file=sys.stderr)


if __name__ == "__main__":
    main()
