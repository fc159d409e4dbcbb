"""Turn a StackSpec into doit tasks: names, dependencies, stamps and up-to-date checks.

Every step writes a stamp last (inputs key + what it produced). A task is up to date
when its stamp's inputs key equals the key computed now from small files (lock
metadata, module hashes, the stamps of the steps it consumes) and its outputs are
still in place. Nothing here depends on doit's own database, so losing or
corrupting that database never causes a wrong result or a needless rebuild.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from . import __version__, hashing
from .errors import StacksError
from .spec import LayerKind, LayerSpec, StackSpec

STEPS = ("runtime", "lock", "build", "archive", "export")
PUBLISH_STEPS = ("archive", "export")  # steps writing into a destination folder the user picks
# Bump when the layout a step produces changes, so old outputs are redone.
_STEP_FORMATS = {"runtime": 2, "build": 1, "archive": 1, "export": 1}


@dataclass(frozen=True, repr=False)
class RunContext:
    """Everything the tasks of one run need: the spec, folders and step options."""

    spec: StackSpec
    cache_dir: Path
    lock_options: Any = None  # locking.LockOptions; Any keeps this module light to import
    reset_lock: tuple[str, ...] = ()
    output_dir: Path | None = None
    export_dir: Path | None = None
    archive_format: str = "tar.xz"
    tag_outputs: bool = False
    symlinks: bool = True
    forced: frozenset[str] = field(default_factory=frozenset)  # task names to redo regardless
    # With `--include`: the layers this run publishes or exports. The stack manifest then waits
    # for those only (it gathers whatever layer metadata the output folder holds). None: all.
    selected: frozenset[str] | None = None

    @property
    def build_root(self) -> Path:
        """Where build environments live."""
        return self.cache_dir / "build"

    @property
    def download_dir(self) -> Path:
        """The download cache (shareable between projects via STACKS_DOWNLOAD_CACHE)."""
        shared = os.environ.get("STACKS_DOWNLOAD_CACHE")
        return Path(shared) if shared else self.cache_dir / "downloads"

    @property
    def platform_tag(self) -> str:
        """The target platform name of this machine."""
        from .platforms import build_platform

        return build_platform() or "unknown"

    def stamp_path(self, step: str, env_name: str) -> Path:
        """The stamp a step writes for a layer (or, for step "manifest", a stack manifest).

        Archive and export stamps, and the stack manifest stamps, are kept per destination
        (`stamps/<step>/<key>/<name>.json`, see `destination_key`): going back to an earlier
        folder or format whose outputs are intact redoes nothing.
        """
        folder = self.cache_dir / "stamps" / step
        if step in PUBLISH_STEPS:
            folder = folder / self.destination_key(step)
        elif step == "manifest":
            folder = folder / self.destination_key(env_name)
        return folder / f"{env_name}.json"

    def destination_key(self, step: str) -> str:
        """A short hash of where a publish or export writes: its folder and the settings naming its files."""
        if step == "archive":
            settings: list[Any] = [
                step,
                str(self.output_dir),
                self.archive_format,
                self.tag_outputs,
            ]
        else:
            settings = [step, str(self.export_dir), self.symlinks]
        return hashing.hash_json(settings).removeprefix(hashing.PREFIX)[:16]

    def runtime_dir(self, env_name: str) -> Path:
        """The provisioned, pristine runtime of a runtime layer."""
        return self.cache_dir / "runtimes" / env_name

    def build_dir(self, env_name: str) -> Path:
        """The build environment of a layer."""
        return self.build_root / env_name

    def lock_work_dir(self, env_name: str) -> Path:
        """The uv project folder used to lock a layer."""
        return self.cache_dir / "locking" / env_name

    def __repr__(self) -> str:
        # Short: `doit info` prints the arguments of a task's up-to-date check.
        return f"RunContext({self.spec.path}, cache={self.cache_dir})"

    def with_options(self, **changes: Any) -> RunContext:
        """A copy with some fields changed."""
        return replace(self, **changes)


def builds_here(ctx: RunContext, layer: LayerSpec) -> bool:
    """Whether a layer targets this machine's platform (only those are built and published)."""
    return ctx.platform_tag in layer.platforms


def task_name(step: str, env_name: str) -> str:
    """The doit task name of a step for a layer, e.g. `lock:framework-scipy`."""
    return f"{step}:{env_name}"


# ---------------------------------------------------------------- shared facts


