"""The benchmark scenarios: each measures one thing repeatedly against a baseline from the same run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.bench_deploy import deploy
from bench.bench_publish import bench_formats
from bench.measure import Finished, Measured, Row, Sample, repeat, run, sample_of
from bench.projects import STEPS, Bench, ran_names

# Modules a no-op run must not import (they load lazily, only for a step that needs them).
HEAVY_MODULES = ("doit", "requests", "urllib3", "yaml", "uv", "zstandard", "pbs_installer")


def paired(
    first: Callable[[], Measured], second: Callable[[], Measured], runs: int, *, warmup: int = 1
) -> tuple[Sample, Sample]:
    """Measure two things alternately (so drift on a shared machine hits both alike)."""
    for _ in range(warmup):
        first()
        second()
    a: list[Measured] = []
    b: list[Measured] = []
    for _ in range(runs):
        a.append(first())
        b.append(second())
    return sample_of(a), sample_of(b)


def imported_modules(importtime_stderr: str) -> dict[str, float]:
    """Top-level module -> cumulative import seconds, from `python -X importtime` output."""
    found: dict[str, float] = {}
    for line in importtime_stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if match:
            name = match.group(3)
            found[name] = max(found.get(name, 0.0), int(match.group(1)) / 1e6)
    return found


def heavy_imports(bench: Bench, *args: str) -> list[str]:
    """Which heavy modules a stacks command imports."""
    done = run(
        [sys.executable, "-X", "importtime", "-m", "stacks", *args], env=bench.env, check=True
    )
    modules = imported_modules(done.stderr)
    return sorted(name for name in modules if name.split(".")[0] in HEAVY_MODULES)


def ran_counts_of(names: tuple[str, ...]) -> str:
    """`lock/build/archive/export` counts of some task names, e.g. `1/1/1/1`."""
    return "/".join(str(sum(1 for n in names if n.startswith(f"{step}:"))) for step in STEPS)


def _assert_noop(bench: Bench, args: list[str], what: str) -> None:
    """Run a command twice if need be; fail unless its second run at the latest runs nothing."""
    for attempt in range(2):
        data = json.loads(bench.stacks(*args, "--json").stdout)
        ran = [t["task"] for t in data["tasks"] if t["status"] == "ran"]
        if not ran:
            return
        bench.log(
            f"{what}: not a no-op yet, ran {', '.join(ran)}" + (" (again)" if attempt else "")
        )
    raise RuntimeError(f"{what} is not a no-op: {', '.join(ran)} ran twice")


# ---------------------------------------------------------------- no-op runs and import time


def noop(bench: Bench) -> list[Row]:
    """A fully exported stack exported again with nothing changed; the CLI's import time."""
    demo = bench.demo()
    big = bench.generated(30, steps=("export",))
    rows = []
    python_pass = repeat(lambda: bench.python("-c", "pass").timing, bench.runs, warmup=1)
    for spec, label in ((demo, "demo, 3 layers"), (big, "generated, 30 layers")):
        _assert_noop(bench, ["export", str(spec)], f"export of {label}")
        sample = repeat(lambda spec=spec: bench.stacks("export", spec).timing, bench.runs)
        is_demo = spec == demo
        rows.append(
            Row(
                "no-op",
                f"stacks export ({label})",
                sample,
                baseline="python -c pass",
                baseline_sample=python_pass,
                target="< 300 ms" if is_demo else None,
                met=sample.median < 0.3 if is_demo else None,
            )
        )
    heavy = heavy_imports(bench, "export", str(demo))
    rows.append(
        Row(
            "no-op",
            "heavy modules imported by a no-op export",
            Sample((float(len(heavy)),)),
            unit="count",
            target="0 (" + ", ".join(HEAVY_MODULES) + ")",
            met=not heavy,
            note=", ".join(heavy) or "none",
        )
    )
    importtime = repeat(
        lambda: imported_modules(
            bench.python("-X", "importtime", "-c", "import stacks.cli.entry").stderr
        )["stacks.cli.entry"],
        bench.runs,
        warmup=1,
    )
    rows.append(
        Row(
            "no-op",
            "import stacks.cli.entry (-X importtime, cumulative)",
            importtime,
            target="< 100 ms",
            met=importtime.median < 0.1,
        )
    )
    wall, base = paired(
        lambda: bench.python("-c", "import stacks.cli.entry").timing,
        lambda: bench.python("-c", "pass").timing,
        bench.runs,
    )
    rows.append(
        Row(
            "no-op",
            'python -c "import stacks.cli.entry" (wall)',
            wall,
            baseline="python -c pass",
            baseline_sample=base,
            target="< 100 ms",
            met=wall.median < 0.1,
            paired=True,
        )
    )
    return rows


