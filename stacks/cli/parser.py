"""The `stacks` argument parser: its commands and their shared options."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from typing import Any

from stacks import __version__
from stacks.cli.checks import cmd_deploy, cmd_verify
from stacks.cli.ci import add_ci_commands
from stacks.cli.compat import add_flag, add_venvstacks_options
from stacks.cli.init import add_init_command
from stacks.cli.maintenance import cmd_clean, cmd_forget, cmd_info, cmd_list
from stacks.cli.show import cmd_show
from stacks.cli.steps import cmd_run, cmd_steps


class StacksParser(argparse.ArgumentParser):
    """The top-level parser: a mistyped command gets a did-you-mean (exit 2)."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        words = list(sys.argv[1:] if args is None else args)
        # The top-level options take no value: the first other word is the command.
        command = next((word for word in words if not word.startswith("-")), None)
        names = command_names(self)
        if command is not None and command not in names:
            close = difflib.get_close_matches(command, names, n=1, cutoff=0.6)
            guess = f"; did you mean '{close[0]}'?" if close else ""
            self.error(f"unknown command '{command}'{guess} (commands: {', '.join(names)})")
        return super().parse_known_args(words, namespace)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """command name -> its parser (aliases included)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_names(parser: argparse.ArgumentParser) -> list[str]:
    """The names of the commands, in the order `--help` lists them."""
    return list(subcommands(parser))


class _Unused:
    """Stands in for the parser of a command this run does not use: every use is ignored."""

    def __getattr__(self, name: str) -> _Unused:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> _Unused:
        return self

    def __getitem__(self, key: Any) -> _Unused:
        return self


def command_word(argv: Sequence[str] | None) -> str | None:
    """The command, when it is the first word (then only its parser need be built)."""
    words = sys.argv[1:] if argv is None else argv
    return words[0] if words and not words[0].startswith("-") else None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of every command; `only`: of that command alone, if it is one.

    Building all ~250 options costs a no-op run ~8 ms; a run needs its own command's.
    """
    if only is not None:
        parser = _build_parser(only)
        if only in subcommands(parser):
            return parser
    return _build_parser(None)


