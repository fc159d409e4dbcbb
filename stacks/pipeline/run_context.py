"""What the tasks of one run share: the RunContext, task names, and where each step writes.

The names here (task names, deployed folder names, archive and metadata file names,
destination keys) are what stamps record and what later runs look for, so they never change
without a step format bump.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stacks.spec import LayerSpec, StackSpec

if TYPE_CHECKING:
    from stacks.lock.metadata import LockOptions


@dataclass(frozen=True, repr=False)
class RunContext:
    """Everything the tasks of one run need: the spec, folders and step options."""

    spec: StackSpec
    cache_dir: Path
    lock_options: LockOptions | None = None
    reset_lock: tuple[str, ...] = ()
    output_dir: Path | None = None
    export_dir: Path | None = None
    archive_format: str = "tar.xz"
    tag_outputs: bool = False
    bytecode: bool = False  # `publish --bytecode`: archives hold unchecked-hash pycs
    symlinks: bool = True
    forced: frozenset[str] = field(default_factory=frozenset)  # task names to redo regardless
    # With `--include`: the layers this run publishes or exports. The stack manifest then waits
    # for those only (it gathers whatever layer metadata the output folder holds). None: all.
    selected: frozenset[str] | None = None
    # `--runtime-store` as given (None: STACKS_RUNTIME_STORE, else the default; "off": none).
    runtime_store_option: str | None = None

    @property
    def build_root(self) -> Path:
        """Where build environments live."""
        return self.cache_dir / "build"

    @property
    def progress_dir(self) -> Path:
        """Where running steps leave their progress for the reporter (stacks.progress)."""
        return self.cache_dir / "progress"

    def progress(self, task: str, what: str) -> Any:
        """A stacks.progress.ProgressFile for a running task."""
        from stacks.progress import ProgressFile, progress_path

        return ProgressFile(progress_path(self.progress_dir, task), what, 0)

    @property
    def download_dir(self) -> Path:
        """The download cache (shareable between projects via STACKS_DOWNLOAD_CACHE)."""
        shared = os.environ.get("STACKS_DOWNLOAD_CACHE")
        return Path(shared) if shared else self.cache_dir / "downloads"

    @property
    def runtime_store(self) -> Path | None:
        """The user-level store provided runtimes are linked from (stacks.runtime.store), or None."""
        from stacks.runtime.store import resolve_store

        return resolve_store(self.runtime_store_option)

    @property
    def platform_tag(self) -> str:
        """The target platform name of this machine."""
        from stacks.platforms import build_platform

        return build_platform() or "unknown"

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


# ---------------------------------------------------------------- names


def lock_version_of(ctx: RunContext, env_name: str) -> int | None:
    """The lock version recorded for a layer, if it has lock metadata."""
    from stacks.lock.metadata import read_lock_meta

    meta = read_lock_meta(ctx.spec, ctx.spec.layer(env_name))
    return meta.lock_version if meta is not None else None


def deployed_name(ctx: RunContext, env_name: str) -> str:
    """The deployed folder name of a layer (`<env>@N` when versioned)."""
    layer = ctx.spec.layer(env_name)
    return layer.deployed_name(lock_version_of(ctx, env_name) if layer.versioned else None)


def archive_name(ctx: RunContext, env_name: str) -> str:
    """The archive file name of a layer."""
    base = deployed_name(ctx, env_name)
    if ctx.tag_outputs:
        base = f"{base}-{ctx.platform_tag}"
    return f"{base}.{ctx.archive_format}"


def metadata_name(ctx: RunContext, env_name: str, *, tagged: bool) -> str:
    """The per-layer metadata file name (`<layer>[-<platform>].json`)."""
    return f"{env_name}-{ctx.platform_tag}.json" if tagged else f"{env_name}.json"