# ---------------------------------------------------------------- incremental changes


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    if old not in text:
        raise RuntimeError(f"{path}: {old!r} not found")
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def incremental(bench: Bench) -> list[Row]:
    """Change one input at a time; count the tasks that ran and time publish + export."""
    spec = bench.demo()
    launch = spec.parent / "launch" / "demo_app.py"
    original_spec = spec.read_text(encoding="utf-8")
    original_launch = launch.read_text(encoding="utf-8")
    app_line = 'requirements = ["idna>=3.4"]'
    framework_line = 'requirements = ["attrs>=23.1"]'

    def app_change(i: int) -> None:
        # Toggle a package in and out: every run is a real change to the app's lock.
        if i % 2 == 0:
            _edit(spec, app_line, 'requirements = ["idna>=3.4", "six"]')
        else:
            _edit(spec, 'requirements = ["idna>=3.4", "six"]', app_line)

    def framework_change(i: int) -> None:
        # A package the app does not use: the framework's lock changes, the app's stays identical.
        if i % 2 == 0:
            _edit(spec, framework_line, 'requirements = ["attrs>=23.1", "iniconfig"]')
        else:
            _edit(spec, 'requirements = ["attrs>=23.1", "iniconfig"]', framework_line)

    def launch_change(i: int) -> None:
        launch.write_text(original_launch + f"\n# benchmark edit {i}\n", encoding="utf-8")

    app = {"lock:app-demo", "build:app-demo", "archive:app-demo", "export:app-demo"}
    framework = {f"{step}:framework-attrs" for step in ("lock", "build", "archive", "export")}
    cases = [
        ("an app's requirements", app_change, app, "the app's 4 steps"),
        (
            "a framework's requirements (apps' locks identical)",
            framework_change,
            # The app above is re-resolved against the new pins (it cannot be known unchanged
            # without resolving); its pylock comes out identical, so nothing else of it runs.
            framework | {"lock:app-demo"},
            "the framework's 4 steps + the app's re-lock",
        ),
        (
            "an app's launch module",
            launch_change,
            app - {"lock:app-demo"},
            "the app's build/archive/export",
        ),
    ]
    rows = []
    try:
        for label, change, expected, expected_text in cases:
            seconds: list[Measured] = []
            seen: list[set[str]] = []
            for i in range(bench.runs):
                change(i)
                publish = bench.stacks("publish", spec, "--json")
                export = bench.stacks("export", spec, "--json")
                seconds.append((publish.seconds + export.seconds, publish.cpu + export.cpu))
                seen.append(set(ran_names(publish, export)))
            distinct = sorted({tuple(sorted(names)) for names in seen})
            counts = [ran_counts_of(names) for names in distinct]
            rows.append(
                Row(
                    "incremental",
                    f"change {label}: publish + export",
                    sample_of(seconds),
                    target=f"ran {expected_text}",
                    met=all(names == expected for names in seen),
                    note=" | ".join(
                        f"ran {c} (lock/build/archive/export): {', '.join(names)}"
                        for c, names in zip(counts, distinct, strict=True)
                    ),
                )
            )
    finally:
        spec.write_text(original_spec, encoding="utf-8")
        launch.write_text(original_launch, encoding="utf-8")
        bench.stacks("publish", spec)
        bench.stacks("export", spec)
    return rows


# ---------------------------------------------------------------- cold build vs raw uv


def _raw_uv(bench: Bench, spec: Path) -> tuple[float, float]:
    """Make a stack's environments by hand with uv: copy each runtime, then venv + install each layer."""
    from uv import find_uv_bin

    from stacks.spec import LayerKind, load_spec

    uv = find_uv_bin()
    stack = load_spec(spec)
    out = bench.root / "raw-uv"
    bench.set_aside(out)
    out.mkdir()
    done: list[Finished] = []
    for layer in stack.of_kind(LayerKind.RUNTIME):
        runtime = _private_runtime(bench, spec, layer.env_name)
        done.append(run(["cp", "-al", runtime, out / layer.env_name]))
    for layer in stack.layers:
        if layer.kind is LayerKind.RUNTIME:
            continue
        base = out / layer.runtime / "bin" / "python3"
        folder = out / layer.env_name
        lock_name = layer.env_name.replace(".", "_")
        pylock = spec.parent / "requirements" / layer.env_name / f"pylock.{lock_name}.toml"
        done.append(run([uv, "venv", "-q", "--no-config", "--python", base, folder], env=bench.env))
        install = [uv, "pip", "install", "-q", "--no-config", "--link-mode", "hardlink"]
        install += ["--python", folder / "bin" / "python"]
        install += ["--preview-features", "pylock", "-r", pylock]
        done.append(run(install, env=bench.env))
    return sum(d.seconds for d in done), sum(d.cpu for d in done)


