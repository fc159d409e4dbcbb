"""doit in a stacks project: a `dodo.py` that is `from stacks.pipeline.doit_project import *`.

`doit list`, `doit`, `doit build:app-x`, ... then run the same tasks as `stacks <verb> SPEC`
for the spec named by `doit spec=PATH` (relative to the folder doit runs in: the dodo.py's folder unless
`doit -d DIR`) or, without it, the project's own spec in that folder (SPEC_NAMES, first found wins). Outputs go
to the spec folder's `cache/`, `_artifacts/` and `_export/`, as with the `stacks` command.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from stacks.errors import StacksError, UsageError
from stacks.pipeline.run_context import RunContext
from stacks.pipeline.steps import STEPS, generators

# The names a project's own spec is looked for under, in this order.
SPEC_NAMES = ("venvstacks.toml", "stack.toml", "stacks.toml", "stacks.yaml")


# doit commands that only read: they do not take the project lock.
READ_ONLY_COMMANDS = {"list", "info", "help", "dumpdb", "tabcompletion"}

# Served by the module __getattr__ below, on first use.
__all__ = ["DOIT_CONFIG", *(f"task_{step.name}" for step in STEPS)]  # noqa: F822


def find_project_spec(directory: Path) -> Path:
    """The project's own spec in `directory`: the first of SPEC_NAMES that exists."""
    for name in SPEC_NAMES:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    raise UsageError(
        f"no stack spec in {directory}: looked for {', '.join(SPEC_NAMES)}",
        hint="run doit in the project folder, name the spec with `doit spec=PATH`, "
        "or create a project with `stacks init`",
    )


def project_context(
    spec: str | None = None, *, default_spec: str | None = None, cwd: Path | None = None
) -> RunContext:
    """The RunContext for `spec` (or the default), resolved against the working directory."""
    from stacks.lock.metadata import LockOptions
    from stacks.spec import load_spec

    where = Path.cwd() if cwd is None else cwd
    if spec:
        path = where / spec
    elif default_spec:
        path = where / default_spec
    else:
        path = find_project_spec(where)
    loaded = load_spec(path)
    return RunContext(
        spec=loaded,
        cache_dir=loaded.spec_dir / "cache",
        lock_options=LockOptions(given=False),  # each lock keeps the index settings it recorded
        output_dir=loaded.spec_dir / "_artifacts",
        export_dir=loaded.spec_dir / "_export",
    )


def project_namespace(*, default_spec: str | None = None) -> dict[str, Any]:
    """DOIT_CONFIG and the task_* creators for the spec doit was given (`doit spec=PATH`).

    Errors in the spec are printed and end doit with their exit code, never a traceback.
    Commands that change outputs hold the project lock for the whole doit process.
    """
    from doit import get_var

    from stacks.pipeline.engine import doit_config
    from stacks.pipeline.project_lock import project_lock

    try:
        ctx = project_context(get_var("spec", None), default_spec=default_spec)
    except StacksError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(error.exit_code) from None
    namespace: dict[str, Any] = {"DOIT_CONFIG": {**doit_config(ctx), "default_tasks": ["build"]}}
    for step, generator in generators().items():
        namespace[f"task_{step}"] = _task_creator(step, generator, ctx)
    if _doit_command(sys.argv[1:]) not in READ_ONLY_COMMANDS:
        held = contextlib.ExitStack()
        held.enter_context(project_lock(Path(ctx.cache_dir)))
        atexit.register(held.close)
    return namespace


def _task_creator(
    step: str, generator: Callable[[RunContext], Iterator[dict[str, Any]]], ctx: RunContext
) -> Callable[[], Iterator[dict[str, Any]]]:
    def create() -> Iterator[dict[str, Any]]:
        yield from generator(ctx)

    create.__name__ = f"task_{step}"
    create.__doc__ = generator.__doc__
    return create


def _doit_command(arguments: list[str]) -> str | None:
    """The doit command a `doit` command line runs (None: `run`), read as doit reads it."""
    words: list[str] = []
    skip_next = False
    for word in arguments:
        if skip_next:
            skip_next = False
        elif word in ("-f", "--file", "-d", "--dir"):  # doit's loader options taking a value
            skip_next = True
        elif word not in ("-k", "--seek-file") and not (word[:1] != "-" and "=" in word):
            words.append(word)
    return words[0] if words and not words[0].startswith("-") else None


_namespace: dict[str, Any] | None = None


def __getattr__(name: str) -> Any:
    # Resolved on first use (`import *` asks for every name in __all__), so importing this
    # module for project_namespace() alone never looks for a spec.
    global _namespace
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _namespace is None:
        _namespace = project_namespace()
    return _namespace[name]
