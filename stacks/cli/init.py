"""`stacks init [DIR]`: a starter project that locks and builds as it is, never over a file."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from stacks.errors import UsageError

SPEC_NAME = "stack.toml"
WORKFLOW_PATH = ".github/workflows/stacks.yml"
LAUNCH_MODULE = "launch/hello_app.py"

# Runtimes an installed CPython can provide without a download, most wanted first.
LOCAL_VERSIONS = ("3.12", "3.13", "3.11", "3.10")
DOWNLOAD_VERSION = "3.12"

SPEC_TEMPLATE = """\
# A starter stack: one runtime, one framework, one application.
# Every field is described in the stacks documentation (docs/spec.md).
#
#   stacks build {spec}         lock what needs it, provide the runtime, build
#   stacks run {spec} hello     run app-hello's launch module from its build
#   stacks publish {spec}       archives + metadata in _artifacts/
#   stacks export {spec}        ready-to-run layers in _export/
#   doit list, doit                 the same steps through doit (dodo.py)
#
{source_comment}
[tool.stacks]
runtime_source = "{source}"

[[runtimes]]
name = "cpython-{version}"
python_implementation = "cpython@{version}"
requirements = []

[[frameworks]]
name = "base"
runtime = "cpython-{version}"
requirements = ["attrs>=23.1"]

[[applications]]
name = "hello"
launch_module = "{launch}"
frameworks = ["base"]
requirements = ["idna>=3.4"]
"""

LOCAL_COMMENT = """\
# The runtime is made from the CPython {version} installed on this machine (pyenv,
# uv-managed or python{version} on PATH), copied and made relocatable: no download.
# Use "python-build-standalone" to download a standalone build instead.
"""

DOWNLOAD_COMMENT = """\
# No CPython {tried} was found on this machine, so the runtime is downloaded from
# python-build-standalone. With one installed, "local" makes it from that instead.
"""

LAUNCH_TEXT = '''\
"""The starter application: a package from its framework (attrs) and one of its own (idna)."""

import sys

import attrs
import idna


@attrs.define
class Greeting:
    text: str


def main() -> None:
    host = idna.encode("bücher.example").decode("ascii")
    print(Greeting(f"hello from app-hello: attrs {attrs.__version__}, idna -> {host}").text)
    print(f"python {sys.version_info.major}.{sys.version_info.minor} at {sys.prefix}")


if __name__ == "__main__":
    main()
'''

DODO_TEXT = '''\
"""doit for this stack: `doit list`, `doit` (build), `doit lock`, `doit export`, ..."""

from stacks.pipeline.doit_project import *  # noqa: F403
'''

GITIGNORE_TEXT = """\
# stacks: regenerable outputs (keep requirements/, the lock files, in git)
cache/
_artifacts/
_export/
_deploy/
"""


def cmd_init(args: argparse.Namespace) -> int:
    """`stacks init [DIR]`: write a starter spec, its launch module, dodo.py and .gitignore."""
    folder = Path(args.directory)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} is not a folder", hint="name a new or existing folder")
    files = starter_files()
    if args.ci == "github":
        files[WORKFLOW_PATH] = starter_workflow()
    _refuse_existing(folder, files)
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        # "x": never replace a file, even one created since the check above.
        with open(path, "x", encoding="utf-8") as handle:
            handle.write(text)
    if not args.quiet:
        shown = os.fspath(folder)
        print(f"wrote {', '.join(files)} in {shown}", file=sys.stderr)
        go = "" if shown in (".", "") else f"cd {shown} && "
        print(
            f"next: {go}stacks build {SPEC_NAME} && stacks run {SPEC_NAME} hello", file=sys.stderr
        )
    return 0


def starter_files() -> dict[str, str]:
    """The starter project's files by relative path: spec, launch module, dodo.py, .gitignore."""
    version, source = starter_runtime()
    comment = (
        LOCAL_COMMENT.format(version=version)
        if source == "local"
        else DOWNLOAD_COMMENT.format(tried=", ".join(LOCAL_VERSIONS))
    )
    spec = SPEC_TEMPLATE.format(
        spec=SPEC_NAME,
        source_comment=comment,
        source=source,
        version=version,
        launch=LAUNCH_MODULE,
    )
    return {
        SPEC_NAME: spec,
        LAUNCH_MODULE: LAUNCH_TEXT,
        "dodo.py": DODO_TEXT,
        ".gitignore": GITIGNORE_TEXT,
    }


def starter_workflow() -> str:
    """The GitHub Actions workflow of the starter project (`stacks init --ci github`)."""
    from stacks.cli.ci import default_install
    from stacks.pipeline.ci_workflow import TOOL_PYTHON, github_workflow

    version, _ = starter_runtime()
    pythons = [version] if version == TOOL_PYTHON else [version, TOOL_PYTHON]
    return github_workflow(SPEC_NAME, ".", pythons=pythons, install=default_install())


def starter_runtime() -> tuple[str, str]:
    """(Python X.Y, runtime source): an installed CPython if there is one, else a download."""
    from stacks.errors import RuntimeFetchError
    from stacks.runtime.sources import find_local_interpreter

    for version in LOCAL_VERSIONS:
        try:
            find_local_interpreter(version)
        except RuntimeFetchError:
            continue
        return version, "local"
    return DOWNLOAD_VERSION, "python-build-standalone"


def _refuse_existing(folder: Path, files: dict[str, str]) -> None:
    """Fail, writing nothing, if any file to write (or another project spec) is already there."""
    from stacks.pipeline.doit_project import SPEC_NAMES

    names = [*files, *(name for name in SPEC_NAMES if name not in files)]
    present = [name for name in names if os.path.lexists(folder / name)]
    # A file where a folder must go (`launch`) would stop the writing half way.
    folders = {parent for name in files for parent in Path(name).parents if parent != Path(".")}
    present += sorted(
        os.fspath(name)
        for name in folders
        if os.path.lexists(folder / name) and not (folder / name).is_dir()
    )
    if present:
        listed = ", ".join(os.fspath(folder / name) for name in present)
        raise UsageError(
            f"stacks init: {listed} already exist{'s' if len(present) == 1 else ''}; nothing was written",
            hint="stacks init never replaces a file: choose a new folder (`stacks init DIR`) "
            "or move the file away",
        )


def add_init_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `stacks init [DIR]` on the command parsers."""
    init = commands.add_parser(
        "init", help="start a project: a starter spec, its launch module, dodo.py and .gitignore"
    )
    init.add_argument(
        "directory",
        metavar="DIR",
        nargs="?",
        default=".",
        help="the project folder (default: the current folder; created if missing)",
    )
    init.add_argument(
        "--ci",
        choices=("github",),
        help="also write a CI workflow that builds every platform (.github/workflows/stacks.yml)",
    )
    init.set_defaults(handler=cmd_init)