def _build_parser(only: str | None) -> argparse.ArgumentParser:
    prog = "stacks" if not sys.argv[0].endswith("__main__.py") else "python -m stacks"
    parser = StacksParser(
        prog=prog,
        description="Build layered Python environment stacks: runtimes, shared frameworks, applications.",
        allow_abbrev=False,
    )
    parser.add_argument("-V", "--version", action="version", version=f"stacks {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v", "--verbose", action="count", default=0, help="say more (repeatable)"
    )
    verbosity.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    commands = parser.add_subparsers(
        title="commands", metavar="COMMAND", parser_class=argparse.ArgumentParser
    )
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="say more (repeatable)"
    )
    common.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="print only errors"
    )
    original_add_parser = commands.add_parser

    def add_parser(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        if only is not None and name != only:
            return _Unused()  # type: ignore[return-value]
        # No prefix matching: venvstacks' `--show` must not be taken as `--show-only`.
        command = original_add_parser(name, parents=[common], allow_abbrev=False, **kwargs)
        command.set_defaults(command_parser=command, command_name=name)
        return command

    commands.add_parser = add_parser  # type: ignore[method-assign]
    add_init_command(commands)

    show = commands.add_parser("show", help="print the layers of a stack and what each depends on")
    _add_spec_arguments(show)
    add_flag(show, "--json", help="print the stack as JSON")
    _add_lock_arguments(show, reset=False)
    show.add_argument(
        "--build-dir", dest="cache_dir", metavar="DIR", help="cache folder (venvstacks' name)"
    )
    show.set_defaults(handler=cmd_show)

    lock = commands.add_parser(
        "lock", help="lock the layers (cross-platform pylock.toml per layer)"
    )
    _add_run_arguments(lock)
    _add_lock_arguments(lock)
    lock.set_defaults(handler=cmd_steps, step="lock")

    build = commands.add_parser("build", help="lock as needed, then build the layer environments")
    _add_run_arguments(build)
    _add_lock_arguments(build)
    add_flag(
        build,
        "--clean",
        help="rebuild the selected layers from scratch (with --publish, republish them too)",
    )
    build.set_defaults(handler=cmd_steps, step="build")

    publish = commands.add_parser(
        "publish", help="build as needed, then write reproducible layer archives"
    )
    _add_run_arguments(publish)
    _add_lock_arguments(publish)
    publish.add_argument(
        "--output-dir",
        metavar="DIR",
        help="where archives go, relative to the spec's folder (default: <spec dir>/_artifacts)",
    )
    publish.add_argument(
        "--format",
        choices=("tar.xz", "tar.zst", "tar.gz", "zip"),
        default="tar.xz",
        help="archive format (default: tar.xz)",
    )
    add_flag(publish, "--tag-outputs", help="add the platform to archive and metadata names")
    add_flag(
        publish,
        "--bytecode",
        help="ship byte-stable unchecked-hash .pyc files in the archives (deploy skips compiling)",
    )
    add_flag(
        publish,
        "--shard-record",
        help="a CI shard: build only from valid locks, then write __stacks__/shard.json",
    )
    publish.set_defaults(handler=cmd_steps, step="archive")

    for name in ("export", "local-export"):
        export = commands.add_parser(
            name,
            help="build as needed, then export ready-to-run layers to a folder"
            if name == "export"
            else "alias of export",
        )
        _add_run_arguments(export)
        _add_lock_arguments(export)
        export.add_argument(
            "--output-dir",
            metavar="DIR",
            help="export folder, relative to the spec's folder (default: <spec dir>/_export)",
        )
        export.add_argument(
            "--no-symlinks",
            action="store_true",
            help="copy link targets instead of creating symlinks (e.g. FAT)",
        )
        export.set_defaults(handler=cmd_steps, step="export")

    run = commands.add_parser("run", help="run an application from its build environment")
    run.add_argument("spec", metavar="SPEC", help="the stack spec file")
    run.add_argument(
        "app",
        metavar="APP",
        nargs="?",
        help="the application: its name in the spec, or its env name (app-NAME)",
    )
    run.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the application")
    _add_cache_argument(run)
    run.set_defaults(handler=cmd_run, runtime_source=None, python_mirror=None)

    listing = commands.add_parser("list", help="list the stack's tasks (doit list)")
    _add_spec_arguments(listing)
    _add_cache_argument(listing)
    add_flag(listing, "--status", help="show whether each task is up to date")
    add_flag(listing, "--json", help="print the tasks (with --status, their status) as JSON")
    listing.set_defaults(handler=cmd_list)

    info = commands.add_parser(
        "info", help="show a task's dependencies, status and why it would run"
    )
    _add_spec_arguments(info)
    info.add_argument("task", metavar="TASK", help="a task name such as build:app-demo")
    _add_cache_argument(info)
    add_flag(info, "--json", help="print as JSON")
    info.set_defaults(handler=cmd_info)

    for name, text in (
        ("forget", "forget the recorded state of tasks, so they run again"),
        ("clean", "remove what tasks produced (builds, archives, exports)"),
    ):
        sub = commands.add_parser(name, help=text)
        _add_spec_arguments(sub)
        sub.add_argument(
            "tasks",
            nargs="*",
            metavar="TASK",
            help="task names (default: every task of the layers --include matches, or of all)",
        )
        _add_cache_argument(sub)
        sub.add_argument(
            "--no-wait", action="store_true", help="fail at once if another run holds the project"
        )
        sub.set_defaults(handler=cmd_forget if name == "forget" else cmd_clean)

    verify = commands.add_parser(
        "verify",
        help="compare locks, builds, archives and exports (or a deployed folder) with what "
        "was recorded, by full content hash",
    )
    verify.add_argument("spec", metavar="SPEC", nargs="?", help="the stack spec file")
    verify.add_argument(
        "--deployed", metavar="DIR", help="check a deployment folder instead of a stack"
    )
    verify.add_argument(
        "--release",
        metavar="DIR",
        help="check a publish or merged release folder against its own metadata (no SPEC)",
    )
    verify.add_argument(
        "--include",
        metavar="PATTERN",
        action="append",
        default=[],
        help="only layers whose env name matches (fnmatch; repeatable)",
    )
    _add_cache_argument(verify)
    verify.add_argument(
        "--output-dir",
        metavar="DIR",
        help="publish folder, relative to the spec's folder (default: every folder it was "
        "published to)",
    )
    verify.add_argument(
        "--export-dir",
        metavar="DIR",
        help="export folder, relative to the spec's folder (default: every folder it was "
        "exported to)",
    )
    add_flag(
        verify,
        "--allow-missing",
        help="a pattern that matches no layer is a warning, not an error",
    )
    add_flag(verify, "--json", help="print the findings as JSON")
    verify.add_argument(
        "--no-wait", action="store_true", help="fail at once if another run holds the project"
    )
    verify.set_defaults(
        handler=cmd_verify, allow_missing=False, runtime_source=None, python_mirror=None
    )

    deploy = commands.add_parser(
        "deploy", help="verify, unpack and post-install published archives on a target"
    )
    deploy.add_argument(
        "archive_dir", metavar="ARCHIVE_DIR", help="a publish output folder (with __stacks__/)"
    )
    deploy.add_argument("--target", required=True, metavar="DIR", help="the deployment folder")
    deploy.add_argument(
        "layers",
        nargs="*",
        metavar="LAYER",
        help="layers to deploy (default: all), with what they need",
    )
    add_flag(
        deploy,
        "--dry-run",
        help="check the archives and say what each layer would get; change nothing",
    )
    add_flag(deploy, "--json", help="print what was deployed (or would be) as JSON")
    deploy.add_argument(
        "--variant",
        metavar="NAME",
        action="append",
        default=[],
        help="only this hardware variant's layers and the shared ones (repeatable)",
    )
    deploy.set_defaults(handler=cmd_deploy)

    add_ci_commands(commands)

    completion = commands.add_parser(
        "completion", help="print a shell completion script (bash, zsh or fish)"
    )
    completion.add_argument("shell", choices=("bash", "zsh", "fish"), help="the shell")
    completion.set_defaults(handler=_cmd_completion)
    for name, command in subcommands(parser).items():
        add_venvstacks_options(command, name)
    return parser


def _cmd_completion(args: argparse.Namespace) -> int:
    """`stacks completion SHELL`: the completion script, generated from this parser."""
    from stacks.cli.completion import completion_script

    print(completion_script(build_parser(), args.shell), end="")
    return 0


def _add_cache_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-dir",
        "--build-dir",
        dest="cache_dir",
        metavar="DIR",
        help="cache folder, relative to the spec's folder (default: <spec dir>/cache; "
        "--build-dir is venvstacks' name)",
    )


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    _add_spec_arguments(parser)
    _add_cache_argument(parser)
    parser.add_argument(
        "-n",
        "--jobs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="run up to N independent tasks at once (default: the number of cores)",
    )
    add_flag(parser, "--json", help="print the run's results (or the plan) as JSON")
    add_flag(
        parser,
        "--dry-run",
        "--show-only",
        help="print which tasks would run and why, without running them",
    )
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="fail at once if another stacks run holds this project",
    )


