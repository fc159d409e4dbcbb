"""The runtime, lock and build steps as doit sees them: inputs, up-to-date checks, actions.

Each action is a module-level function of (RunContext, layer name), so tasks pickle for
parallel runs; the work itself is done by `runtimes`, `locking` and `building`.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from stacks import hashing
from stacks.errors import StacksError
from stacks.pipeline.run_context import STEP_FORMATS, RunContext, deployed_name, task_name
from stacks.pipeline.stamps import (
    build_manifest_path,
    manifest_path,
    matching_stamp,
    tree_drift,
    write_step_stamp,
)
from stacks.spec import LayerKind, LayerSpec


def run_step(action: Any, ctx: RunContext, env_name: str) -> Any:
    """Run a step's action; an OSError (full disk, read-only folder) fails it with a message."""
    try:
        return action(ctx, env_name)
    except OSError as exc:
        from stacks.errors import DiskError

        return task_failure(DiskError.from_os_error(exc), env_name)


def task_failure(exc: StacksError, layer: str) -> Any:
    """A doit failure carrying our message (no traceback) for a user-caused error."""
    from doit.exceptions import TaskFailed

    message = str(exc)
    if layer not in message:
        message = f"layer '{layer}': {message}"
    failure = TaskFailed(message)
    failure.stacks_exit_code = exc.exit_code  # type: ignore[attr-defined]
    return failure


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


# ---------------------------------------------------------------- runtime:<env>


def runtime_inputs(ctx: RunContext, env_name: str) -> dict[str, Any]:
    """Inputs of providing a runtime: which Python, from where, for which platform."""
    layer = ctx.spec.layer(env_name)
    source = layer.source
    return {
        "format": STEP_FORMATS["runtime"],
        "implementation": layer.python_implementation,
        "source": [source.kind, source.url, source.sha256] if source else None,
        "platform": ctx.platform_tag,
    }


def runtime_current(ctx: RunContext, env_name: str) -> bool:
    """Up-to-date check of runtime:<env>: same inputs, and the runtime folder unchanged (stat only)."""
    stamp = matching_stamp(ctx, "runtime", env_name, runtime_inputs(ctx, env_name))
    if stamp is None or not (ctx.runtime_dir(env_name) / "bin" / "python").exists():
        return False
    # The build of the runtime layer links its files from here: a damaged runtime is provided again.
    return not runtime_drift(ctx, env_name)


def runtime_drift(ctx: RunContext, env_name: str) -> list[str]:
    """How a provided runtime differs from its manifest by stat data (cheap), or why it can't be checked."""
    return tree_drift(ctx.runtime_dir(env_name), manifest_path(ctx, "runtime", env_name))


def run_runtime(ctx: RunContext, env_name: str) -> Any:
    """Action of runtime:<env>: fetch or make the runtime, record its tree manifest, stamp it."""
    from stacks import atomic
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
        )
    except StacksError as exc:
        return task_failure(exc, env_name)
    manifest = hashing.scan_tree(ctx.runtime_dir(env_name), skip=hashing.skip_bytecode)
    atomic.write_json(manifest_path(ctx, "runtime", env_name), manifest.to_json())
    write_step_stamp(
        ctx,
        "runtime",
        env_name,
        runtime_inputs(ctx, env_name),
        {
            "python_version": provided.python_version,
            "source": provided.source,
            # In the runtime layer's build inputs: a runtime provided with other content rebuilds it.
            "digest": manifest.digest(),
        },
    )
    return None


def runtime_python(ctx: RunContext, env_name: str) -> Path:
    """The interpreter of a provisioned runtime (used for locking)."""
    return ctx.runtime_dir(env_name) / "bin" / "python"


def provided_runtime(ctx: RunContext, env_name: str) -> dict[str, Any]:
    """What runtime:<env> recorded: the full Python version and where it came from."""
    stamp = hashing.read_stamp(ctx.stamp_path("runtime", env_name)) or {}
    return dict(stamp.get("outputs", {}))


# ---------------------------------------------------------------- lock:<env>


def resets_lock(ctx: RunContext, env_name: str) -> bool:
    return any(fnmatchcase(env_name, pattern) for pattern in ctx.reset_lock)


def lock_current(ctx: RunContext, env_name: str) -> bool:
    """Up-to-date check of lock:<env> (the committed lock files are the truth)."""
    from stacks.lock.locking import lock_state

    if resets_lock(ctx, env_name) or task_name("lock", env_name) in ctx.forced:
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


# ---------------------------------------------------------------- build:<env>


def build_inputs(ctx: RunContext, env_name: str) -> dict[str, Any] | None:
    """Inputs of a build: its own lock, its modules, and the identity of the layers below."""
    from stacks.lock.locking import read_lock_meta

    layer = ctx.spec.layer(env_name)
    meta = read_lock_meta(ctx.spec, layer)
    if meta is None:
        return None
    lower = [
        [dep, deployed_name(ctx, dep), ctx.spec.layer(dep).python_xy] for dep in layer.dependencies
    ]
    runtime = provided_runtime(ctx, layer.runtime)
    return {
        "format": STEP_FORMATS["build"],
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
    if matching_stamp(ctx, "build", env_name, build_inputs(ctx, env_name)) is None:
        return False
    return not build_drift(ctx, env_name)


def build_drift(ctx: RunContext, env_name: str) -> list[str]:
    """How a build folder differs from its manifest by stat data (cheap), or why it can't be checked."""
    tree = ctx.build_dir(env_name)
    if not tree.is_dir():
        return [f"missing: {tree}"]
    data = hashing.read_stamp(build_manifest_path(ctx, env_name))
    if data is None:
        return ["missing: build manifest"]
    return hashing.TreeManifest.from_json(data).stat_drift(
        tree, limit=5, skip=hashing.skip_bytecode
    )


def build_digest(ctx: RunContext, env_name: str) -> str | None:
    """The content hash of a finished build, from its stamp."""
    stamp = hashing.read_stamp(ctx.stamp_path("build", env_name))
    return None if stamp is None else stamp.get("outputs", {}).get("digest")


def build_request(ctx: RunContext, env_name: str) -> Any:
    """The building.BuildRequest for a layer: its lock, runtime and lower layers."""
    from stacks.build.request import BuildRequest, LowerLayer
    from stacks.lock.locking import lock_paths

    spec = ctx.spec
    layer = spec.layer(env_name)
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
    )


def run_build(ctx: RunContext, env_name: str) -> Any:
    """Action of build:<env>: build the environment from its lock, check it, stamp it."""
    from stacks import atomic
    from stacks.build.environment import build_layer

    inputs = build_inputs(ctx, env_name)
    if inputs is None:
        return task_failure(
            StacksError("no lock metadata to build from", hint="run `stacks lock SPEC` first"),
            env_name,
        )
    warnings: list[str] = []
    try:
        manifest = build_layer(build_request(ctx, env_name), warnings=warnings)
    except StacksError as exc:
        return task_failure(exc, env_name)
    atomic.write_json(build_manifest_path(ctx, env_name), manifest.to_json())
    write_step_stamp(
        ctx,
        "build",
        env_name,
        inputs,
        {"digest": manifest.digest(), "entries": len(manifest.entries)},
    )
    # doit hands a returned dict back to the reporter as the task's values (also from workers).
    return {"warnings": [f"layer '{env_name}': {text}" for text in warnings]} if warnings else None
