"""doit entry point: `doit list`, `doit lock`, `doit build`, ... for the spec named by `doit spec=PATH`.

The same tasks `stacks <verb> SPEC` runs (default spec: specs/demo.toml). Outputs go to
the spec folder's `cache/`, `_artifacts/` and `_export/`, as with the `stacks` command.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
from pathlib import Path

from doit import get_var

from stacks.errors import StacksError
from stacks.lock.metadata import LockOptions
from stacks.pipeline.engine import doit_config, project_lock
from stacks.pipeline.tasks import (
    RunContext,
    archive_tasks,
    build_tasks,
    export_tasks,
    lock_tasks,
    runtime_tasks,
)
from stacks.spec import load_spec

try:
    _SPEC = load_spec(get_var("spec", "specs/demo.toml"))
except StacksError as _error:
    print(f"error: {_error}", file=sys.stderr)
    raise SystemExit(_error.exit_code) from None

_CTX = RunContext(
    spec=_SPEC,
    cache_dir=_SPEC.spec_dir / "cache",
    lock_options=LockOptions(given=False),  # each lock keeps the index settings it recorded
    output_dir=_SPEC.spec_dir / "_artifacts",
    export_dir=_SPEC.spec_dir / "_export",
)
DOIT_CONFIG = {**doit_config(_CTX), "default_tasks": ["build"]}

# Commands that change outputs hold the project lock for the whole doit process.
if not (set(sys.argv[1:2]) & {"list", "info", "help", "dumpdb"}):
    _lock = contextlib.ExitStack()
    _lock.enter_context(project_lock(Path(_CTX.cache_dir)))
    atexit.register(_lock.close)


def task_runtime():
    """Provide the stack's runtimes."""
    yield from runtime_tasks(_CTX)


def task_lock():
    """Lock every layer (pylock.toml per layer)."""
    yield from lock_tasks(_CTX)


def task_build():
    """Build every layer targeting this platform."""
    yield from build_tasks(_CTX)


def task_archive():
    """Write a reproducible archive of every built layer (stacks publish)."""
    yield from archive_tasks(_CTX)


def task_export():
    """Export every built layer, ready to run (stacks export)."""
    yield from export_tasks(_CTX)
