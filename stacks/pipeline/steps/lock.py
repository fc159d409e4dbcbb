"""lock:<env>: resolve a layer with uv against the pins of the layers below it.

Its truth is the committed lock files (`requirements/<env>/`), not a stamp.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stacks.errors import StacksError
from stacks.pipeline.run_context import RunContext, task_name
from stacks.pipeline.steps.base import Step, register, task_failure
from stacks.pipeline.steps.runtime import RUNTIME, runtime_python
from stacks.spec import LayerSpec

if TYPE_CHECKING:
    from stacks.pipeline.verify import Finding


def resets_lock(ctx: RunContext, env_name: str) -> bool:
    """Whether `--reset-lock` asks for a fresh resolution of this layer."""
    return any(fnmatchcase(env_name, pattern) for pattern in ctx.reset_lock)


def lock_current(ctx: RunContext, env_name: str) -> bool:
    """Up-to-date check of lock:<env> (the committed lock files are the truth)."""
    from stacks.lock.locking import lock_state

    if resets_lock(ctx, env_name) or task_name(LOCK.name, env_name) in ctx.forced:
        return False
    return lock_state(ctx.spec, ctx.spec.layer(env_name), ctx.lock_options).valid


def run_lock(ctx: RunContext, env_name: str) -> Any:
    """Action of lock:<env>: resolve the layer with uv against its lower layers' pins."""
    from stacks.lock.locking import lock_layer

    layer = ctx.spec.layer(env_name)
    try:
        lock_layer(
            ctx.spec,
            layer,
            ctx.lock_options,
            python=runtime_python(ctx, layer.runtime),
            work_dir=ctx.lock_work_dir(env_name),
            reset=resets_lock(ctx, env_name),
        )
    except StacksError as exc:
        return task_failure(exc, env_name)
    return None


class LockStep(Step):
    """Lock every layer: one cross-platform pylock.toml (and its metadata) per layer."""

    name = "lock"
    doc = "Lock every layer (pylock.toml per layer)."
    needs_this_platform = False  # locks are cross-platform
    keeps_stamps = False
    action = staticmethod(run_lock)
    check = staticmethod(lock_current)

    def needs(self, ctx: RunContext, layer: LayerSpec) -> list[str]:
        """Its runtime (the resolver's interpreter), the locks below it, and its first variant's.

        A variant is locked alike with the first variant of its layer, so that one is locked
        first when both are in the run (`--variant` can leave it out).
        """
        from stacks.lock.variants import variant_reference

        needed = [task_name(RUNTIME.name, layer.runtime)] + [
            task_name(self.name, dep) for dep in layer.dependencies
        ]
        reference = variant_reference(ctx.spec, layer)
        if reference is not None and (ctx.selected is None or reference.env_name in ctx.selected):
            needed.append(task_name(self.name, reference.env_name))
        return needed

    def describe(self, ctx: RunContext, layer: LayerSpec) -> str:
        """Which platforms the lock covers."""
        return f"lock {layer.env_name} for {', '.join(layer.platforms)}"

    def targets(self, ctx: RunContext, env_name: str) -> list[Path]:
        """The lock file and its metadata."""
        from stacks.lock.metadata import lock_paths

        paths = lock_paths(ctx.spec, ctx.spec.layer(env_name))
        return [paths.pylock, paths.meta]

    def reasons(self, ctx: RunContext, env_name: str) -> list[str]:
        """Why the layer would be locked again, from its lock state."""
        from stacks.lock.locking import lock_state

        if task_name(self.name, env_name) in ctx.forced:
            return ["forced (--clean or --force)"]
        if resets_lock(ctx, env_name):
            return ["--reset-lock asks for a fresh resolution"]
        state = lock_state(ctx.spec, ctx.spec.layer(env_name), ctx.lock_options)
        return list(state.reasons) or ["no valid lock"]

    def products(self, ctx: RunContext, env_name: str) -> list[Path]:
        """None: lock files are sources, never removed."""
        return []

    def verify(self, ctx: RunContext, layer: LayerSpec, spec_arg: str) -> list[Finding]:
        """The committed lock against its metadata."""
        from stacks.pipeline.verify import verify_lock

        return [verify_lock(ctx.spec, layer, spec_arg)]


LOCK = register(LockStep())
