"""The archive and export steps and their stack manifests: inputs, up-to-date checks, actions.

Each action is a module-level function of (RunContext, layer name or step), so tasks pickle
for parallel runs; the archives and exports themselves are written by `publishing`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from stacks import hashing
from stacks.errors import StacksError
from stacks.pipeline.build_steps import build_digest, module_hashes, provided_runtime, task_failure
from stacks.pipeline.run_context import (
    STEP_FORMATS,
    RunContext,
    archive_name,
    deployed_name,
    metadata_name,
    output_root,
    stack_manifest_path,
    task_name,
)
from stacks.pipeline.stamps import manifest_path, matching_stamp, tree_drift, write_step_stamp
from stacks.spec import LayerKind

# ---------------------------------------------------------------- archive:<env> and export:<env>


def publish_inputs(ctx: RunContext, env_name: str, step: str) -> dict[str, Any] | None:
    """Inputs of archiving or exporting a layer: its build's content hash and its metadata."""
    digest = build_digest(ctx, env_name)
    if digest is None:
        return None
    layer = ctx.spec.layer(env_name)
    return {
        "format": STEP_FORMATS[step],
        "build": digest,
        "deployed": deployed_name(ctx, env_name),
        "lower layers": [deployed_name(ctx, dep) for dep in layer.dependencies],
        "metadata": layer_metadata(ctx, env_name),
        "archive": [archive_name(ctx, env_name), ctx.archive_format] if step == "archive" else None,
        "export": [str(ctx.export_dir), ctx.symlinks] if step == "export" else None,
    }


def layer_metadata(ctx: RunContext, env_name: str) -> dict[str, Any]:
    """The publish/export metadata of a layer, without archive fields (venvstacks field names)."""
    from stacks.lock.locking import read_lock_meta

    layer = ctx.spec.layer(env_name)
    meta = read_lock_meta(ctx.spec, layer)
    runtime = provided_runtime(ctx, layer.runtime)
    version = runtime.get("python_version") or layer.python_version
    data: dict[str, Any] = {
        "layer_name": env_name,
        "install_target": deployed_name(ctx, env_name),
        "kind": layer.kind.value,
        "requirements_hash": meta.requirements_hash if meta else None,
        # As venvstacks: an unversioned layer always publishes 1 (its archive_build counts on).
        "lock_version": (meta.lock_version if layer.versioned else 1) if meta else None,
        "locked_at": meta.locked_at if meta else None,
        "runtime_layer": deployed_name(ctx, layer.runtime),
        "python_implementation": f"cpython@{version}",
        "bound_to_implementation": layer.kind is LayerKind.RUNTIME,
    }
    if layer.kind is LayerKind.RUNTIME:
        data["runtime_source"] = runtime.get("source")
    else:
        data["required_layers"] = [deployed_name(ctx, dep) for dep in layer.linearised]
    if layer.kind is LayerKind.APPLICATION:
        hashes = module_hashes(layer)
        data["app_launch_module"] = layer.launch_module_name
        data["app_launch_module_hash"] = hashes[0][1]
        if layer.support_modules:
            from stacks.spec import module_name

            data["app_support_modules"] = [
                {"name": module_name(path), "hash": digest}
                for path, (_, digest) in zip(layer.support_modules, hashes[1:], strict=True)
            ]
    return data


def archive_current(ctx: RunContext, env_name: str) -> bool:
    """Up-to-date check of archive:<env>: same build and metadata, archive still there."""
    stamp = matching_stamp(ctx, "archive", env_name, publish_inputs(ctx, env_name, "archive"))
    if stamp is None or ctx.output_dir is None:
        return False
    outputs = stamp.get("outputs", {})
    archive = ctx.output_dir / outputs.get("archive_name", "")
    metadata = ctx.output_dir / "__stacks__" / "env_metadata" / outputs.get("metadata_name", "")
    try:
        return archive.stat().st_size == outputs.get("archive_size") and _unchanged(
            metadata, outputs
        )
    except OSError:
        return False


