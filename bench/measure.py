"""Timing helpers for the benchmark suite: repeated measurements, medians, spreads, rows."""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Sample:
    """Repeated measurements of one quantity (seconds, bytes or a count), with CPU seconds."""

    values: tuple[float, ...]
    cpu: tuple[float, ...] = ()  # CPU seconds (user + system, all processes) of each run

    @property
    def cpu_median(self) -> float | None:
        """The median CPU time, if measured."""
        return statistics.median(self.cpu) if self.cpu else None

    @property
    def median(self) -> float:
        """The median value."""
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        """The smallest value."""
        return min(self.values)

    @property
    def high(self) -> float:
        """The largest value."""
        return max(self.values)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form."""
        return {
            "median": round(self.median, 6),
            "min": round(self.low, 6),
            "max": round(self.high, 6),
            "runs": len(self.values),
            "values": [round(v, 6) for v in self.values],
            "cpu_median": None if self.cpu_median is None else round(self.cpu_median, 6),
            "cpu": [round(v, 6) for v in self.cpu],
        }


@dataclass
class Row:
    """One line of the result table: a measurement, its baseline and its target."""

    scenario: str
    name: str
    sample: Sample
    unit: str = "s"
    baseline: str | None = None
    baseline_sample: Sample | None = None
    target: str | None = None
    met: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    paired: bool = False  # sample and baseline were measured alternately, run by run

    @property
    def ratio(self) -> float | None:
        """Over the baseline: median of run-by-run ratios if paired (robust to drift), else of medians."""
        base = self.baseline_sample
        if base is None or base.median == 0:
            return None
        if self.paired and len(base.values) == len(self.sample.values) and min(base.values) > 0:
            return statistics.median(
                a / b for a, b in zip(self.sample.values, base.values, strict=True)
            )
        return self.sample.median / base.median

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form."""
        return {
            "scenario": self.scenario,
            "name": self.name,
            "unit": self.unit,
            **self.sample.to_json(),
            "baseline": None
            if self.baseline_sample is None
            else {"name": self.baseline, **self.baseline_sample.to_json()},
            "ratio": None if self.ratio is None else round(self.ratio, 4),
            "paired": self.paired,
            "target": self.target,
            "met": self.met,
            "note": self.note,
            **({"extra": self.extra} if self.extra else {}),
        }


Measured = float | tuple[float, float]  # a value, or (wall seconds, CPU seconds)


def sample_of(measured: list[Measured]) -> Sample:
    """A Sample from measured values (with CPU times when every one has them)."""
    if measured and all(isinstance(m, tuple) for m in measured):
        pairs = [m for m in measured if isinstance(m, tuple)]
        return Sample(tuple(w for w, _ in pairs), tuple(c for _, c in pairs))
    return Sample(tuple(m[0] if isinstance(m, tuple) else m for m in measured))


def repeat(measure: Callable[[], Measured], runs: int, *, warmup: int = 0) -> Sample:
    """Call `measure` (one measured value) `warmup` times unrecorded, then `runs` times."""
    for _ in range(warmup):
        measure()
    return sample_of([measure() for _ in range(runs)])


def children_cpu() -> float:
    """CPU seconds used so far by waited-for child processes (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu() -> float:
    """CPU seconds used so far by this process (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Finished:
    """A finished command: exit code, output, wall time and CPU time (with its children)."""

    code: int
    stdout: str
    stderr: str
    seconds: float
    cpu: float = 0.0

    @property
    def timing(self) -> tuple[float, float]:
        """(wall seconds, CPU seconds)."""
        return self.seconds, self.cpu


def run(
    command: Sequence[str | os.PathLike[str]],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
    stdin: Any = None,
) -> Finished:
    """Run a command, capturing its output and timing it (wall clock)."""
    cpu = children_cpu()
    start = time.perf_counter()
    done = subprocess.run(
        [os.fspath(part) for part in command],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        stdin=stdin,
        check=False,
    )
    seconds = time.perf_counter() - start
    cpu = children_cpu() - cpu
    if check and done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, command))} exited {done.returncode}\n"
            f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
        )
    return Finished(done.returncode, done.stdout, done.stderr, seconds, cpu)


def human(value: float, unit: str) -> str:
    """A short human form of a value in `unit` (s, MB, x, count)."""
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "B":
        return f"{value / 1e6:.2f} MB"
    if unit == "count":
        return f"{value:g}"
    return f"{value:.3g} {unit}"
