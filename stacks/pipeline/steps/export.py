"""export:<env>: a built layer copied (linked) ready to run into a local folder (`stacks export`)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stacks import hashing
from stacks.errors import StacksError
from stacks.pipeline.run_context import (
    RunContext,
    deployed_name,
    metadata_name,
    task_name,
)
from stacks.pipeline.steps.base import (
    StackManifestStep,
    register,
    runnable_apps,
    task_failure,
    tree_drift,
    unchanged,
)
from stacks.pipeline.steps.build import BUILD
from stacks.pipeline.steps.publish import (
    PublishStep,
    manifest_current,
    plain_name,
    run_manifest,
)
from stacks.spec import LayerKind, LayerSpec

if TYPE_CHECKING:
    from stacks.pipeline.verify import Finding


# ---------------------------------------------------------------- export:<env>


def export_current(ctx: RunContext, env_name: str) -> bool:
    """Up-to-date check of export:<env>: same build and metadata, export folder unchanged."""
    stamp = EXPORT.matching_stamp(ctx, env_name, EXPORT.inputs(ctx, env_name))
    if stamp is None or ctx.export_dir is None:
        return False
    target = ctx.export_dir / stamp.get("outputs", {}).get("install_target", "")
    metadata = (
        ctx.export_dir / "__stacks__" / "env_metadata" / metadata_name(ctx, env_name, tagged=False)
    )
    if not (target.is_dir() and unchanged(metadata, stamp.get("outputs", {}))):
        return False
    # An export is edited easily (it is meant to be run): any stat drift redoes it.
    return not tree_drift(target, EXPORT.tree_manifest_path(ctx, env_name))


def run_export(ctx: RunContext, env_name: str) -> Any:
    """Action of export:<env>: copy (link) the layer into the export folder and post-install it."""
    from stacks import atomic
    from stacks.publish.export import export_layer

    assert ctx.export_dir is not None
    key = EXPORT.inputs(ctx, env_name)
    if key is None:
        return task_failure(
            StacksError("the layer has not been built", hint="run `stacks build SPEC`"), env_name
        )
    layer = ctx.spec.layer(env_name)
    metadata = dict(key["metadata"])  # computed with the inputs; no second pass over modules
    target = ctx.export_dir / metadata["install_target"]
    progress = ctx.progress(task_name(EXPORT.name, env_name), "export")
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
    atomic.write_json(EXPORT.tree_manifest_path(ctx, env_name), exported.to_json())
    meta_path = (
        ctx.export_dir / "__stacks__" / "env_metadata" / metadata_name(ctx, env_name, tagged=False)
    )
    atomic.write_json(meta_path, metadata)
    outputs = {
        "install_target": metadata["install_target"],
        "export_dir": str(ctx.export_dir),
        "metadata_hash": hashing.hash_file_or_none(meta_path),
    }
    EXPORT.write_stamp(ctx, env_name, key, outputs)
    return None


class ExportStep(PublishStep):
    """Export every built layer, ready to run, with its metadata (`stacks export`)."""

    name = "export"
    doc = "Export every built layer, ready to run (stacks export)."
    verb = "export"
    folder_option = "export_dir"
    default_folder = "_export"
    replaces_layer_folders = True
    never_done = "never exported to this folder with these settings (no stamp)"
    action = staticmethod(run_export)
    check = staticmethod(export_current)

    def needs(self, ctx: RunContext, layer: LayerSpec) -> list[str]:
        """Its build, and the exports of the layers below (postinstall links to them)."""
        return [task_name(BUILD.name, layer.env_name)] + [
            task_name(self.name, dep) for dep in layer.dependencies
        ]

    def destination_detail(self, ctx: RunContext, env_name: str) -> dict[str, Any]:
        """The export folder and whether it links or copies."""
        return {"export": [str(ctx.export_dir), ctx.symlinks]}

    def settings(self, ctx: RunContext) -> list[Any]:
        """Whether it links or copies."""
        return [ctx.symlinks]

    def outputs_of(self, ctx: RunContext, env_name: str, outputs: dict[str, Any]) -> list[Path]:
        """The exported layer folder and its metadata file."""
        if not isinstance(outputs.get("export_dir"), str):
            return []
        folder = Path(outputs["export_dir"])
        if not (folder.name and plain_name(outputs.get("install_target"))):
            return []
        return [
            folder / outputs["install_target"],
            folder / "__stacks__" / "env_metadata" / metadata_name(ctx, env_name, tagged=False),
        ]

    def expected_outputs(self, ctx: RunContext, env_name: str) -> dict[str, Any]:
        """The exported layer this run would replace, if stacks exported it."""
        from stacks.pipeline.output_folders import EXPORT_MARK

        if ctx.export_dir is None:
            return {}
        target = deployed_name(ctx, env_name)
        if not (ctx.export_dir / target / EXPORT_MARK).is_file():
            return {}  # not an export of ours: never removed on a guess
        return {"export_dir": str(ctx.export_dir), "install_target": target}

    def verify(self, ctx: RunContext, layer: LayerSpec, spec_arg: str) -> list[Finding]:
        """Each recorded export against its tree manifest, by content."""
        from stacks.pipeline.verify import Finding, verify_export

        findings = [
            verify_export(layer.env_name, folder, path, stamp, spec_arg)
            for folder, path, stamp in self.recorded_destinations(ctx, layer.env_name)
        ]
        return findings or [Finding(layer.env_name, self.name, "", "absent")]

    def next_steps(self, ctx: RunContext, layers: Sequence[LayerSpec]) -> list[str]:
        """How to run each exported application."""
        if ctx.export_dir is None:
            return []
        lines = []
        for app in runnable_apps(ctx, layers):
            python = ctx.export_dir / deployed_name(ctx, app.env_name) / "bin" / "python"
            command = shlex.join([str(python), "-m", app.launch_module_name])
            lines.append(f"run {app.env_name}: {command}")
        return lines


EXPORT = register(ExportStep())
EXPORT.manifest = StackManifestStep(EXPORT, run_manifest, manifest_current)