def lock_version_of(ctx: RunContext, env_name: str) -> int | None:
    """The lock version recorded for a layer, if it has lock metadata."""
    from .locking import read_lock_meta

    meta = read_lock_meta(ctx.spec, ctx.spec.layer(env_name))
    return meta.lock_version if meta is not None else None


def deployed_name(ctx: RunContext, env_name: str) -> str:
    """The deployed folder name of a layer (`<env>@N` when versioned)."""
    layer = ctx.spec.layer(env_name)
    return layer.deployed_name(lock_version_of(ctx, env_name) if layer.versioned else None)


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


def _stamp_matches(
    ctx: RunContext, step: str, env_name: str, inputs: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The stamp of a step if it was made from exactly these inputs, else None."""
    if inputs is None or task_name(step, env_name) in ctx.forced:
        return None
    stamp = hashing.read_stamp(ctx.stamp_path(step, env_name))
    if stamp is None or stamp.get("inputs") != hashing.hash_json(inputs):
        return None
    return stamp


def _write_stamp(
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


def run_step(action: Any, ctx: RunContext, env_name: str) -> Any:
    """Run a step's action; an OSError (full disk, read-only folder) fails it with a message."""
    try:
        return action(ctx, env_name)
    except OSError as exc:
        from .errors import DiskError

        return _fail(DiskError.from_os_error(exc), env_name)


def _fail(exc: StacksError, layer: str) -> Any:
    """A doit failure carrying our message (no traceback) for a user-caused error."""
    from doit.exceptions import TaskFailed

    message = str(exc)
    if layer not in message:
        message = f"layer '{layer}': {message}"
    failure = TaskFailed(message)
    failure.stacks_exit_code = exc.exit_code  # type: ignore[attr-defined]
    return failure


# ---------------------------------------------------------------- runtime:<env>


def runtime_inputs(ctx: RunContext, env_name: str) -> dict[str, Any]:
    """Inputs of providing a runtime: which Python, from where, for which platform."""
    layer = ctx.spec.layer(env_name)
    source = layer.source
    return {
        "format": _STEP_FORMATS["runtime"],
        "implementation": layer.python_implementation,
        "source": [source.kind, source.url, source.sha256] if source else None,
        "platform": ctx.platform_tag,
    }


def runtime_current(ctx: RunContext, env_name: str) -> bool:
    """Up-to-date check of runtime:<env>: same inputs, and the runtime folder unchanged (stat only)."""
    stamp = _stamp_matches(ctx, "runtime", env_name, runtime_inputs(ctx, env_name))
    if stamp is None or not (ctx.runtime_dir(env_name) / "bin" / "python").exists():
        return False
    # The build of the runtime layer links its files from here: a damaged runtime is provided again.
    return not runtime_drift(ctx, env_name)


def runtime_drift(ctx: RunContext, env_name: str) -> list[str]:
    """How a provided runtime differs from its manifest by stat data (cheap), or why it can't be checked."""
    return tree_drift(ctx.runtime_dir(env_name), manifest_path(ctx, "runtime", env_name))


def run_runtime(ctx: RunContext, env_name: str) -> Any:
    """Action of runtime:<env>: fetch or make the runtime, record its tree manifest, stamp it."""
    from . import atomic
    from .runtimes import provide_runtime

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
        return _fail(exc, env_name)
    manifest = hashing.scan_tree(ctx.runtime_dir(env_name), skip=hashing.skip_bytecode)
    atomic.write_json(manifest_path(ctx, "runtime", env_name), manifest.to_json())
    _write_stamp(
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


def _resets(ctx: RunContext, env_name: str) -> bool:
    return any(fnmatchcase(env_name, pattern) for pattern in ctx.reset_lock)


def lock_current(ctx: RunContext, env_name: str) -> bool:
    """Up-to-date check of lock:<env> (the committed lock files are the truth)."""
    from .locking import lock_state

    if _resets(ctx, env_name) or task_name("lock", env_name) in ctx.forced:
        return False
    return lock_state(ctx.spec, ctx.spec.layer(env_name), ctx.lock_options).valid


def run_lock(ctx: RunContext, env_name: str) -> Any:
    """Action of lock:<env>: resolve the layer with uv against its lower layers' pins."""
    from .locking import lock_layer

    layer = ctx.spec.layer(env_name)
    try:
        lock_layer(
            ctx.spec,
            layer,
            ctx.lock_options,
            python=runtime_python(ctx, layer.runtime),
            work_dir=ctx.lock_work_dir(env_name),
            reset=_resets(ctx, env_name),
        )
    except StacksError as exc:
        return _fail(exc, env_name)
    return None


# ---------------------------------------------------------------- build:<env>


def build_inputs(ctx: RunContext, env_name: str) -> dict[str, Any] | None:
    """Inputs of a build: its own lock, its modules, and the identity of the layers below."""
    from .locking import read_lock_meta

    layer = ctx.spec.layer(env_name)
    meta = read_lock_meta(ctx.spec, layer)
    if meta is None:
        return None
    lower = [
        [dep, deployed_name(ctx, dep), ctx.spec.layer(dep).python_xy] for dep in layer.dependencies
    ]
    runtime = provided_runtime(ctx, layer.runtime)
    return {
        "format": _STEP_FORMATS["build"],
        "lock": meta.lock_hash,
        "deployed": deployed_name(ctx, env_name),
        "lower layers": lower,
        "modules": module_hashes(layer) if layer.kind is LayerKind.APPLICATION else [],
        "dynlib_exclude": list(layer.dynlib_exclude),
        # The runtime layer is a copy of its runtime; layers above only need its X.Y.
        "runtime": runtime if layer.kind is LayerKind.RUNTIME else None,
    }


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


def build_current(ctx: RunContext, env_name: str) -> bool:
    """Up-to-date check of build:<env>: same inputs, and the tree unchanged (stat only)."""
    if _stamp_matches(ctx, "build", env_name, build_inputs(ctx, env_name)) is None:
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
    from .building import BuildRequest, LowerLayer
    from .locking import lock_paths

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
    from . import atomic
    from .building import build_layer

    inputs = build_inputs(ctx, env_name)
    if inputs is None:
        return _fail(
            StacksError("no lock metadata to build from", hint="run `stacks lock SPEC` first"),
            env_name,
        )
    try:
        manifest = build_layer(build_request(ctx, env_name))
    except StacksError as exc:
        return _fail(exc, env_name)
    atomic.write_json(build_manifest_path(ctx, env_name), manifest.to_json())
    _write_stamp(
        ctx,
        "build",
        env_name,
        inputs,
        {"digest": manifest.digest(), "entries": len(manifest.entries)},
    )
    return None


# ---------------------------------------------------------------- archive:<env> and export:<env>


def archive_name(ctx: RunContext, env_name: str) -> str:
    """The archive file name of a layer."""
    base = deployed_name(ctx, env_name)
    if ctx.tag_outputs:
        base = f"{base}-{ctx.platform_tag}"
    return f"{base}.{ctx.archive_format}"


def metadata_name(ctx: RunContext, env_name: str, *, tagged: bool) -> str:
    """The per-layer metadata file name (`<layer>[-<platform>].json`)."""
    return f"{env_name}-{ctx.platform_tag}.json" if tagged else f"{env_name}.json"


def publish_inputs(ctx: RunContext, env_name: str, step: str) -> dict[str, Any] | None:
    """Inputs of archiving or exporting a layer: its build's content hash and its metadata."""
    digest = build_digest(ctx, env_name)
    if digest is None:
        return None
    layer = ctx.spec.layer(env_name)
    return {
        "format": _STEP_FORMATS[step],
        "build": digest,
        "deployed": deployed_name(ctx, env_name),
        "lower layers": [deployed_name(ctx, dep) for dep in layer.dependencies],
        "metadata": layer_metadata(ctx, env_name),
        "archive": [archive_name(ctx, env_name), ctx.archive_format] if step == "archive" else None,
        "export": [str(ctx.export_dir), ctx.symlinks] if step == "export" else None,
    }


def layer_metadata(ctx: RunContext, env_name: str) -> dict[str, Any]:
    """The publish/export metadata of a layer, without archive fields (venvstacks field names)."""
    from .locking import read_lock_meta

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
            from .spec import module_name

            data["app_support_modules"] = [
                {"name": module_name(path), "hash": digest}
                for path, (_, digest) in zip(layer.support_modules, hashes[1:], strict=True)
            ]
    return data


def archive_current(ctx: RunContext, env_name: str) -> bool:
    """Up-to-date check of archive:<env>: same build and metadata, archive still there."""
    stamp = _stamp_matches(ctx, "archive", env_name, publish_inputs(ctx, env_name, "archive"))
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
    from . import atomic
    from .publishing import write_archive

    assert ctx.output_dir is not None
    key = publish_inputs(ctx, env_name, "archive")
    if key is None:
        return _fail(
            StacksError("the layer has not been built", hint="run `stacks build SPEC`"), env_name
        )
    layer = ctx.spec.layer(env_name)
    metadata = dict(key["metadata"])  # computed with the inputs; no second pass over modules
    name = archive_name(ctx, env_name)
    meta_name = metadata_name(ctx, env_name, tagged=ctx.tag_outputs)
    meta_path = ctx.output_dir / "__stacks__" / "env_metadata" / meta_name
    try:
        result = write_archive(
            ctx.build_dir(env_name),
            ctx.output_dir / name,
            root_name=metadata["install_target"],
            fmt=ctx.archive_format,
            mtime=_epoch(metadata["locked_at"]),
            layered=layer.kind is not LayerKind.RUNTIME,
        )
    except StacksError as exc:
        return _fail(exc, env_name)
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
    _write_stamp(ctx, "archive", env_name, key, outputs)
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
    stamp = _stamp_matches(ctx, "export", env_name, publish_inputs(ctx, env_name, "export"))
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
    from . import atomic
    from .publishing import export_layer

    assert ctx.export_dir is not None
    key = publish_inputs(ctx, env_name, "export")
    if key is None:
        return _fail(
            StacksError("the layer has not been built", hint="run `stacks build SPEC`"), env_name
        )
    layer = ctx.spec.layer(env_name)
    metadata = dict(key["metadata"])  # computed with the inputs; no second pass over modules
    target = ctx.export_dir / metadata["install_target"]
    try:
        export_layer(
            ctx.build_dir(env_name),
            target,
            layered=layer.kind is not LayerKind.RUNTIME,
            symlinks=ctx.symlinks,
        )
    except StacksError as exc:
        return _fail(exc, env_name)
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
    _write_stamp(ctx, "export", env_name, key, outputs)
    return None


def _epoch(locked_at: str | None) -> int:
    if not locked_at:
        return 0
    return int(datetime.fromisoformat(locked_at.replace("Z", "+00:00")).timestamp())


# ---------------------------------------------------------------- stack manifests


def manifest_inputs(ctx: RunContext, step: str) -> dict[str, Any]:
    """Inputs of a stack manifest: the per-layer metadata files it gathers."""
    folder = _output_root(ctx, step) / "__stacks__" / "env_metadata"
    tagged = ctx.tag_outputs and step == "archive"
    files = [
        folder / metadata_name(ctx, layer.env_name, tagged=tagged) for layer in ctx.spec.layers
    ]
    return {"layer metadata": sorted([p.name, hashing.hash_file_or_none(p)] for p in files)}


def _output_root(ctx: RunContext, step: str) -> Path:
    folder = ctx.output_dir if step == "archive" else ctx.export_dir
    assert folder is not None
    return folder


def stack_manifest_path(ctx: RunContext, step: str) -> Path:
    """The whole-stack metadata file of a publish or an export."""
    tag = f"-{ctx.platform_tag}" if ctx.tag_outputs and step == "archive" else ""
    return _output_root(ctx, step) / "__stacks__" / f"stack{tag}.json"


def manifest_current(ctx: RunContext, step: str) -> bool:
    """Up-to-date check of the stack manifest task."""
    stamp = _stamp_matches(ctx, "manifest", step, manifest_inputs(ctx, step))
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

    from . import atomic

    folder = _output_root(ctx, step) / "__stacks__" / "env_metadata"
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
    _write_stamp(ctx, "manifest", step, key, outputs)


# ---------------------------------------------------------------- task generation


def _task(
    step: str, layer: LayerSpec, ctx: RunContext, action: Any, check: Any, deps: list[str], doc: str
) -> dict[str, Any]:
    if step == "lock":
        from .locking import lock_paths

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


STACK_TASK = "__stack__"


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
    from .output_folders import EXPORT_MARK

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
    from .atomic import remove_tree

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


def is_current(ctx: RunContext, step: str, env_name: str) -> bool:
    """The up-to-date check of any task."""
    if env_name == STACK_TASK:
        return manifest_current(ctx, step)
    return CHECKS[step](ctx, env_name)


def explain(ctx: RunContext, step: str, env_name: str) -> list[str]:
    """Why a task is not up to date, in words."""
    if task_name(step, env_name) in ctx.forced:
        return ["forced (--clean)"]
    if step == "lock":
        from .locking import lock_state

        if _resets(ctx, env_name):
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
