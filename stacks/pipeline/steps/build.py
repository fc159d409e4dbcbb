"""build:<env>: a layer's environment in the build folder, from its lock and the layers below."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stacks import hashing
from stacks.errors import StacksError
from stacks.pipeline.run_context import RunContext, deployed_name, task_name
from stacks.pipeline.steps.base import Step, register, runnable_apps, task_failure
from stacks.pipeline.steps.lock import LOCK
from stacks.pipeline.steps.runtime import RUNTIME, provided_runtime, runtime_python
from stacks.spec import LayerKind, LayerSpec

if TYPE_CHECKING:
    from stacks.build.request import BuildRequest
    from stacks.pipeline.verify import Finding


def module_hashes(layer: LayerSpec) -> list[list[str]]:
    """Name and content hash of an application's launch and support modules."""
    result = []
    for path in [p for p in (layer.launch_module, *layer.support_modules) if p is not None]:
        if path.is_dir():
            digest = hashing.scan_tree(path, skip=_skip_source).digest()
        else:
            digest = hashing.hash_file_or_none(path) or "missing"
        result.append([path.name, digest])
    return result


def _skip_source(relpath: str) -> bool:
    name = relpath.rsplit("/", 1)[-1]
    return name == "__pycache__" or name.endswith(".pyc") or name.startswith(".git")


def build_inputs(ctx: RunContext, env_name: str) -> dict[str, Any] | None:
    """Inputs of a build: its own lock, its modules, and the identity of the layers below."""
    from stacks.lock.metadata import read_lock_meta

    layer = ctx.spec.layer(env_name)
    meta = read_lock_meta(ctx.spec, layer)
    if meta is None:
        return None
    lower = [
        [dep, deployed_name(ctx, dep), ctx.spec.layer(dep).python_xy] for dep in layer.dependencies
    ]
    runtime = provided_runtime(ctx, layer.runtime)
    return {
        "format": BUILD.format,
        "lock": meta.lock_hash,
        "deployed": deployed_name(ctx, env_name),
        "lower layers": lower,
        "modules": module_hashes(layer) if layer.kind is LayerKind.APPLICATION else [],
        "dynlib_exclude": list(layer.dynlib_exclude),
        # The runtime layer is a copy of its runtime; layers above only need its X.Y.
        "runtime": runtime if layer.kind is LayerKind.RUNTIME else None,
    }


def build_current(ctx: RunContext, env_name: str) -> bool:
    """Up-to-date check of build:<env>: same inputs, and the tree unchanged (stat only)."""
    if BUILD.matching_stamp(ctx, env_name, build_inputs(ctx, env_name)) is None:
        return False
    return not build_drift(ctx, env_name)


def build_drift(ctx: RunContext, env_name: str) -> list[str]:
    """How a build folder differs from its manifest by stat data (cheap), or why it can't be checked."""
    tree = ctx.build_dir(env_name)
    if not tree.is_dir():
        return [f"missing: {tree}"]
    data = hashing.read_stamp(BUILD.tree_manifest_path(ctx, env_name))
    if data is None:
        return ["missing: build manifest"]
    return hashing.manifest_stat_drift(data, tree, limit=5, skip=hashing.skip_bytecode)


def build_digest(ctx: RunContext, env_name: str) -> str | None:
    """The content hash of a finished build, from its stamp."""
    stamp = hashing.read_stamp(BUILD.stamp_path(ctx, env_name))
    return None if stamp is None else stamp.get("outputs", {}).get("digest")


def build_uv_version(ctx: RunContext, env_name: str) -> str | None:
    """The version of uv that installed a finished build's packages, from its stamp."""
    stamp = hashing.read_stamp(BUILD.stamp_path(ctx, env_name))
    return None if stamp is None else stamp.get("outputs", {}).get("uv")


def build_request(ctx: RunContext, env_name: str) -> BuildRequest:
    """The BuildRequest for a layer: its lock, runtime and lower layers."""
    from stacks.build.request import BuildRequest, LowerLayer
    from stacks.lock.metadata import lock_paths

    spec = ctx.spec
    layer = spec.layer(env_name)
    forced = task_name(BUILD.name, env_name) in ctx.forced
    version = provided_runtime(ctx, layer.runtime).get("python_version") or layer.python_version
    lower = tuple(
        LowerLayer(
            dep,
            deployed_name(ctx, dep),
            ctx.build_dir(dep),
            lock_paths(spec, spec.layer(dep)).pylock,
        )
        for dep in layer.dependencies
    )
    return BuildRequest(
        layer=layer,
        target=ctx.build_dir(env_name),
        pylock=lock_paths(spec, layer).pylock,
        python_version=version,
        deployed_name=deployed_name(ctx, env_name),
        lower=lower,
        runtime_source=ctx.runtime_dir(env_name) if layer.kind is LayerKind.RUNTIME else None,
        platform=ctx.platform_tag,
        verified_files=ctx.cache_dir / "verified-files.json",
        recheck_installed=forced,
        # A forced rebuild hashes every file afresh: no digest is taken from the record.
        known_digests=None if forced else ctx.cache_dir / "file-digests.json",
        installer_python=runtime_python(ctx, layer.runtime),
    )


