"""Scenarios against raw tools: a new project's lock against raw uv, the big-framework stack
(build, publish, no-op against uv, tar | zstd and the interpreter), the whole pipeline's no-op."""

from __future__ import annotations

import json
import shutil
import statistics
from collections.abc import Callable
from pathlib import Path

from bench.bench_publish import _reference
from bench.measure import Finished, Row, Sample, run
from bench.projects import Bench, stacks_command
from bench.scenarios import _cold_stacks_build, _raw_uv, paired

STORE_OFF = {"STACKS_RUNTIME_STORE": "off"}


def _task_seconds(done: Finished, step: str) -> dict[str, float]:
    """layer -> seconds of each task of `step` that ran, from `--json` output."""
    return {
        task["layer"]: float(task["seconds"])
        for task in json.loads(done.stdout)["tasks"]
        if task["step"] == step and task["status"] == "ran" and task["layer"] != "__stack__"
    }


# ---------------------------------------------------------------- cold lock vs raw uv


def _new_demo_project(bench: Bench) -> Path:
    """A copy of the demo's sources in a fresh folder: no locks, no cache (a new project)."""
    folder = bench.root / "cold-lock"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    demo = bench.demo()
    shutil.copytree(demo.parent / "launch", folder / "launch")
    shutil.copy2(demo, folder / demo.name)
    return folder / demo.name


def _raw_uv_lock(bench: Bench, spec: Path) -> tuple[tuple[float, float], dict[str, float]]:
    """`uv lock` + `uv export` of the projects stacks generated for each layer, in fresh folders."""
    from uv import find_uv_bin

    from stacks.spec import load_spec

    uv = find_uv_bin()
    stack = load_spec(spec)
    out = bench.root / "raw-lock"
    shutil.rmtree(out, ignore_errors=True)
    wall = cpu = 0.0
    per_layer: dict[str, float] = {}
    for layer in stack.layers:
        folder = out / layer.env_name
        folder.mkdir(parents=True)
        for name in ("pyproject.toml", "uv.toml"):
            shutil.copy2(spec.parent / "cache" / "locking" / layer.env_name / name, folder / name)
        python = spec.parent / "cache" / "runtimes" / layer.runtime / "bin" / "python"
        common = ["--project", folder, "--config-file", folder / "uv.toml", "--python", python]
        common += ["--no-config", "--no-managed-python", "--no-python-downloads", "--quiet"]
        export = ["export", "--frozen", "--format", "pylock.toml", "--no-header"]
        export += ["--no-emit-project", "--no-annotate"]
        done = [run([uv, "lock", *common], env=bench.env, cwd=folder)]
        done.append(run([uv, *export, *common], env=bench.env, cwd=folder))
        per_layer[layer.env_name] = sum(d.seconds for d in done)
        wall += per_layer[layer.env_name]
        cpu += sum(d.cpu for d in done)
    return (wall, cpu), per_layer


def cold_lock(bench: Bench) -> list[Row]:
    """A new project's first `stacks lock` (runtime store on, then off) against raw uv."""
    demo = bench.demo()
    ours_layers: list[dict[str, float]] = []
    raw_layers: list[dict[str, float]] = []

    def ours(extra_env: dict[str, str]) -> tuple[float, float]:
        spec = _new_demo_project(bench)
        command = [*stacks_command(), "lock", spec, "--json"]
        done = run(command, env={**bench.env, **extra_env})
        if not extra_env:
            ours_layers.append(_task_seconds(done, "lock"))
        return done.timing

    def raw() -> tuple[float, float]:
        timing, per_layer = _raw_uv_lock(bench, demo)
        raw_layers.append(per_layer)
        return timing

    stacks_lock, raw_lock = paired(lambda: ours({}), raw, bench.runs)
    ours_layers[:] = ours_layers[-bench.runs :]
    raw_layers[:] = raw_layers[-bench.runs :]
    ratios = {
        env: statistics.median(
            o[env] / r[env] for o, r in zip(ours_layers, raw_layers, strict=True)
        )
        for env in raw_layers[0]
    }
    row = Row(
        "cold lock",
        "stacks lock of a new project (demo, 3 layers; runtime store warm)",
        stacks_lock,
        baseline="uv lock + uv export of the same uv projects, per layer",
        baseline_sample=raw_lock,
        target="each layer's lock <= 1.3x raw uv",
        met=max(ratios.values()) <= 1.3,
        note="per layer: " + ", ".join(f"{env} {ratio:.2f}x" for env, ratio in ratios.items()),
        paired=True,
        extra={"layer_ratios": ratios},
    )
    off, on = paired(lambda: ours(STORE_OFF), lambda: ours({}), bench.runs, warmup=0)
    store = Row(
        "cold lock",
        "the same with the runtime store off (STACKS_RUNTIME_STORE=off)",
        off,
        baseline="store on",
        baseline_sample=on,
        paired=True,
    )
    return [row, store]


# ---------------------------------------------------------------- whole-pipeline no-op


