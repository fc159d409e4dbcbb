"""Run the benchmark suite: `python -m bench [--runs N] [--only SCENARIO ...]`.

Builds its scenarios in a scratch folder (real uv, real PyPI, a local CPython 3.12),
repeats each measurement, compares it with a baseline measured in the same run, prints
one table and writes `bench/results/latest.json`. Exit code 0 unless a scenario failed to
run; with `--strict`, also 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import baselines, scenarios
from bench.measure import Row, human
from bench.projects import REPO, Bench

RESULTS = REPO / "bench" / "results" / "latest.json"
SCENARIOS = {**scenarios.SCENARIOS, **baselines.SCENARIOS}
DEFAULT = [name for name in SCENARIOS if name not in baselines.OPT_IN]


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def format_table(rows: list[Row]) -> str:
    """The result table (Markdown, so docs/performance.md can hold it as it is)."""
    header = [
        "scenario",
        "measurement",
        "median",
        "min-max",
        "baseline",
        "ratio",
        "CPU (baseline)",
        "target",
        "met",
    ]
    lines = [header]
    for row in rows:
        base = "-"
        if row.baseline_sample is not None:
            base = f"{human(row.baseline_sample.median, row.unit)} ({row.baseline})"
        lines.append(
            [
                row.scenario,
                row.name + (f" [{row.note}]" if row.note else ""),
                human(row.sample.median, row.unit),
                f"{human(row.sample.low, row.unit)}-{human(row.sample.high, row.unit)}",
                base,
                "-" if row.ratio is None else f"{row.ratio:.2f}x",
                _cpu_cell(row),
                row.target or "-",
                {True: "yes", False: "MISSED", None: "-"}[row.met],
            ]
        )
    out = ["| " + " | ".join(lines[0]) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell.replace("|", "/") for cell in line) + " |" for line in lines[1:]]
    return "\n".join(out)


def _cpu_cell(row: Row) -> str:
    own = row.sample.cpu_median
    if own is None:
        return "-"
    base = None if row.baseline_sample is None else row.baseline_sample.cpu_median
    return human(own, "s") + ("" if base is None else f" ({human(base, 's')})")


def _machine() -> dict[str, Any]:
    from uv import find_uv_bin

    uv = subprocess.run([find_uv_bin(), "--version"], capture_output=True, text=True, check=False)
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit.stdout.strip() or None,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "uv": uv.stdout.strip(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line entry point of the benchmark suite."""
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    parser.add_argument("--runs", type=int, default=5, help="repetitions per measurement (>= 5)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(SCENARIOS),
        help="run only these scenarios (opt-in ones, not run by default: "
        + ", ".join(sorted(baselines.OPT_IN))
        + ")",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="the JSON results file")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    # Installed packages carry bytecode; a fresh clone's editable install does not yet.
    compileall.compile_dir(REPO / "stacks", quiet=1)
    scratch = Path(tempfile.mkdtemp(prefix="stacks-bench-"))
    bench = Bench(scratch, max(1, args.runs), _log)
    rows: list[Row] = []
    failed: dict[str, str] = {}
    loads: dict[str, float] = {}
    start = time.perf_counter()
    try:
        for name in args.only or DEFAULT:
            loads[name] = os.getloadavg()[0] if hasattr(os, "getloadavg") else -1.0
            _log(f"scenario {name} (load average {loads[name]:.1f}) ...")
            began = time.perf_counter()
            try:
                rows += SCENARIOS[name](bench)
            except Exception as exc:  # report and go on with the other scenarios
                failed[name] = f"{type(exc).__name__}: {exc}"
                _log(f"scenario {name} FAILED: {failed[name]}")
            _log(f"scenario {name}: {time.perf_counter() - began:.1f} s")
    finally:
        if args.keep:
            _log(f"scratch folder kept: {scratch}")
        else:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)
    total = time.perf_counter() - start
    print(format_table(rows))
    missed = [f"{row.scenario}: {row.name}" for row in rows if row.met is False]
    for name, error in failed.items():
        print(f"scenario {name} failed: {error}")
    print(
        f"{len(rows)} measurements, {len(missed)} target(s) missed, in {total:.0f} s "
        f"on {os.cpu_count()} CPUs; load average at each scenario's start: "
        + ", ".join(f"{name} {load:.1f}" for name, load in loads.items())
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "machine": _machine(),
        "runs": bench.runs,
        "seconds": round(total, 1),
        "load_average_at_start": loads,
        "rows": [row.to_json() for row in rows],
        "missed": missed,
        "failed": failed,
    }
    args.output.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"results: {args.output}")
    if failed:
        return 2
    return 1 if missed and args.strict else 0