def start_early_install(ctx: RunContext, env_name: str) -> None:
    """Start installing a layer's packages ahead of its build step (`stacks.build.early_installs`).

    Not for a runtime layer (it links its runtime), a forced rebuild (it first checks the
    provided runtime) or a run that streams uv's output (it would interleave). Anything
    that goes wrong here is left for the build step itself to meet and report.
    """
    from stacks.streaming import streaming

    layer = ctx.spec.layer(env_name)
    if (
        layer.kind is LayerKind.RUNTIME
        or task_name(BUILD.name, env_name) in ctx.forced
        or streaming()
    ):
        return
    from stacks.build import early_installs

    try:
        early_installs.start(build_request(ctx, env_name))
    except (StacksError, OSError):
        return


def run_build(ctx: RunContext, env_name: str) -> Any:
    """Action of build:<env>: build the environment from its lock, check it, stamp it."""
    from stacks.build.environment import build_layer

    inputs = build_inputs(ctx, env_name)
    if inputs is None:
        return task_failure(
            StacksError("no lock metadata to build from", hint="run `stacks lock SPEC` first"),
            env_name,
        )
    warnings: list[str] = []
    if task_name(BUILD.name, env_name) in ctx.forced:
        failure = _provide_damaged_runtime_again(ctx, env_name)
        if failure is not None:
            return failure
    from stacks.build import early_installs

    request = build_request(ctx, env_name)
    early = early_installs.take(request)
    try:
        built = build_layer(request, warnings=warnings, early=early)
    except StacksError as exc:
        return task_failure(exc, env_name)
    finally:
        if early is not None:
            early_installs.release(early)
    from stacks import atomic
    from stacks.build.install import uv_version

    manifest_path = BUILD.tree_manifest_path(ctx, env_name)
    atomic.write_text(manifest_path, built.manifest_text, durable=False)
    outputs = {"digest": built.digest, "entries": len(built.entries), "uv": uv_version()}
    BUILD.write_stamp(ctx, env_name, inputs, outputs)
    # doit hands a returned dict back to the reporter as the task's values (also from workers).
    return {"warnings": [f"layer '{env_name}': {text}" for text in warnings]} if warnings else None


def _provide_damaged_runtime_again(ctx: RunContext, env_name: str) -> Any:
    """Before a forced rebuild of a runtime layer: its provided runtime, checked by content.

    The build links the runtime's files, so an in-place edit of one (size and mtime put
    back, invisible to the up-to-date check) would be linked into the rebuild again.
    """
    layer = ctx.spec.layer(env_name)
    if layer.kind is not LayerKind.RUNTIME:
        return None
    if not any(f.failed for f in RUNTIME.verify(ctx, layer, str(ctx.spec.path))):
        return None
    print(
        f"note: runtime '{env_name}': the provided runtime differs from what was provided; "
        "providing it again",
        file=sys.stderr,
    )
    return RUNTIME.action(ctx, layer.runtime)


class BuildStep(Step):
    """Build every layer targeting this platform in `<cache>/build/<env>`."""

    name = "build"
    doc = "Build every layer targeting this platform."
    action = staticmethod(run_build)
    check = staticmethod(build_current)
    durable_stamps = False  # uv's installs are not fsynced: see Step.durable_stamps

    def needs(self, ctx: RunContext, layer: LayerSpec) -> list[str]:
        """Its lock, its runtime, and the builds below it."""
        deps = [task_name(LOCK.name, layer.env_name), task_name(RUNTIME.name, layer.runtime)]
        return deps + [task_name(self.name, dep) for dep in layer.dependencies]

    def inputs(self, ctx: RunContext, env_name: str) -> dict[str, Any] | None:
        """Its lock, modules and lower layers' identity (None before it is locked)."""
        return build_inputs(ctx, env_name)

    def drift(self, ctx: RunContext, env_name: str) -> list[str]:
        """How the build folder differs from its manifest (stat only)."""
        return [f"build folder drifted: {item}" for item in build_drift(ctx, env_name)]

    def outputs_of(self, ctx: RunContext, env_name: str, outputs: dict[str, Any]) -> list[Path]:
        """The build folder."""
        return [ctx.build_dir(env_name)]

    def verify(self, ctx: RunContext, layer: LayerSpec, spec_arg: str) -> list[Finding]:
        """The build folder against its tree manifest, by content."""
        from stacks.pipeline.verify import verify_build

        tree, manifest = ctx.build_dir(layer.env_name), self.tree_manifest_path(ctx, layer.env_name)
        return [verify_build(tree, layer.env_name, manifest, spec_arg)]

    def next_steps(self, ctx: RunContext, layers: Sequence[LayerSpec]) -> list[str]:
        """How to run each application built."""
        return [
            f"run {app.env_name}: {shlex.join(['stacks', 'run', str(ctx.spec.path), app.name])}"
            for app in runnable_apps(ctx, layers)
        ]


BUILD = register(BuildStep())