def _noop_pipeline(bench: Bench, spec: Path, label: str) -> Row:
    """`stacks publish` + `stacks export` with everything current, against `python -c pass`."""
    # tar.zst: a tar.xz of the big stack would take minutes to make current first.
    commands = (["publish", spec, "--format", "tar.zst"], ["export", spec])
    for command in commands:
        bench.stacks(*command)  # current (what an earlier scenario left is redone here)
        tasks = json.loads(bench.stacks(*command, "--json").stdout)["tasks"]
        if any(task["status"] == "ran" for task in tasks):
            raise RuntimeError(f"{command[0]} of {label} is not a no-op")

    def both() -> tuple[float, float]:
        published, exported = (bench.stacks(*command) for command in commands)
        return published.seconds + exported.seconds, published.cpu + exported.cpu

    ours, base = paired(both, lambda: bench.python("-c", "pass").timing, bench.runs)
    return Row(
        "no-op",
        f"stacks publish --format tar.zst + export, all current ({label})",
        ours,
        baseline="python -c pass",
        baseline_sample=base,
        paired=True,
    )


def pipeline_noop(bench: Bench) -> list[Row]:
    """The whole pipeline's no-op (publish + export: every step's check) on the demo."""
    return [_noop_pipeline(bench, bench.demo(), "demo, 3 layers")]


# ---------------------------------------------------------------- the big-framework stack


def _installed_bytes(spec: Path) -> int:
    """Bytes of the stack's build trees (each inode once: the runtime layer links its runtime)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for path in (spec.parent / "cache" / "build").rglob("*"):
        info = path.lstat()
        if path.is_file() and not path.is_symlink() and (info.st_dev, info.st_ino) not in seen:
            seen.add((info.st_dev, info.st_ino))
            total += info.st_size
    return total


def _publish_zst(bench: Bench, spec: Path, number: list[int]) -> tuple[float, float]:
    number[0] += 1
    out = bench.root / "big-out"
    shutil.rmtree(out, ignore_errors=True)
    done = bench.stacks(
        "publish", spec, "--format", "tar.zst", "--output-dir", out / str(number[0]), "--json"
    )
    archived = _task_seconds(done, "archive")
    if len(archived) != 3:
        raise RuntimeError(f"publish archived {sorted(archived)}, not the 3 layers")
    return done.timing


def _reference_zst(bench: Bench, spec: Path) -> tuple[float, float]:
    from bench.measure import children_cpu

    out = bench.root / "big-ref"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    cpu = children_cpu()
    seconds = 0.0
    for tree in sorted((spec.parent / "cache" / "build").iterdir()):
        found = _reference(tree, "tar.zst", out / f"{tree.name}.tar.zst")
        assert found is not None, "tar and zstd are needed"
        seconds += found[1]
    return seconds, children_cpu() - cpu


def _cold_build_forgetting(
    bench: Bench, spec: Path, forget: tuple[str, ...]
) -> tuple[float, float]:
    """A cold build after removing some of the project's records from its cache folder."""
    for name in forget:
        (spec.parent / "cache" / name).unlink(missing_ok=True)
    return _cold_stacks_build(bench, spec)


def big(bench: Bench) -> list[Row]:
    """The big-framework stack: cold build vs raw uv, tar.zst publish vs tar | zstd, no-op."""
    spec = bench.big()
    size = _installed_bytes(spec)
    rows = [
        Row(
            "big",
            "installed: the build trees of runtime + scipy/pandas/pyarrow/sklearn/matplotlib + app",
            Sample((float(size),)),
            unit="B",
            target=">= 400 MB",
            met=size >= 400e6,
        )
    ]
    ours, raw = paired(
        lambda: _cold_stacks_build(bench, spec), lambda: _raw_uv(bench, spec), bench.runs
    )
    row = Row(
        "big",
        "stacks build, no build folders yet (big framework, 3 layers)",
        ours,
        baseline="cp -al runtime + uv venv + uv pip install -r pylock, per layer",
        baseline_sample=raw,
        target="<= 1.25x raw uv",
        paired=True,
    )
    row.met = row.ratio is not None and row.ratio <= 1.25
    rows.append(row)
    # What the project's records of checked files save, measured against the build above.
    for forget, label in (
        (("file-digests.json",), "without file-digests.json (the manifest hashes every file)"),
        (
            ("file-digests.json", "verified-files.json"),
            "as a new project's first build (no file records: RECORD and manifest hash all)",
        ),
    ):
        without, with_records = paired(
            lambda forget=forget: _cold_build_forgetting(bench, spec, forget),
            lambda: _cold_stacks_build(bench, spec),
            bench.runs,
        )
        rows.append(
            Row(
                "big",
                f"the same build {label}",
                without,
                baseline="with them",
                baseline_sample=with_records,
                paired=True,
            )
        )
    number = [0]
    zst, reference = paired(
        lambda: _publish_zst(bench, spec, number), lambda: _reference_zst(bench, spec), bench.runs
    )
    row = Row(
        "big",
        "stacks publish --format tar.zst (3 layers, from built trees)",
        zst,
        baseline="tar --sort=name | zstd -T0 -6 of each build tree",
        baseline_sample=reference,
        target="<= 1.2x tar | zstd",
        paired=True,
    )
    row.met = row.ratio is not None and row.ratio <= 1.2
    rows.append(row)
    shutil.rmtree(bench.root / "big-out", ignore_errors=True)
    shutil.rmtree(bench.root / "big-ref", ignore_errors=True)
    rows.append(_noop_pipeline(bench, spec, "big framework, 3 layers"))
    return rows


SCENARIOS: dict[str, Callable[[Bench], list[Row]]] = {
    "cold-lock": cold_lock,
    "pipeline-no-op": pipeline_noop,
    "big": big,
}
OPT_IN = frozenset({"big"})  # minutes, and ~150 MB of wheels on a cold uv cache
