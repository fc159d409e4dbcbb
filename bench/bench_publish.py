"""Time stacks' archive formats on a layer tree against `tar` piped into the reference CLIs.

    python bench/bench_publish.py TREE [--layered] [--formats tar.xz tar.zst ...]
    python bench/bench_publish.py --demo-runtime      # the trimmed CPython 3.12 of the tests

For each format it writes the archive with `stacks.publish.archives.write_archive`, then the same
tree with `tar --sort=name | xz -T0 -6` (or `zstd -T0 -<level>`, `gzip -6`), and prints the
time and size of both and their ratios (ours / reference; below 1 means ours is better).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from stacks.publish.archives import (
    ARCHIVE_FORMATS,
    GZIP_LEVEL,
    XZ_PRESET,
    ZSTD_LEVEL,
    write_archive,
)

MTIME = 1_756_252_800


@dataclass(frozen=True)
class BenchRow:
    """One format's result: ours and (if there is one) the reference pipeline's."""

    fmt: str
    seconds: float
    size: int
    reference: str | None = None
    ref_seconds: float | None = None
    ref_size: int | None = None


def _reference_command(fmt: str) -> list[str] | None:
    return {
        "tar.xz": ["xz", "-T0", f"-{XZ_PRESET}", "-c"],
        "tar.zst": ["zstd", "-T0", f"-{ZSTD_LEVEL}", "-q", "-c"],
        "tar.gz": ["gzip", f"-{GZIP_LEVEL}", "-n", "-c"],
    }.get(fmt)


def _reference(tree: Path, fmt: str, out: Path) -> tuple[str, float, int] | None:
    command = _reference_command(fmt)
    if command is None or not shutil.which(command[0]) or not shutil.which("tar"):
        return None
    tar_cmd = ["tar", "--sort=name", "--exclude=__pycache__", "--exclude=*.pyc", "-cf", "-"]
    tar_cmd += ["-C", str(tree.parent), tree.name]
    start = time.perf_counter()
    with open(out, "wb") as handle:
        tar = subprocess.Popen(tar_cmd, stdout=subprocess.PIPE)
        subprocess.run(command, stdin=tar.stdout, stdout=handle, check=True)
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0:
            raise RuntimeError(f"tar failed on {tree}")
    return "tar | " + " ".join(command), time.perf_counter() - start, out.stat().st_size


def bench_tree(
    tree: Path, *, layered: bool = False, formats: tuple[str, ...] = ARCHIVE_FORMATS
) -> list[BenchRow]:
    """Time every format on `tree` against its reference pipeline; return one row per format."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="stacks-bench-") as scratch:
        for fmt in formats:
            archive = Path(scratch) / f"ours.{fmt}"
            start = time.perf_counter()
            result = write_archive(
                tree, archive, root_name=tree.name, fmt=fmt, mtime=MTIME, layered=layered
            )
            seconds = time.perf_counter() - start
            archive.unlink()
            ref = _reference(tree, fmt, Path(scratch) / f"reference.{fmt}")
            if ref is None:
                rows.append(BenchRow(fmt, seconds, result.size))
            else:
                rows.append(BenchRow(fmt, seconds, result.size, *ref))
    return rows


@dataclass(frozen=True)
class FormatSamples:
    """Repeated timings of one format: ours and the reference pipeline's (seconds), and sizes."""

    fmt: str
    seconds: tuple[float, ...]
    size: int
    reference: str | None = None
    ref_seconds: tuple[float, ...] = ()
    ref_size: int | None = None
    cpu: tuple[float, ...] = ()
    ref_cpu: tuple[float, ...] = ()


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def bench_formats(
    tree: Path, *, layered: bool, runs: int, formats: tuple[str, ...] = ARCHIVE_FORMATS
) -> list[FormatSamples]:
    """Like `bench_tree`, `runs` times per format, ours and the reference interleaved."""
    results = []
    with tempfile.TemporaryDirectory(prefix="stacks-bench-") as scratch:
        for fmt in formats:
            ours: list[float] = []
            refs: list[float] = []
            cpu: list[float] = []
            ref_cpu: list[float] = []
            size = 0
            ref_name: str | None = None
            ref_size: int | None = None
            for _ in range(runs):
                archive = Path(scratch) / f"ours.{fmt}"
                start, start_cpu = time.perf_counter(), _cpu(resource.RUSAGE_SELF)
                size = write_archive(
                    tree, archive, root_name=tree.name, fmt=fmt, mtime=MTIME, layered=layered
                ).size
                ours.append(time.perf_counter() - start)
                cpu.append(_cpu(resource.RUSAGE_SELF) - start_cpu)
                archive.unlink()
                start_cpu = _cpu(resource.RUSAGE_CHILDREN)
                ref = _reference(tree, fmt, Path(scratch) / f"reference.{fmt}")
                if ref is not None:
                    ref_name, seconds, ref_size = ref
                    refs.append(seconds)
                    ref_cpu.append(_cpu(resource.RUSAGE_CHILDREN) - start_cpu)
            results.append(
                FormatSamples(
                    fmt,
                    tuple(ours),
                    size,
                    ref_name,
                    tuple(refs),
                    ref_size,
                    tuple(cpu),
                    tuple(ref_cpu),
                )
            )
    return results


def print_rows(rows: list[BenchRow]) -> None:
    """Print a result table (time and size ratios are ours / reference)."""
    print(
        f"{'format':8} {'ours s':>8} {'ours MB':>9} {'ref s':>8} {'ref MB':>9} {'t ratio':>8} "
        f"{'size ratio':>10}  reference"
    )
    for row in rows:
        line = f"{row.fmt:8} {row.seconds:8.2f} {row.size / 1e6:9.2f}"
        if row.ref_seconds is not None and row.ref_size is not None:
            line += (
                f" {row.ref_seconds:8.2f} {row.ref_size / 1e6:9.2f}"
                f" {row.seconds / row.ref_seconds:8.2f} {row.size / row.ref_size:10.3f}"
                f"  {row.reference}"
            )
        print(line)


def _demo_runtime(folder: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from stack_trees import RUNTIME, make_runtime

    make_runtime(folder / RUNTIME)
    return folder / RUNTIME


def main(argv: list[str] | None = None) -> int:
    """Command line: benchmark one tree (or the tests' trimmed runtime)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("tree", nargs="?", type=Path, help="layer folder to archive")
    parser.add_argument("--layered", action="store_true", help="the tree is a layered venv")
    parser.add_argument("--formats", nargs="+", default=list(ARCHIVE_FORMATS))
    parser.add_argument("--demo-runtime", action="store_true", help="use the tests' runtime")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stacks-bench-tree-") as scratch:
        if args.demo_runtime:
            tree = _demo_runtime(Path(scratch))
        elif args.tree:
            tree = Path(os.path.abspath(args.tree))
        else:
            parser.error("give a TREE or --demo-runtime")
        print(f"tree: {tree} ({os.cpu_count()} CPUs)")
        print_rows(bench_tree(tree, layered=args.layered, formats=tuple(args.formats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