def _unchanged(metadata: Path, outputs: dict[str, Any]) -> bool:
    """Whether a small metadata file a step wrote is still there with the bytes it wrote."""
    recorded = outputs.get("metadata_hash")
    if recorded is None:  # a stamp from before metadata hashes were recorded
        return metadata.is_file()
    return hashing.hash_file_or_none(metadata) == recorded


def run_archive(ctx: RunContext, env_name: str) -> Any:
    """Action of archive:<env>: write the reproducible archive and its metadata."""
    from stacks import atomic
    from stacks.publish.archives import write_archive

    assert ctx.output_dir is not None
    key = publish_inputs(ctx, env_name, "archive")
    if key is None:
        return task_failure(
            StacksError("the layer has not been built", hint="run `stacks build SPEC`"), env_name
        )
    layer = ctx.spec.layer(env_name)
    metadata = dict(key["metadata"])  # computed with the inputs; no second pass over modules
    name = archive_name(ctx, env_name)
    meta_name = metadata_name(ctx, env_name, tagged=ctx.tag_outputs)
    meta_path = ctx.output_dir / "__stacks__" / "env_metadata" / meta_name
    progress = ctx.progress(task_name("archive", env_name), "archive")
    try:
        result = write_archive(
            ctx.build_dir(env_name),
            ctx.output_dir / name,
            root_name=metadata["install_target"],
            fmt=ctx.archive_format,
            mtime=_epoch(metadata["locked_at"]),
            layered=layer.kind is not LayerKind.RUNTIME,
            progress=progress,
        )
    except StacksError as exc:
        return task_failure(exc, env_name)
    finally:
        progress.close()
    build_number = _archive_build(
        hashing.read_stamp(meta_path) or {}, metadata["lock_version"], name, result.sha256
    )
    metadata.update(
        {
            "archive_build": build_number,
            "archive_name": name,
            "target_platform": ctx.platform_tag,
            "archive_size": result.size,
            "archive_hashes": {"sha256": result.sha256},
        }
    )
    atomic.write_json(meta_path, metadata)
    outputs = {
        "metadata_hash": hashing.hash_file_or_none(meta_path),
        "archive_name": name,
        "archive_size": result.size,
        "sha256": result.sha256,
        "metadata_name": meta_name,
        "output_dir": str(ctx.output_dir),
        "lock_version": metadata["lock_version"],
        "archive_build": build_number,
    }
    write_step_stamp(ctx, "archive", env_name, key, outputs)
    return None


def _archive_build(previous: dict[str, Any], lock_version: Any, name: str, sha256: str) -> int:
    """The archive's build number, from the metadata already in the output folder.

    1 for a new lock version; the same number when the archive came out byte-identical;
    one more when the same lock gave other bytes. The output folder, not the cache, decides,
    so two project copies publishing into fresh folders write identical metadata.
    """
    try:
        before = int(previous["archive_build"])
    except (KeyError, TypeError, ValueError):
        return 1
    if previous.get("lock_version") != lock_version or before < 1:
        return 1
    same = (
        previous.get("archive_name") == name
        and (previous.get("archive_hashes") or {}).get("sha256") == sha256
    )
    return before if same else before + 1


def export_current(ctx: RunContext, env_name: str) -> bool:
    """Up-to-date check of export:<env>: same build and metadata, export folder unchanged."""
    stamp = matching_stamp(ctx, "export", env_name, publish_inputs(ctx, env_name, "export"))
    if stamp is None or ctx.export_dir is None:
        return False
    target = ctx.export_dir / stamp.get("outputs", {}).get("install_target", "")
    metadata = (
        ctx.export_dir / "__stacks__" / "env_metadata" / metadata_name(ctx, env_name, tagged=False)
    )
    if not (target.is_dir() and _unchanged(metadata, stamp.get("outputs", {}))):
        return False
    # An export is edited easily (it is meant to be run): any stat drift redoes it.
    return not tree_drift(target, manifest_path(ctx, "export", env_name))


