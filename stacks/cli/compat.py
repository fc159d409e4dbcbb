"""venvstacks' command-line options, accepted by stacks: their definitions and what each maps to.

A CI script written for venvstacks 0.8 runs with the program name changed. Options whose
venvstacks meaning is already stacks' behaviour (a valid lock is never relocked, what a step
needs is always brought up to date first) are accepted and say so in their help.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stacks.errors import StacksError

if TYPE_CHECKING:
    from stacks.pipeline.run_context import RunContext
    from stacks.spec import LayerSpec, StackSpec


class Flag(argparse.BooleanOptionalAction):
    """A boolean option with its `--no-X` form, without argparse's "(default: ...)" help suffix."""

    def __init__(self, *args: Any, help: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = help


def add_flag(
    parser: argparse.ArgumentParser | Any, *names: str, help: str, default: bool | None = False
) -> None:
    """Add `--X/--no-X` (None as default: not given, so the command's own behaviour applies)."""
    parser.add_argument(*names, action=Flag, default=default, help=help)


MOOT = "accepted for venvstacks scripts; stacks does this anyway"


def add_venvstacks_options(parser: argparse.ArgumentParser, command: str) -> None:
    """The venvstacks 0.8 options of `command` that stacks has no option of its own for."""
    if command in ("lock", "build", "publish", "export", "local-export"):
        add_flag(parser, "--show", help="print the stack's layers (as `stacks show`), then run")
    if command == "lock":
        add_flag(
            parser,
            "--clean",
            help="provide the selected layers' runtimes afresh before locking",
        )
        add_flag(
            parser,
            "--if-needed",
            help=f"lock only layers without a valid lock ({MOOT}: a valid lock is never relocked)",
        )
        _dependency_flags(parser, ("lock",))
    if command == "build":
        add_flag(
            parser,
            "--lock-if-needed",
            default=None,
            help="relock outdated layers first (the default); --no-lock-if-needed instead fails"
            " when a selected layer has no valid lock",
        )
        add_flag(parser, "--lock", default=None, help="alias of --lock-if-needed (venvstacks)")
        add_flag(
            parser,
            "--build",
            default=True,
            help="build the layer environments (--no-build: only lock, or with --publish, "
            "publish; stacks still builds what an archive needs)",
        )
        add_flag(parser, "--publish", help="then publish the archives (as `stacks publish`)")
        parser.add_argument(
            "--output-dir",
            metavar="DIR",
            help="with --publish: where archives go (default: <spec dir>/_artifacts)",
        )
        add_flag(
            parser,
            "--tag-outputs",
            help="with --publish: add the platform to archive and metadata names",
        )
        parser.add_argument(
            "--format",
            choices=("tar.xz", "tar.zst", "tar.gz", "zip"),
            default="tar.xz",
            help="with --publish: archive format (default: tar.xz)",
        )
        add_flag(
            parser,
            "--bytecode",
            help="with --publish: ship byte-stable unchecked-hash .pyc files (deploy skips compiling)",
        )
        _dependency_flags(parser, ("lock", "build", "publish"))
        add_flag(
            parser,
            "--include-dependencies",
            default=None,
            help="set all three --X-dependencies options at once",
        )
        add_flag(
            parser,
            "--build-derived",
            help="also build the layers that depend on the --include layers",
        )
    if command in ("build", "publish", "export", "local-export"):
        if command != "build":
            _dependency_flags(parser, ("publish",))
        add_flag(
            parser,
            "--publish-derived",
            help="also publish (or export) the layers that depend on the --include layers",
        )
    if command in ("publish", "export", "local-export"):
        add_flag(
            parser,
            "--force",
            help="write the archives (or exported layers) again even if they are up to date",
        )


def _dependency_flags(parser: argparse.ArgumentParser, steps: Sequence[str]) -> None:
    texts = {
        "lock": f"also lock what the --include layers need ({MOOT}: it locks them if needed)",
        "build": "with --clean, also rebuild what the --include layers need from scratch "
        "(without it they are built if needed)",
        "publish": "also publish what the --include layers need (the default; "
        "--no-publish-dependencies publishes only the --include layers; an export always "
        "holds what its layers need)",
    }
    for step in steps:
        add_flag(
            parser,
            f"--{step}-dependencies",
            default=None if step == "publish" else False,
            help=texts[step],
        )


def apply_options(args: argparse.Namespace) -> None:
    """Turn venvstacks' options and spellings into stacks' own, in place, before a command runs.

    Relative folders are resolved against the spec's folder, as venvstacks does.
    """
    if hasattr(args, "index"):
        args.no_index = args.index is False
        args.index = args.index is True
    include_deps = getattr(args, "include_dependencies", None)
    if include_deps is not None:
        for step in ("lock", "build", "publish"):
            setattr(args, f"{step}_dependencies", include_deps)
    if getattr(args, "command_name", None) == "build":
        if args.publish:
            args.step = "archive"
        elif not args.build:
            args.step = "lock"
    if getattr(args, "spec", None) is not None:
        _resolve_folders(args, Path(os.path.abspath(args.spec)).parent)


_FOLDERS = {
    "cache_dir": "cache (build) folder",
    "output_dir": "output folder",
    "export_dir": "export folder",
}


def _resolve_folders(args: argparse.Namespace, spec_dir: Path) -> None:
    def resolve(value: str, what: str) -> str:
        path = Path(os.path.expanduser(value))
        if path.is_absolute():
            return os.fspath(path)
        absolute = Path(os.path.abspath(spec_dir / path))
        if not getattr(args, "quiet", False):
            print(
                f"note: {what} {value} is {absolute} (relative to the spec's folder)",
                file=sys.stderr,
            )
        return os.fspath(absolute)

    for attribute, what in _FOLDERS.items():
        value = getattr(args, attribute, None)
        if value:
            setattr(args, attribute, resolve(value, what))
    if getattr(args, "local_wheels", None):
        args.local_wheels = [resolve(v, "local wheels folder") for v in args.local_wheels]


def show_first(args: argparse.Namespace) -> None:
    """`--show`: print the layers as `stacks show` does before the command runs.

    With --json the tree goes to stderr, so stdout stays one JSON document.
    """
    import contextlib

    from stacks.cli.show import cmd_show

    shown = argparse.Namespace(**{**vars(args), "json": False, "quiet": True})
    stream = sys.stderr if getattr(args, "json", False) else sys.stdout
    with contextlib.redirect_stdout(stream):
        cmd_show(shown)
    sys.stdout.flush()


def step_layers(args: argparse.Namespace, spec: StackSpec) -> tuple[LayerSpec, ...]:
    """The layers whose step tasks the command asks for: --include with what it adds."""
    from stacks.cli.context import asked_layers, selected_layers
    from stacks.pipeline.steps import BUILD, LOCK, PublishStep, step_named

    step = step_named(args.step)
    derived = bool(getattr(args, "build_derived" if step is BUILD else "publish_derived", False))
    if isinstance(step, PublishStep) and getattr(args, "publish_dependencies", None) is False:
        with_derived = selected_layers(args, spec, with_dependents=derived)
        asked = {layer.env_name for layer in asked_layers(args, with_derived)}
        if derived:
            asked.update(d.env_name for name in set(asked) for d in spec.dependents(name))
        return tuple(layer for layer in with_derived if layer.env_name in asked)
    # `lock` takes no --*-derived: a lock above is redone only when its inputs change.
    return selected_layers(args, spec, with_dependents=derived and step is not LOCK)


def extra_tasks(args: argparse.Namespace, ctx: RunContext, spec: StackSpec) -> list[str]:
    """`build --publish --build-derived`: the derived layers' builds, beyond what is published."""
    from stacks.cli.context import selected_layers
    from stacks.pipeline.run_context import builds_here, task_name
    from stacks.pipeline.steps import BUILD, PublishStep, step_named

    if not isinstance(step_named(args.step), PublishStep) or not getattr(
        args, "build_derived", False
    ):
        return []
    return [
        task_name(BUILD.name, layer.env_name)
        for layer in selected_layers(args, spec, with_dependents=True)
        if builds_here(ctx, layer)
    ]


def step_options(
    args: argparse.Namespace, ctx: RunContext, layers: Sequence[LayerSpec]
) -> RunContext:
    """Apply --clean, --force and --no-lock-if-needed to the run context of a step command."""
    from stacks.cli.context import asked_layers
    from stacks.pipeline.run_context import builds_here, task_name
    from stacks.pipeline.steps import ARCHIVE, BUILD, LOCK, RUNTIME, PublishStep, step_named

    _require_locks(args, ctx, layers)
    step = step_named(args.step)
    spec = ctx.spec
    asked = asked_layers(args, layers)
    forced: set[str] = set()
    clean = getattr(args, "clean", False)
    if step is LOCK and clean:
        runtimes = {layer.runtime for layer in layers}
        forced.update(task_name(RUNTIME.name, name) for name in runtimes)
    elif clean:
        rebuilt = {layer.env_name for layer in asked}
        if getattr(args, "build_derived", False):
            rebuilt.update(d.env_name for name in set(rebuilt) for d in spec.dependents(name))
        if getattr(args, "build_dependencies", False):
            rebuilt.update(dep for name in set(rebuilt) for dep in spec.layer(name).dependencies)
        # `build --clean --publish` (the archive step here) rebuilds, as venvstacks does.
        rebuild = BUILD if step is ARCHIVE else step
        forced.update(
            task_name(rebuild.name, layer.env_name)
            for layer in spec.layers
            if layer.env_name in rebuilt and builds_here(ctx, layer)
        )
    if isinstance(step, PublishStep) and (clean or getattr(args, "force", False)):
        # venvstacks' `build --clean --publish` republishes; `--force` rewrites up-to-date outputs
        # of the layers asked for (and those above them with --publish-derived).
        rewritten = {layer.env_name for layer in asked}
        if getattr(args, "publish_derived", False):
            rewritten.update(d.env_name for name in set(rewritten) for d in spec.dependents(name))
        forced.update(
            task_name(step.name, layer.env_name)
            for layer in layers
            if layer.env_name in rewritten and builds_here(ctx, layer)
        )
    return ctx.with_options(forced=frozenset(forced)) if forced else ctx


def _require_locks(args: argparse.Namespace, ctx: RunContext, layers: Sequence[LayerSpec]) -> None:
    """`build --no-lock-if-needed` (venvstacks' default): fail rather than lock anything."""
    from stacks.lock.locking import lock_state

    wanted = getattr(args, "lock_if_needed", None)
    if wanted is None:
        wanted = getattr(args, "lock", None)
    if wanted is not False:
        return
    names = {layer.env_name for layer in layers}
    names.update(dep for layer in layers for dep in layer.dependencies)
    unlocked = [
        layer.env_name
        for layer in ctx.spec.layers
        if layer.env_name in names and not lock_state(ctx.spec, layer, ctx.lock_options).valid
    ]
    if unlocked:
        raise StacksError(
            f"no valid lock for: {', '.join(unlocked)} (--no-lock-if-needed locks nothing)",
            hint=f"run `stacks lock {args.spec}` first, or drop --no-lock-if-needed",
        )
