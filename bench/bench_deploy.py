"""The deploy scenario: a stack with a big framework, deployed, against `zstd -dc | tar -x`."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from bench.measure import Row, run, sample_of
from bench.projects import LOCAL_RUNTIME, PINNED, Bench

# The measured case: a ~490 MB framework of the usual scientific packages.
BIG_SPEC = (
    PINNED
    + LOCAL_RUNTIME
    + """\
[[runtimes]]
name = "cpython-3.12"
python_implementation = "cpython@3.12"
requirements = []

[[frameworks]]
name = "sci"
runtime = "cpython-3.12"
requirements = ["scipy", "pandas", "pyarrow", "scikit-learn", "matplotlib"]
platforms = ["linux_x86_64"]  # not every package has wheels for every platform
dynlib_exclude = ["scipy.libs/*"]  # the same libgfortran as numpy.libs

[[applications]]
name = "app"
launch_module = "app.py"
frameworks = ["sci"]
requirements = []
platforms = ["linux_x86_64"]
"""
)

_UNPACK_ONLY = """\
import sys
from pathlib import Path
from stacks.deploy.deploy import read_manifest, unpack_layer, _unpack_limit

archives, target = Path(sys.argv[1]), Path(sys.argv[2])
for record in read_manifest(archives):
    layer = target / record.install_target
    layer.mkdir(parents=True)
    unpack_layer(archives / record.archive_name, layer, record.install_target,
                 max_bytes=_unpack_limit(record.size))
"""


def big_stack(bench: Bench) -> Path:
    """The big-framework stack, published as tar.zst into `<project>/_artifacts` and, with
    `--bytecode` (unchecked-hash pycs shipped), into `<project>/_artifacts_bytecode`."""

    def make(folder: Path) -> Path:
        folder.mkdir(parents=True)
        (folder / "app.py").write_text("import pandas, scipy, sklearn\n", encoding="utf-8")
        spec = folder / "stack.toml"
        spec.write_text(BIG_SPEC, encoding="utf-8")
        bench.stacks("publish", spec, "--format", "tar.zst", "-n", "2")
        out = folder / "_artifacts_bytecode"
        bench.stacks("publish", spec, "--format", "tar.zst", "--bytecode", "--output-dir", out)
        return spec

    return bench.setup("big-framework", make)


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def _archives(folder: Path) -> tuple[list[Path], int]:
    paths = sorted(folder.glob("*.tar.zst"))
    return paths, sum(p.stat().st_size for p in paths)


def deploy(bench: Bench) -> list[Row]:
    """`stacks deploy` (and its unpack alone) of the big stack vs `zstd -dc | tar -x`, paired;
    and the deploy of the same stack published with `--bytecode`."""
    spec = big_stack(bench)
    plain_dir, bytecode_dir = spec.parent / "_artifacts", spec.parent / "_artifacts_bytecode"
    plain, size = _archives(plain_dir)
    with_pycs, bytecode_size = _archives(bytecode_dir)
    scratch = bench.root / "deploy-scratch"

    def tar_x(archives: list[Path]) -> tuple[float, float]:
        target = _fresh(scratch / "tar")
        target.mkdir(parents=True)
        script = " && ".join(f"zstd -dcq {a} | tar -x -C {target}" for a in archives)
        done = run(["sh", "-c", script])
        return done.seconds, done.cpu

    def ours(archive_dir: Path) -> tuple[float, float]:
        done = bench.stacks("-q", "deploy", archive_dir, "--target", _fresh(scratch / "ours"))
        return done.seconds, done.cpu

    def unpack() -> tuple[float, float]:
        target = _fresh(scratch / "unpack")
        done = run([sys.executable, "-c", _UNPACK_ONLY, str(plain_dir), str(target)], env=bench.env)
        return done.seconds, done.cpu

    growth = bytecode_size - size
    cases = (
        ("unpack only (checked, every entry)", unpack, plain, size, 1.5),
        ("stacks deploy (unpack, configure, compile)", lambda: ours(plain_dir), plain, size, 3.0),
        (
            "stacks deploy of a --bytecode publish (pycs shipped)",
            lambda: ours(bytecode_dir),
            with_pycs,
            bytecode_size,
            3.0,
        ),
    )
    rows = []
    for label, measure, archives, archive_size, limit in cases:
        a: list[float | tuple[float, float]] = []
        b: list[float | tuple[float, float]] = []
        c: list[float | tuple[float, float]] = []  # tar -x of the plain archives
        tar_x(archives), measure()  # warm the page cache for both
        for _ in range(bench.runs):
            a.append(measure())
            b.append(tar_x(archives))
            if archives is with_pycs:
                c.append(tar_x(plain))
        row = Row(
            "deploy",
            f"{label}, 3 layers, {archive_size / 1e6:.0f} MB of tar.zst",
            sample_of(a),
            baseline="zstd -dc | tar -x of the same archives",
            baseline_sample=sample_of(b),
            target=f"<= {limit}x tar -x",
            paired=True,
        )
        row.met = row.ratio is not None and row.ratio <= limit
        row.note = f"{row.ratio:.2f}x tar -x" if row.ratio is not None else ""
        if c:
            versus_plain = Row(
                "deploy", "", sample_of(a), baseline_sample=sample_of(c), paired=True
            )
            row.note += (
                f"; {versus_plain.ratio:.2f}x tar -x of the archives without bytecode; "
                f"archives +{growth / 1e6:.0f} MB (+{100 * growth / size:.0f}%) with bytecode"
            )
            row.extra = {
                "ratio_vs_plain_archives": round(versus_plain.ratio or 0, 4),
                "archive_bytes_plain": size,
                "archive_bytes_bytecode": bytecode_size,
            }
        rows.append(row)
    shutil.rmtree(scratch, ignore_errors=True)
    return rows