def run_export(ctx: RunContext, env_name: str) -> Any:
    """Action of export:<env>: copy (link) the layer into the export folder and post-install it."""
    from stacks import atomic
    from stacks.publish.export import export_layer

    assert ctx.export_dir is not None
    key = publish_inputs(ctx, env_name, "export")
    if key is None:
        return task_failure(
            StacksError("the layer has not been built", hint="run `stacks build SPEC`"), env_name
        )
    layer = ctx.spec.layer(env_name)
    metadata = dict(key["metadata"])  # computed with the inputs; no second pass over modules
    target = ctx.export_dir / metadata["install_target"]
    progress = ctx.progress(task_name("export", env_name), "export")
    try:
        export_layer(
            ctx.build_dir(env_name),
            target,
            layered=layer.kind is not LayerKind.RUNTIME,
            symlinks=ctx.symlinks,
            progress=progress,
        )
    except StacksError as exc:
        return task_failure(exc, env_name)
    finally:
        progress.close()
    exported = hashing.scan_tree(target, skip=hashing.skip_bytecode)
    atomic.write_json(manifest_path(ctx, "export", env_name), exported.to_json())
    meta_path = (
        ctx.export_dir / "__stacks__" / "env_metadata" / metadata_name(ctx, env_name, tagged=False)
    )
    atomic.write_json(meta_path, metadata)
    outputs = {
        "install_target": metadata["install_target"],
        "export_dir": str(ctx.export_dir),
        "metadata_hash": hashing.hash_file_or_none(meta_path),
    }
    write_step_stamp(ctx, "export", env_name, key, outputs)
    return None


def _epoch(locked_at: str | None) -> int:
    if not locked_at:
        return 0
    return int(datetime.fromisoformat(locked_at.replace("Z", "+00:00")).timestamp())


# ---------------------------------------------------------------- stack manifests


def manifest_inputs(ctx: RunContext, step: str) -> dict[str, Any]:
    """Inputs of a stack manifest: the per-layer metadata files it gathers."""
    folder = output_root(ctx, step) / "__stacks__" / "env_metadata"
    tagged = ctx.tag_outputs and step == "archive"
    files = [
        folder / metadata_name(ctx, layer.env_name, tagged=tagged) for layer in ctx.spec.layers
    ]
    return {"layer metadata": sorted([p.name, hashing.hash_file_or_none(p)] for p in files)}


def manifest_current(ctx: RunContext, step: str) -> bool:
    """Up-to-date check of the stack manifest task."""
    stamp = matching_stamp(ctx, "manifest", step, manifest_inputs(ctx, step))
    if stamp is None:
        return False
    outputs = stamp.get("outputs", {})
    path = stack_manifest_path(ctx, step)
    if outputs.get("path") not in (None, str(path)):
        return False  # written for another output folder
    return _unchanged(path, outputs)


def run_manifest(ctx: RunContext, step: str) -> None:
    """Gather the per-layer metadata present in the output folder into one stack manifest."""
    import json

    from stacks import atomic

    folder = output_root(ctx, step) / "__stacks__" / "env_metadata"
    tagged = ctx.tag_outputs and step == "archive"
    layers: dict[str, list[Any]] = {kind.table: [] for kind in LayerKind}
    for layer in ctx.spec.layers:
        path = folder / metadata_name(ctx, layer.env_name, tagged=tagged)
        if path.is_file():
            layers[layer.kind.table].append(json.loads(path.read_text(encoding="utf-8")))
    key = manifest_inputs(ctx, step)
    path = stack_manifest_path(ctx, step)
    atomic.write_json(path, {"layers": layers})
    outputs = {"path": str(path), "metadata_hash": hashing.hash_file_or_none(path)}
    write_step_stamp(ctx, "manifest", step, key, outputs)