def _private_runtime(bench: Bench, spec: Path, name: str) -> Path:
    """A copy of a project's provided runtime for the raw uv side to link from (made once).

    Linking the project's own runtime files changes their inodes' ctime, which uv takes for
    a changed interpreter: the next `stacks build` then paid uv's interpreter query again
    (~0.2 s on the big stack), a cost only the benchmark's alternation caused.
    """
    copy = bench.root / "raw-uv-runtimes" / spec.parent.name / name
    if not copy.exists():
        copy.parent.mkdir(parents=True, exist_ok=True)
        run(["cp", "-a", spec.parent / "cache" / "runtimes" / name, copy])
    return copy


def _cold_stacks_build(bench: Bench, spec: Path) -> tuple[float, float]:
    """`stacks build` with no build folder yet (locks and the provided runtime in place)."""
    cache = spec.parent / "cache"
    for folder in (cache / "build", cache / "stamps" / "build"):
        bench.set_aside(folder)
    return bench.stacks("build", spec).timing


def cold_build(bench: Bench) -> list[Row]:
    """`stacks build` from no build folders against the same environments made by raw uv."""
    rows = []
    for spec, label in (
        (bench.demo(), "demo, 3 layers"),
        (bench.parallel(), "runtime + 4 numpy frameworks"),
    ):
        ours, raw = paired(
            lambda spec=spec: _cold_stacks_build(bench, spec),
            lambda spec=spec: _raw_uv(bench, spec),
            bench.runs,
        )
        row = Row(
            "cold build",
            f"stacks build, no build folders yet ({label})",
            ours,
            baseline="cp -al runtime + uv venv + uv pip install -r pylock, per layer",
            baseline_sample=raw,
            target="<= 1.25x raw uv",
            paired=True,
        )
        row.met = row.ratio is not None and row.ratio <= 1.25
        rows.append(row)
    bench.stacks("export", bench.demo())  # the exports hard-link the rebuilt trees: refresh them
    return rows


# ---------------------------------------------------------------- parallel


def parallel(bench: Bench) -> list[Row]:
    """Four independent frameworks: lock (fresh resolution) and build (no build folders), -n 1 vs -n 2."""
    spec = bench.parallel()
    cache = spec.parent / "cache"

    def lock(jobs: str) -> tuple[float, float]:
        return bench.stacks("lock", spec, "--reset-lock", "framework-*", "-n", jobs).timing

    def build(jobs: str) -> tuple[float, float]:
        for folder in (
            *(cache / "build").glob("framework-*"),
            *(cache / "stamps" / "build").glob("framework-*"),
        ):
            bench.set_aside(folder)
        return bench.stacks("build", spec, "--include", "framework-*", "-n", jobs).timing

    rows = []
    for step, measure in (("lock", lock), ("build", build)):
        one, two = paired(
            lambda measure=measure: measure("1"),
            lambda measure=measure: measure("2"),
            bench.runs,
        )
        row = Row(
            "parallel",
            f"stacks {step}, 4 independent frameworks, -n 2",
            two,
            baseline="-n 1",
            baseline_sample=one,
            target="<= 0.65x -n 1",
            paired=True,
        )
        row.met = row.ratio is not None and row.ratio <= 0.65
        rows.append(row)
    return rows


# ---------------------------------------------------------------- publish formats


