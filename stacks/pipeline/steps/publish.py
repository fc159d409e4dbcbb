"""What archive:<env> and export:<env> share (a built layer written into a folder the user
picks, with its metadata), and the stack manifest of that folder.

Both keep one stamp per destination (`stamps/<step>/<key>/<env>.json`, the key hashing the
folder and the settings that name its files), so going back to an earlier folder or format
whose outputs are intact redoes nothing.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stacks import hashing
from stacks.pipeline.run_context import (
    RunContext,
    deployed_name,
    metadata_name,
)
from stacks.pipeline.steps.base import (
    STACK_TASK,
    Step,
    remove_empty_parents,
    stamps_of_every_destination,
    step_named,
    unchanged,
)
from stacks.pipeline.steps.build import build_digest, module_hashes
from stacks.pipeline.steps.runtime import provided_runtime
from stacks.publish.metadata import variant_groups
from stacks.spec import LayerKind, LayerSpec

if TYPE_CHECKING:
    pass


class PublishStep(Step):
    """A step that writes each built layer into a destination folder (publish or export)."""

    verb: str  # what the command is called: publish, export
    folder_option: str  # the RunContext field holding the folder
    default_folder: str  # the folder's default name, in the spec folder
    # Whether each layer replaces `<folder>/<install target>` (checked before anything runs).
    replaces_layer_folders = False

    def folder(self, ctx: RunContext) -> Path | None:
        """This run's destination folder (None: the run does not write there)."""
        folder: Path | None = getattr(ctx, self.folder_option)
        return folder

    def root(self, ctx: RunContext) -> Path:
        """This run's destination folder (the run writes there)."""
        folder = self.folder(ctx)
        assert folder is not None
        return folder

    def with_folder(self, ctx: RunContext, folder: Path) -> RunContext:
        """A copy of the run writing into `folder`."""
        return ctx.with_options(**{self.folder_option: folder})

    def settings(self, ctx: RunContext) -> list[Any]:
        """What, besides the folder, decides the names of the files it writes there."""
        return []

    def tagged(self, ctx: RunContext) -> bool:
        """Whether metadata file names carry the platform tag."""
        return False

    def tag(self, ctx: RunContext) -> str:
        """The platform suffix of the stack manifest's name (`-linux_x86_64`), or ''."""
        return f"-{ctx.platform_tag}" if self.tagged(ctx) else ""

    def destination_key(self, ctx: RunContext) -> str:
        """A short hash of where the step writes: its folder and the settings naming its files."""
        settings = [self.name, str(self.folder(ctx)), *self.settings(ctx)]
        return hashing.hash_json(settings).removeprefix(hashing.PREFIX)[:16]

    def metadata_path(self, ctx: RunContext, env_name: str) -> Path:
        """A layer's metadata file in this run's folder."""
        name = metadata_name(ctx, env_name, tagged=self.tagged(ctx))
        return self.root(ctx) / "__stacks__" / "env_metadata" / name

    def layers(self, ctx: RunContext) -> list[LayerSpec]:
        """The built layers, when this run writes into the step's folder."""
        return super().layers(ctx) if self.folder(ctx) is not None else []

    def stamp_path(self, ctx: RunContext, env_name: str) -> Path:
        """`stamps/<step>/<destination key>/<env>.json`."""
        key = self.destination_key(ctx)
        return ctx.cache_dir / "stamps" / self.name / key / f"{env_name}.json"

    def inputs(self, ctx: RunContext, env_name: str) -> dict[str, Any] | None:
        """Its build's content hash and its metadata (None before it is built)."""
        return publish_inputs(ctx, env_name, self)

    def recorded_stamps(self, ctx: RunContext, env_name: str) -> list[Path]:
        """This run's stamp and those of every other destination recorded."""
        return stamps_of_every_destination(self.stamp_path(ctx, env_name))

    def recorded_destinations(
        self, ctx: RunContext, env_name: str
    ) -> list[tuple[Path, Path, dict[str, Any]]]:
        """(folder, stamp, stamp data) of every destination recorded, newest first.

        Only the folder this run names, when the command gave one.
        """
        given = self.folder(ctx)
        found = []
        for path in self.recorded_stamps(ctx, env_name):
            stamp = hashing.read_stamp(path)
            if stamp is None:
                continue
            folder = stamp.get("outputs", {}).get(self.folder_option)
            if isinstance(folder, str) and (given is None or Path(folder) == given):
                found.append((Path(folder), path, stamp))
        return sorted(found, key=lambda item: str(item[2].get("finished_at")), reverse=True)

    def destination_detail(self, ctx: RunContext, env_name: str) -> dict[str, Any]:
        """The part of the inputs that names where and how it writes."""
        return {}

    def rewrite_command(
        self, spec_arg: str, folder: Path, layer_stamp: tuple[str, dict[str, Any]] | None
    ) -> str:
        """The command that writes a recorded destination again (`layer_stamp`: one of its layers')."""
        from shlex import quote

        return f"stacks {self.verb} {quote(spec_arg)} --output-dir {quote(str(folder))}"

    def expected_outputs(self, ctx: RunContext, env_name: str) -> dict[str, Any]:
        """The outputs the step writes in this run's folder, as a stamp would record them."""
        return {}

    def products(self, ctx: RunContext, env_name: str) -> list[Path]:
        """What it made in every recorded destination, and what it would write in this run's."""
        products = super().products(ctx, env_name)
        products += self.outputs_of(ctx, env_name, self.expected_outputs(ctx, env_name))
        return list(dict.fromkeys(products))

    def remove_products(self, ctx: RunContext, env_name: str) -> list[Path]:
        """Remove what it made, then each destination's stamp folder once empty."""
        stamps = self.recorded_stamps(ctx, env_name)
        removed = super().remove_products(ctx, env_name)
        remove_empty_parents(stamps)
        return removed


