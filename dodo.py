"""doit entry point: `doit list`, `doit lock`, `doit build`, ... for the spec named by `doit spec=PATH`.

The same tasks `stacks <verb> SPEC` runs (default spec: specs/demo.toml). Outputs go to
the spec folder's `cache/`, `_artifacts/` and `_export/`, as with the `stacks` command.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from doit import get_var

from stacks.errors import StacksError
from stacks.lock.metadata import LockOptions
from stacks.pipeline.engine import doit_config
from stacks.pipeline.project_lock import project_lock
from stacks.pipeline.run_context import RunContext
from stacks.pipeline.steps import generators
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


def _task_creator(generate: Callable[[RunContext], Iterator[dict[str, Any]]]) -> Callable[[], Any]:
    def create() -> Iterator[dict[str, Any]]:
        yield from generate(_CTX)

    create.__doc__ = generate.__doc__
    return create


# One `task_<step>` per registered step: doit finds them by their names in this module.
for _basename, _generate in generators().items():
    globals()[f"task_{_basename}"] = _task_creator(_generate)
