"""The `stacks` argument parser: its commands and their shared options."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from stacks import __version__
from stacks.cli.checks import cmd_deploy, cmd_verify
from stacks.cli.init import add_init_command
from stacks.cli.maintenance import cmd_clean, cmd_forget, cmd_info, cmd_list
from stacks.cli.show import cmd_show
from stacks.cli.steps import cmd_run, cmd_steps


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    prog = "stacks" if not sys.argv[0].endswith("__main__.py") else "python -m stacks"
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Build layered Python environment stacks: runtimes, shared frameworks, applications.",
    )
    parser.add_argument("--version", action="version", version=f"stacks {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v", "--verbose", action="count", default=0, help="say more (repeatable)"
    )
    verbosity.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="say more (repeatable)"
    )
    common.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="print only errors"
    )
    original_add_parser = commands.add_parser

    def add_parser(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        command = original_add_parser(name, parents=[common], **kwargs)
        command.set_defaults(command_parser=command)
        return command

    commands.add_parser = add_parser  # type: ignore[method-assign]
    add_init_command(commands)

    show = commands.add_parser("show", help="print the layers of a stack and what each depends on")
    _add_spec_arguments(show)
    show.add_argument("--json", action="store_true", help="print the stack as JSON")
    _add_lock_arguments(show, reset=False)
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
    build.add_argument(
        "--clean", action="store_true", help="rebuild the selected layers even if up to date"
    )
    build.set_defaults(handler=cmd_steps, step="build")

    publish = commands.add_parser(
        "publish", help="build as needed, then write reproducible layer archives"
    )
    _add_run_arguments(publish)
    _add_lock_arguments(publish)
    publish.add_argument(
        "--output-dir", metavar="DIR", help="where archives go (default: <spec dir>/_artifacts)"
    )
    publish.add_argument(
        "--format",
        choices=("tar.xz", "tar.zst", "tar.gz", "zip"),
        default="tar.xz",
        help="archive format (default: tar.xz)",
    )
    publish.add_argument(
        "--tag-outputs", action="store_true", help="add the platform to archive and metadata names"
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
            "--output-dir", metavar="DIR", help="export folder (default: <spec dir>/_export)"
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
        "app", metavar="APP", nargs="?", help="application name (`demo` or `app-demo`)"
    )
    run.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the application")
    run.add_argument("--cache-dir", metavar="DIR", help="cache folder (default: <spec dir>/cache)")
    run.set_defaults(handler=cmd_run, runtime_source=None, python_mirror=None)

    listing = commands.add_parser("list", help="list the stack's tasks (doit list)")
    _add_spec_arguments(listing)
    listing.add_argument(
        "--cache-dir", metavar="DIR", help="cache folder (default: <spec dir>/cache)"
    )
    listing.add_argument(
        "--status", action="store_true", help="show whether each task is up to date"
    )
    listing.set_defaults(handler=cmd_list)

    info = commands.add_parser(
        "info", help="show a task's dependencies, status and why it would run"
    )
    _add_spec_arguments(info)
    info.add_argument("task", metavar="TASK", help="a task name such as build:app-demo")
    info.add_argument("--cache-dir", metavar="DIR", help="cache folder (default: <spec dir>/cache)")
    info.add_argument("--json", action="store_true", help="print as JSON")
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
        sub.add_argument(
            "--cache-dir", metavar="DIR", help="cache folder (default: <spec dir>/cache)"
        )
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
        "--include",
        metavar="PATTERN",
        action="append",
        default=[],
        help="only layers whose env name matches (fnmatch; repeatable)",
    )
    verify.add_argument(
        "--cache-dir", metavar="DIR", help="cache folder (default: <spec dir>/cache)"
    )
    verify.add_argument(
        "--output-dir",
        metavar="DIR",
        help="publish folder (default: every folder it was published to)",
    )
    verify.add_argument(
        "--export-dir",
        metavar="DIR",
        help="export folder (default: every folder it was exported to)",
    )
    verify.add_argument(
        "--allow-missing",
        action="store_true",
        help="a pattern that matches no layer is a warning, not an error",
    )
    verify.add_argument("--json", action="store_true", help="print the findings as JSON")
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
    deploy.set_defaults(handler=cmd_deploy)
    return parser


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    _add_spec_arguments(parser)
    parser.add_argument(
        "--cache-dir", metavar="DIR", help="cache folder (default: <spec dir>/cache)"
    )
    parser.add_argument(
        "-n",
        "--jobs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="run up to N independent tasks at once (default: the number of cores)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the run's results (or the plan) as JSON"
    )
    parser.add_argument(
        "--dry-run",
        "--show-only",
        dest="dry_run",
        action="store_true",
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
    index = parser.add_mutually_exclusive_group()
    index.add_argument(
        "--no-index", action="store_true", help="use no package index (only --local-wheels)"
    )
    index.add_argument(
        "--index",
        action="store_true",
        help="use the default package index (where a lock recorded --no-index)",
    )
    parser.add_argument(
        "--local-wheels",
        metavar="DIR",
        action="append",
        default=[],
        help="a folder of wheels to lock from (repeatable)",
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
        "--allow-missing",
        action="store_true",
        help="a pattern that matches no layer is a warning, not an error",
    )
    parser.add_argument(
        "--runtime-source",
        choices=("python-build-standalone", "local"),
        help="override runtime sources for this run",
    )
    parser.add_argument(
        "--python-mirror", metavar="URL", help="download host for python-build-standalone"
    )
