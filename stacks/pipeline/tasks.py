"""Turn a StackSpec into doit tasks: names, dependencies, stamps and up-to-date checks.

Every step writes a stamp last (inputs key + what it produced). A task is up to date
when its stamp's inputs key equals the key computed now from small files (lock
metadata, module hashes, the stamps of the steps it consumes) and its outputs are
still in place. Nothing here depends on doit's own database, so losing or
corrupting that database never causes a wrong result or a needless rebuild.

The pieces live by what they hold: `run_context` (the RunContext and names), `stamps`
(stamps, tree manifests, task products), `build_steps` and `publish_steps` (each step's
inputs, up-to-date check and action). This module only wires them into task dicts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from stacks import hashing
from stacks.pipeline.build_steps import (
    build_current,
    build_drift,
    build_inputs,
    lock_current,
    resets_lock,
    run_build,
    run_lock,
    run_runtime,
    run_step,
    runtime_current,
    runtime_drift,
    runtime_inputs,
)
from stacks.pipeline.publish_steps import (
    archive_current,
    export_current,
    manifest_current,
    manifest_inputs,
    publish_inputs,
    run_archive,
    run_export,
    run_manifest,
)
from stacks.pipeline.run_context import STACK_TASK, RunContext, builds_here, task_name
from stacks.pipeline.stamps import remove_products, task_stamp
from stacks.spec import LayerKind, LayerSpec


def _task(
    step: str, layer: LayerSpec, ctx: RunContext, action: Any, check: Any, deps: list[str], doc: str
) -> dict[str, Any]:
    if step == "lock":
        from stacks.lock.locking import lock_paths

        paths = lock_paths(ctx.spec, layer)
        targets = [os.fspath(paths.pylock), os.fspath(paths.meta)]
    else:
        targets = [os.fspath(ctx.stamp_path(step, layer.env_name))]
    return {
        "name": layer.env_name,
        "actions": [(run_step, [action, ctx, layer.env_name])],
        "clean": [(remove_products, [ctx, task_name(step, layer.env_name)])],
        "uptodate": [(check, [ctx, layer.env_name])],
        "task_dep": deps,
        "targets": targets,
        "doc": doc,
        "verbosity": 2,
    }


def runtime_tasks(ctx: RunContext) -> Iterator[dict[str, Any]]:
    """runtime:<env> for every runtime layer."""
    for layer in ctx.spec.of_kind(LayerKind.RUNTIME):
        source = layer.source.describe() if layer.source else "?"
        yield _task(
            "runtime",
            layer,
            ctx,
            run_runtime,
            runtime_current,
            [],
            f"provide {layer.python_implementation} ({source})",
        )


def lock_tasks(ctx: RunContext) -> Iterator[dict[str, Any]]:
    """lock:<env> for every layer: after its runtime and the locks below it."""
    for layer in ctx.spec.layers:
        deps = [task_name("runtime", layer.runtime)] + [
            task_name("lock", dep) for dep in layer.dependencies
        ]
        yield _task(
            "lock",
            layer,
            ctx,
            run_lock,
            lock_current,
            deps,
            f"lock {layer.env_name} for {', '.join(layer.platforms)}",
        )


def build_tasks(ctx: RunContext) -> Iterator[dict[str, Any]]:
    """build:<env> for every layer targeting this platform."""
    for layer in ctx.spec.layers:
        if not builds_here(ctx, layer):
            continue
        deps = [task_name("lock", layer.env_name), task_name("runtime", layer.runtime)]
        deps += [task_name("build", dep) for dep in layer.dependencies]
        yield _task("build", layer, ctx, run_build, build_current, deps, f"build {layer.env_name}")


def archive_tasks(ctx: RunContext) -> Iterator[dict[str, Any]]:
    """archive:<env> for every built layer, then the stack manifest."""
    if ctx.output_dir is None:
        return
    names = []
    for layer in ctx.spec.layers:
        if builds_here(ctx, layer):
            names.append(task_name("archive", layer.env_name))
            yield _task(
                "archive",
                layer,
                ctx,
                run_archive,
                archive_current,
                [task_name("build", layer.env_name)],
                f"archive {layer.env_name}",
            )
    yield _manifest_task(ctx, "archive", _selected_tasks(ctx, names))


def export_tasks(ctx: RunContext) -> Iterator[dict[str, Any]]:
    """export:<env> for every built layer (after the layers below it), then the stack manifest."""
    if ctx.export_dir is None:
        return
    names = []
    for layer in ctx.spec.layers:
        if builds_here(ctx, layer):
            names.append(task_name("export", layer.env_name))
            deps = [task_name("build", layer.env_name)] + [
                task_name("export", dep) for dep in layer.dependencies
            ]
            yield _task(
                "export", layer, ctx, run_export, export_current, deps, f"export {layer.env_name}"
            )
    yield _manifest_task(ctx, "export", _selected_tasks(ctx, names))


def _selected_tasks(ctx: RunContext, names: list[str]) -> list[str]:
    """The task names of the layers this run is about (all without `--include`)."""
    if ctx.selected is None:
        return names
    return [name for name in names if name.partition(":")[2] in ctx.selected]


def _manifest_task(ctx: RunContext, step: str, names: list[str]) -> dict[str, Any]:
    return {
        "name": STACK_TASK,
        "actions": [(run_step, [run_manifest, ctx, step])],
        "clean": [(remove_products, [ctx, task_name(step, STACK_TASK)])],
        "uptodate": [(manifest_current, [ctx, step])],
        "task_dep": names,
        "targets": [os.fspath(ctx.stamp_path("manifest", step))],
        "doc": f"write the stack manifest of the {'publish' if step == 'archive' else 'export'} folder",
        "verbosity": 2,
    }


GENERATORS = {
    "runtime": runtime_tasks,
    "lock": lock_tasks,
    "build": build_tasks,
    "archive": archive_tasks,
    "export": export_tasks,
}

CHECKS = {
    "runtime": runtime_current,
    "lock": lock_current,
    "build": build_current,
    "archive": archive_current,
    "export": export_current,
}


def all_tasks(ctx: RunContext) -> Iterator[tuple[str, dict[str, Any]]]:
    """(basename, task dict) for every task of the stack."""
    for step, generator in GENERATORS.items():
        for task in generator(ctx):
            yield step, task


def step_inputs(ctx: RunContext, step: str, env_name: str) -> dict[str, Any] | None:
    """The current inputs of a step (None when a prerequisite is missing)."""
    if env_name == STACK_TASK:
        return manifest_inputs(ctx, step)
    if step == "runtime":
        return runtime_inputs(ctx, env_name)
    if step == "build":
        return build_inputs(ctx, env_name)
    if step in ("archive", "export"):
        return publish_inputs(ctx, env_name, step)
    return None


def is_current(ctx: RunContext, step: str, env_name: str) -> bool:
    """The up-to-date check of any task."""
    if env_name == STACK_TASK:
        return manifest_current(ctx, step)
    return CHECKS[step](ctx, env_name)


def explain(ctx: RunContext, step: str, env_name: str) -> list[str]:
    """Why a task is not up to date, in words."""
    if task_name(step, env_name) in ctx.forced:
        return ["forced (--clean or --force)"]
    if step == "lock":
        from stacks.lock.locking import lock_state

        if resets_lock(ctx, env_name):
            return ["--reset-lock asks for a fresh resolution"]
        state = lock_state(ctx.spec, ctx.spec.layer(env_name), ctx.lock_options)
        return list(state.reasons) or ["no valid lock"]
    inputs = step_inputs(ctx, step, env_name)
    if inputs is None:
        return ["what it is made from is not there yet (an earlier step must run first)"]
    stamp = hashing.read_stamp(task_stamp(ctx, task_name(step, env_name)))
    if stamp is None:
        if step == "archive":
            return ["never published to this folder with these settings (no stamp)"]
        if step == "export":
            return ["never exported to this folder with these settings (no stamp)"]
        return ["never done (no stamp)"]
    recorded = stamp.get("input_detail") or {}
    changed = [
        name
        for name in sorted(set(inputs) | set(recorded))
        if inputs.get(name) != recorded.get(name)
    ]
    if changed:
        return [f"{name} changed" for name in changed]
    if step == "build":
        return [f"build folder drifted: {item}" for item in build_drift(ctx, env_name)] or [
            "outputs missing"
        ]
    if step == "runtime":
        return [f"runtime folder drifted: {item}" for item in runtime_drift(ctx, env_name)] or [
            "outputs missing"
        ]
    return ["outputs missing or changed since the last run"]