def publish(bench: Bench) -> list[Row]:
    """Each archive format on the demo's runtime layer, against tar piped into xz/zstd/gzip."""
    spec = bench.demo()
    tree = spec.parent / "cache" / "build" / "cpython-3.12"
    results = {r.fmt: r for r in bench_formats(tree, layered=False, runs=bench.runs)}
    rows = []
    xz = results["tar.xz"]
    for fmt, result in results.items():
        ours = Sample(result.seconds, result.cpu)
        row = Row(
            "publish",
            f"{fmt} of the runtime layer ({result.size / 1e6:.1f} MB)",
            ours,
            baseline=result.reference,
            baseline_sample=Sample(result.ref_seconds, result.ref_cpu)
            if result.ref_seconds
            else None,
            extra={"size": result.size, "reference_size": result.ref_size},
            paired=True,
        )
        if result.ref_size:
            row.note = f"size {result.size / result.ref_size:.3f}x the reference's"
        if fmt == "tar.xz":
            row.target = "time <= xz -T0"
            row.met = row.ratio is not None and row.ratio <= 1.0
        if fmt == "tar.zst":
            speedup = Sample(xz.seconds).median / ours.median
            size_ratio = result.size / xz.size
            row.target = ">= 15x faster than our tar.xz, <= 1.2x its size"
            row.met = speedup >= 15 and size_ratio <= 1.2
            row.note += f"; {speedup:.1f}x faster than our tar.xz at {size_ratio:.3f}x its size"
        rows.append(row)
    return rows


# ---------------------------------------------------------------- scale


def scale(bench: Bench) -> list[Row]:
    """A generated 200-layer stack, all locked: `show` and a no-op `lock`, against the demo."""
    demo = bench.demo()
    spec = bench.generated(200, steps=("lock",))
    _assert_noop(bench, ["lock", str(spec)], "lock of the 200-layer stack")
    rows = []
    for args, label, limit in (
        (["show"], "stacks show", 0.5),
        (["lock"], "stacks lock, all locked (no-op)", 2.0),
        (["build", "--dry-run"], "stacks build --dry-run (plans 200 builds)", None),
    ):
        big, small = paired(
            lambda args=args: bench.stacks(*args, spec).timing,
            lambda args=args: bench.stacks(*args, demo).timing,
            bench.runs,
        )
        rows.append(
            Row(
                "scale",
                f"{label}, 200 layers",
                big,
                baseline="the same on the demo (3 layers)",
                baseline_sample=small,
                target=None if limit is None else f"< {limit * 1000:.0f} ms",
                met=None if limit is None else big.median < limit,
                paired=True,
            )
        )
    return rows


def _show_once(spec: Path, env: dict[str, str]) -> tuple[float, float, float]:
    """One `stacks show` with its output thrown away: wall seconds, CPU seconds, peak bytes."""
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "stacks", "show", str(spec)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    stderr = child.stderr.read().decode() if child.stderr else ""
    if child.stderr:
        child.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"stacks show {spec} failed:\n{stderr[-4000:]}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024.0


def scale_graph(bench: Bench) -> list[Row]:
    """`stacks show` on a chain of N frameworks and on N frameworks side by side: the time per
    framework should stay flat as N grows (the spec graph and the tree are linear in size)."""
    from bench.gen_spec import shaped_spec

    rows = []
    for shape, sizes in (("chain", (500, 1000, 2000, 3000)), ("wide", (500, 1000, 2000, 3000))):
        first_per_layer: float | None = None
        for size in sizes:
            folder = bench.root / f"graph-{shape}-{size}"
            (folder / "launch").mkdir(parents=True, exist_ok=True)
            (folder / "launch" / "app_000.py").write_text("print('app')\n", encoding="utf-8")
            spec = folder / "stack.toml"
            spec.write_text(shaped_spec(shape, size), encoding="utf-8")
            runs = [_show_once(spec, bench.env) for _ in range(bench.runs)]
            sample = sample_of([(wall, cpu) for wall, cpu, _ in runs])
            peak = max(rss for _, _, rss in runs)
            per_layer = sample.median / size
            first_per_layer = first_per_layer or per_layer
            ratio = per_layer / first_per_layer
            row = Row(
                "scale",
                f"stacks show, {shape} of {size} frameworks",
                sample,
                note=f"{per_layer * 1e6:.0f} us per framework, {ratio:.2f}x that at"
                f" {sizes[0]}; peak {peak / 1e6:.0f} MB",
                extra={"per_layer_seconds": per_layer, "ratio": ratio, "peak_bytes": peak},
            )
            if size == sizes[-1]:
                row.target = "< 2 s, < 200 MB, time per framework <= 2x that at 500"
                row.met = sample.median < 2.0 and peak < 200e6 and ratio <= 2.0
            rows.append(row)
    return rows


SCENARIOS: dict[str, Callable[[Bench], list[Row]]] = {
    "no-op": noop,
    "incremental": incremental,
    "cold-build": cold_build,
    "parallel": parallel,
    "publish": publish,
    "scale": scale,
    "scale-graph": scale_graph,
    "deploy": deploy,
}
