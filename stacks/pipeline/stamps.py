"""Stamps, tree manifests and what each task produced.

A step writes its stamp last (inputs key + what it produced), so an interrupted step has none.
The products of a task are read back from its stamps, for `stacks clean` and `stacks info`.
"""

from __future__ import annotations

from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import Any

from stacks import __version__, hashing
from stacks.pipeline.run_context import (
    PUBLISH_STEPS,
    STACK_TASK,
    RunContext,
    archive_name,
    deployed_name,
    metadata_name,
    stack_manifest_path,
    task_name,
)


def matching_stamp(
    ctx: RunContext, step: str, env_name: str, inputs: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The stamp of a step if it was made from exactly these inputs, else None."""
    if inputs is None or task_name(step, env_name) in ctx.forced:
        return None
    stamp = hashing.read_stamp(ctx.stamp_path(step, env_name))
    if stamp is None or stamp.get("inputs") != hashing.hash_json(inputs):
        return None
    return stamp


def write_step_stamp(
    ctx: RunContext, step: str, env_name: str, inputs: dict[str, Any], outputs: dict[str, Any]
) -> None:
    hashing.write_stamp(
        ctx.stamp_path(step, env_name),
        {
            "step": step,
            "layer": env_name,
            "inputs": hashing.hash_json(inputs),
            "input_detail": inputs,
            "outputs": outputs,
            "stacks_version": __version__,
            "finished_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        },
    )


def manifest_path(ctx: RunContext, step: str, env_name: str) -> Path:
    """Where a step's tree manifest (for drift checks and verify) is kept."""
    return ctx.stamp_path(step, env_name).with_suffix(".manifest.json")


def build_manifest_path(ctx: RunContext, env_name: str) -> Path:
    """Where a build's tree manifest is kept."""
    return manifest_path(ctx, "build", env_name)


def tree_drift(tree: Path, manifest: Path) -> list[str]:
    """How a folder differs from its recorded manifest by stat data (cheap), or why it can't be checked."""
    if not tree.is_dir():
        return [f"missing: {tree}"]
    data = hashing.read_stamp(manifest)
    if data is None:
        return ["missing: its manifest"]
    try:
        recorded = hashing.TreeManifest.from_json(data)
    except (ValueError, TypeError):
        return ["unreadable: its manifest"]
    return recorded.stat_drift(tree, limit=5, skip=hashing.skip_bytecode)


# ---------------------------------------------------------------- task products


def task_stamp(ctx: RunContext, name: str) -> Path:
    """The stamp file of a task for this run's destination (stack manifests: `stamps/manifest/`)."""
    step, _, env_name = name.partition(":")
    return (
        ctx.stamp_path("manifest", step)
        if env_name == STACK_TASK
        else ctx.stamp_path(step, env_name)
    )


def recorded_stamps(ctx: RunContext, name: str) -> list[Path]:
    """Every stamp of a task: this run's, and for archive and export tasks those of other destinations."""
    step = name.partition(":")[0]
    current = task_stamp(ctx, name)
    if step not in PUBLISH_STEPS:
        return [current]
    keys = current.parent.parent
    found = sorted(key / current.name for key in keys.glob("*") if (key / current.name).is_file())
    legacy = keys / current.name  # from before stamps were kept per destination
    found += [legacy] if legacy.is_file() else []
    return found if current in found else [current, *found]


def task_products(ctx: RunContext, name: str) -> list[Path]:
    """What a task produced, as its stamps record it (lock files are sources: never listed).

    The stamps, the task's tree manifests, and the task's outputs: a runtime or build folder,
    archives with their metadata, exported layers with their metadata, stack manifests. An
    archive or export task lists what it made in every destination it has a stamp for, and what
    it would write in this run's folder (found there even when forgotten).
    """
    step, _, env_name = name.partition(":")
    if step == "lock":
        return []
    products: list[Path] = []
    for stamp in recorded_stamps(ctx, name):
        outputs = (hashing.read_stamp(stamp) or {}).get("outputs") or {}
        products += [stamp, *_outputs_of(ctx, step, env_name, stamp, outputs)]
    if step in PUBLISH_STEPS:
        products += _outputs_of(ctx, step, env_name, None, _expected_outputs(ctx, step, env_name))
    return list(dict.fromkeys(products))


def _outputs_of(
    ctx: RunContext, step: str, env_name: str, stamp: Path | None, outputs: dict[str, Any]
) -> list[Path]:
    """The files and folders one stamp's outputs name (a tree manifest sits next to its stamp)."""
    if env_name == STACK_TASK:
        return [Path(outputs["path"])] if isinstance(outputs.get("path"), str) else []
    products = [] if stamp is None else [stamp.with_suffix(".manifest.json")]
    if step == "runtime":
        products.append(ctx.runtime_dir(env_name))
    elif step == "build":
        products.append(ctx.build_dir(env_name))
    elif step == "archive" and isinstance(outputs.get("output_dir"), str):
        folder = Path(outputs["output_dir"])
        if _plain_name(outputs.get("archive_name")):
            products.append(folder / outputs["archive_name"])
        if _plain_name(outputs.get("metadata_name")):
            products.append(folder / "__stacks__" / "env_metadata" / outputs["metadata_name"])
    elif step == "export" and isinstance(outputs.get("export_dir"), str):
        folder = Path(outputs["export_dir"])
        if folder.name and _plain_name(outputs.get("install_target")):
            products.append(folder / outputs["install_target"])
            products.append(
                folder / "__stacks__" / "env_metadata" / metadata_name(ctx, env_name, tagged=False)
            )
    return products


def _expected_outputs(ctx: RunContext, step: str, env_name: str) -> dict[str, Any]:
    """The outputs an archive or export task writes in this run's folder, if they are there."""
    from stacks.pipeline.output_folders import EXPORT_MARK

    folder = ctx.output_dir if step == "archive" else ctx.export_dir
    if folder is None:
        return {}
    if env_name == STACK_TASK:
        return {"path": str(stack_manifest_path(ctx, step))}
    if step == "archive":
        return {
            "output_dir": str(folder),
            "archive_name": archive_name(ctx, env_name),
            "metadata_name": metadata_name(ctx, env_name, tagged=ctx.tag_outputs),
        }
    target = deployed_name(ctx, env_name)
    if not (folder / target / EXPORT_MARK).is_file():
        return {}  # not an export of ours: never removed on a guess
    return {"export_dir": str(folder), "install_target": target}


def remove_products(ctx: RunContext, name: str) -> list[Path]:
    """Remove what a task produced (`task_products`); return what was there to remove."""
    from stacks.atomic import remove_tree

    removed = []
    for path in task_products(ctx, name):
        if path.exists() or path.is_symlink():
            remove_tree(path)
            removed.append(path)
    if name.partition(":")[0] in PUBLISH_STEPS:
        for stamp in recorded_stamps(ctx, name):
            with suppress(OSError):
                stamp.parent.rmdir()  # a destination's stamp folder, once empty
    return removed


def _plain_name(name: Any) -> bool:
    """Whether a recorded name is a plain file name (a stamp must never steer a removal elsewhere)."""
    return isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name