def _add_lock_arguments(parser: argparse.ArgumentParser, *, reset: bool = True) -> None:
    if reset:
        parser.add_argument(
            "--reset-lock",
            metavar="PATTERN",
            action="append",
            default=[],
            help="re-resolve matching layers from scratch (fnmatch; repeatable)",
        )
    parser.add_argument(
        "--index-url", metavar="URL", help="use this package index instead of the default one"
    )
    add_flag(
        parser,
        "--index",
        default=None,
        help="use the default package index (where a lock recorded --no-index); "
        "--no-index: use none (only --local-wheels)",
    )
    parser.add_argument(
        "--local-wheels",
        metavar="DIR",
        action="append",
        default=[],
        help="a folder of wheels to lock from, relative to the spec's folder (repeatable)",
    )


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "spec", metavar="SPEC", help="the stack spec file (TOML, or YAML by extension)"
    )
    parser.add_argument(
        "--include",
        metavar="PATTERN",
        action="append",
        default=[],
        help="only layers whose env name matches (fnmatch; repeatable), with the layers they need",
    )
    parser.add_argument(
        "--variant",
        metavar="NAME",
        action="append",
        default=[],
        help="only the layers of this hardware variant and the shared ones (repeatable)",
    )
    add_flag(
        parser,
        "--allow-missing",
        help="a pattern that matches no layer is a warning, not an error",
    )
    parser.add_argument(
        "--runtime-source",
        choices=("python-build-standalone", "local"),
        help="override runtime sources for this run",
    )
    parser.add_argument(
        "--runtime-any-patch",
        action="store_true",
        default=None,
        help="a local runtime pinned to X.Y.Z that is not installed uses the newest installed "
        "X.Y.* instead, with a warning (also STACKS_RUNTIME_ANY_PATCH=1)",
    )
    parser.add_argument(
        "--python-mirror", metavar="URL", help="download host for python-build-standalone"
    )
    parser.add_argument(
        "--runtime-store",
        metavar="DIR",
        help="user-level store provided runtimes are linked from (default: "
        "STACKS_RUNTIME_STORE, else ~/.cache/stacks/runtimes; 'off': none)",
    )
