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
    """The big-framework stack, published as tar.zst into `<project>/_artifacts`."""

    def make(folder: Path) -> Path:
        folder.mkdir(parents=True)
        (folder / "app.py").write_text("import pandas, scipy, sklearn\n", encoding="utf-8")
        spec = folder / "stack.toml"
        spec.write_text(BIG_SPEC, encoding="utf-8")
        bench.stacks("publish", spec, "--format", "tar.zst", "-n", "2")
        return spec

    return bench.setup("big-framework", make)


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def deploy(bench: Bench) -> list[Row]:
    """`stacks deploy` (and its unpack alone) of the big stack vs `zstd -dc | tar -x`, paired."""
    spec = big_stack(bench)
    archives = spec.parent / "_artifacts"
    scratch = bench.root / "deploy-scratch"
    names = sorted(p.name for p in archives.glob("*.tar.zst"))
    size = sum((archives / n).stat().st_size for n in names)

    def tar_x() -> tuple[float, float]:
        target = _fresh(scratch / "tar")
        target.mkdir(parents=True)
        script = " && ".join(f"zstd -dcq {archives / n} | tar -x -C {target}" for n in names)
        done = run(["sh", "-c", script])
        return done.seconds, done.cpu

    def ours() -> tuple[float, float]:
        done = bench.stacks("-q", "deploy", archives, "--target", _fresh(scratch / "ours"))
        return done.seconds, done.cpu

    def unpack() -> tuple[float, float]:
        target = _fresh(scratch / "unpack")
        done = run([sys.executable, "-c", _UNPACK_ONLY, str(archives), str(target)], env=bench.env)
        return done.seconds, done.cpu

    rows = []
    for label, measure, limit in (
        ("unpack only (checked, every entry)", unpack, 1.5),
        ("stacks deploy (unpack, configure, compile)", ours, 3.0),
    ):
        a: list[float | tuple[float, float]] = []
        b: list[float | tuple[float, float]] = []
        tar_x(), measure()  # warm the page cache for both
        for _ in range(bench.runs):
            a.append(measure())
            b.append(tar_x())
        row = Row(
            "deploy",
            f"{label}, 3 layers, {size / 1e6:.0f} MB of tar.zst",
            sample_of(a),
            baseline="zstd -dc | tar -x of the same archives",
            baseline_sample=sample_of(b),
            target=f"<= {limit}x tar -x",
            paired=True,
        )
        row.met = row.ratio is not None and row.ratio <= limit
        row.note = f"{row.ratio:.2f}x tar -x" if row.ratio is not None else ""
        rows.append(row)
    shutil.rmtree(scratch, ignore_errors=True)
    return rows
