"""runtime:<env>: provide a runtime layer's interpreter (download or local copy), pristine."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stacks import hashing
from stacks.errors import StacksError
from stacks.pipeline.run_context import RunContext
from stacks.pipeline.steps.base import Step, register, task_failure, tree_drift
from stacks.spec import LayerKind, LayerSpec

if TYPE_CHECKING:
    from stacks.pipeline.verify import Finding


def runtime_current(ctx: RunContext, env_name: str) -> bool:
    """Up-to-date check of runtime:<env>: same inputs, and the runtime folder unchanged (stat only)."""
    stamp = RUNTIME.matching_stamp(ctx, env_name, RUNTIME.inputs(ctx, env_name))
    if stamp is None or not (ctx.runtime_dir(env_name) / "bin" / "python").exists():
        return False
    # The build of the runtime layer links its files from here: a damaged one is provided again.
    return not RUNTIME.drift(ctx, env_name)


def run_runtime(ctx: RunContext, env_name: str) -> Any:
    """Action of runtime:<env>: fetch or make the runtime, record its tree manifest, stamp it."""
    from stacks.runtime.sources import provide_runtime

    layer = ctx.spec.layer(env_name)
    assert layer.source is not None
    try:
        provided = provide_runtime(
            layer.python_implementation,
            layer.source,
            ctx.runtime_dir(env_name),
            download_dir=ctx.download_dir,
            mirror=ctx.spec.settings.python_mirror,
            any_patch=ctx.spec.settings.runtime_any_patch,
            store=ctx.runtime_store,
        )
    except StacksError as exc:
        return task_failure(exc, env_name)
    if provided.requested is not None:
        print(
            f"warning: runtime '{env_name}': CPython {provided.requested} is not installed; "
            f"using the local CPython {provided.python_version} instead (--runtime-any-patch); "
            f"its layers record python_implementation cpython@{provided.python_version}",
            file=sys.stderr,
        )
    manifest = provided.manifest or hashing.scan_tree(
        ctx.runtime_dir(env_name), skip=hashing.skip_bytecode
    )
    hashing.write_manifest(RUNTIME.tree_manifest_path(ctx, env_name), manifest)
    RUNTIME.write_stamp(
        ctx,
        env_name,
        RUNTIME.inputs(ctx, env_name),
        {
            "python_version": provided.python_version,
            "source": provided.source,
            # In the runtime layer's build inputs: a runtime provided with other content rebuilds it.
            "digest": manifest.digest(),
        },
    )
    return None


def runtime_python(ctx: RunContext, env_name: str) -> Path:
    """The interpreter of a provided runtime (used for locking)."""
    return ctx.runtime_dir(env_name) / "bin" / "python"


def provided_runtime(ctx: RunContext, env_name: str) -> dict[str, Any]:
    """What runtime:<env> recorded: the full Python version and where it came from."""
    stamp = hashing.read_stamp(RUNTIME.stamp_path(ctx, env_name)) or {}
    return dict(stamp.get("outputs", {}))


class RuntimeStep(Step):
    """Provide each runtime of the stack in `<cache>/runtimes/<env>`."""

    name = "runtime"
    doc = "Provide the stack's runtimes."
    format = 2
    needs_this_platform = False
    action = staticmethod(run_runtime)
    check = staticmethod(runtime_current)

    def layers(self, ctx: RunContext) -> list[LayerSpec]:
        """Runtime layers only."""
        return list(ctx.spec.of_kind(LayerKind.RUNTIME))

    def describe(self, ctx: RunContext, layer: LayerSpec) -> str:
        """Which Python from where."""
        source = layer.source.describe() if layer.source else "?"
        return f"provide {layer.python_implementation} ({source})"

    def inputs(self, ctx: RunContext, env_name: str) -> dict[str, Any]:
        """Inputs of providing a runtime: which Python, from where, for which platform."""
        layer = ctx.spec.layer(env_name)
        source = layer.source
        inputs: dict[str, Any] = {
            "format": self.format,
            "implementation": layer.python_implementation,
            "source": [source.kind, source.url, source.sha256] if source else None,
            "platform": ctx.platform_tag,
        }
        if ctx.spec.settings.runtime_any_patch and source is not None and source.kind == "local":
            inputs["any_patch"] = True  # only when on: stamps made without it stay current
        return inputs

    def drift(self, ctx: RunContext, env_name: str) -> list[str]:
        """How a provided runtime differs from its manifest by stat data (cheap)."""
        found = tree_drift(ctx.runtime_dir(env_name), self.tree_manifest_path(ctx, env_name))
        return [f"runtime folder drifted: {item}" for item in found]

    def outputs_of(self, ctx: RunContext, env_name: str, outputs: dict[str, Any]) -> list[Path]:
        """The provided runtime folder."""
        return [ctx.runtime_dir(env_name)]

    def verify(self, ctx: RunContext, layer: LayerSpec, spec_arg: str) -> list[Finding]:
        """The provided runtime against its tree manifest (before the build linked from it)."""
        from stacks.pipeline.verify import verify_runtime

        if layer.kind is not LayerKind.RUNTIME:
            return []
        manifest = self.tree_manifest_path(ctx, layer.env_name)
        return [verify_runtime(ctx.runtime_dir(layer.env_name), layer.env_name, manifest, spec_arg)]


RUNTIME = register(RuntimeStep())