# ---------------------------------------------------------------- inputs and metadata


def publish_inputs(ctx: RunContext, env_name: str, step: PublishStep) -> dict[str, Any] | None:
    """Inputs of archiving or exporting a layer: its build's content hash and its metadata."""
    digest = build_digest(ctx, env_name)
    if digest is None:
        return None
    layer = ctx.spec.layer(env_name)
    return {
        "format": step.format,
        "build": digest,
        "deployed": deployed_name(ctx, env_name),
        "lower layers": [deployed_name(ctx, dep) for dep in layer.dependencies],
        "metadata": layer_metadata(ctx, env_name),
        "archive": None,
        "export": None,
        **step.destination_detail(ctx, env_name),
    }


def layer_metadata(ctx: RunContext, env_name: str) -> dict[str, Any]:
    """The publish/export metadata of a layer, without archive fields (venvstacks field names)."""
    from stacks.lock.metadata import read_lock_meta

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
    if layer.variant is not None:
        data["variant"] = layer.variant  # a stacks addition: the hardware variant it is built for
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


def epoch(locked_at: str | None) -> int:
    if not locked_at:
        return 0
    return int(datetime.fromisoformat(locked_at.replace("Z", "+00:00")).timestamp())


def plain_name(name: Any) -> bool:
    """Whether a recorded name is a plain file name (a stamp must never steer a removal elsewhere)."""
    return isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name


# ---------------------------------------------------------------- stack manifests


def manifest_current(ctx: RunContext, basename: str) -> bool:
    """Up-to-date check of a stack manifest task (`archive:__stack__`, `export:__stack__`)."""
    step = step_named(basename)
    manifest = step.manifest
    assert manifest is not None
    stamp = manifest.matching_stamp(ctx, STACK_TASK, manifest.inputs(ctx, STACK_TASK))
    if stamp is None:
        return False
    outputs = stamp.get("outputs", {})
    path = manifest.path(ctx)
    if outputs.get("path") not in (None, str(path)):
        return False  # written for another output folder
    return unchanged(path, outputs)


def run_manifest(ctx: RunContext, basename: str) -> None:
    """Gather the per-layer metadata present in the output folder into one stack manifest."""
    from stacks import atomic

    step = step_named(basename)
    assert isinstance(step, PublishStep)
    manifest = step.manifest
    assert manifest is not None
    layers: dict[str, list[Any]] = {kind.table: [] for kind in LayerKind}
    for layer in ctx.spec.layers:
        path = step.metadata_path(ctx, layer.env_name)
        if path.is_file():
            layers[layer.kind.table].append(json.loads(path.read_text(encoding="utf-8")))
    key = manifest.inputs(ctx, STACK_TASK)
    path = manifest.path(ctx)
    atomic.write_json(path, {"layers": layers, **variant_groups(layers)})
    outputs = {"path": str(path), "metadata_hash": hashing.hash_file_or_none(path)}
    manifest.write_stamp(ctx, STACK_TASK, key, outputs)
