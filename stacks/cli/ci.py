"""`stacks ci matrix|workflow` (plan a CI matrix, write its workflow) and `stacks merge`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from stacks.cli.compat import add_flag
from stacks.cli.context import load_stack
from stacks.errors import UsageError

WORKFLOW_PATH = ".github/workflows/stacks.yml"


def cmd_ci_matrix(args: argparse.Namespace) -> int:
    """`stacks ci matrix SPEC`: the lock job, the shards and the merge job."""
    from stacks.pipeline.shards import matrix_plan

    spec = load_stack(args)
    if args.format == "gitlab":
        from stacks.pipeline.ci_workflow import gitlab_child_pipeline

        print(gitlab_child_pipeline(spec, args.max_shards, args.archive_format), end="")
        return 0
    plan = matrix_plan(spec, args.max_shards, args.archive_format)
    if args.format == "github":
        # One line: it goes into $GITHUB_OUTPUT, read back with fromJSON.
        print(json.dumps({"include": plan["shards"]}, separators=(",", ":")))
    else:
        print(json.dumps(plan, indent=2))
    return 0


def cmd_ci_workflow(args: argparse.Namespace) -> int:
    """`stacks ci workflow SPEC --github`: write the GitHub Actions workflow (never over a file)."""
    from stacks.pipeline.ci_workflow import github_workflow, runtime_pythons
    from stacks.pipeline.shards import plan_shards

    if not args.github:
        raise UsageError(
            "stacks ci workflow: which CI? (--github)",
            hint="GitLab: `stacks ci matrix SPEC --format gitlab` writes a child pipeline; "
            "see the README, 'Building for several platforms'",
        )
    spec = load_stack(args)
    plan_shards(spec, args.max_shards)  # a spec that cannot be planned fails now, not in CI
    root = repository_root(spec.spec_dir)
    text = github_workflow(
        spec.name,
        os.path.relpath(spec.spec_dir, root).replace(os.sep, "/"),
        pythons=runtime_pythons(spec),
        install=args.install or default_install(),
        max_shards=args.max_shards,
        archive_format=args.archive_format,
    )
    if args.output == "-":
        print(text, end="")
        return 0
    target = Path(args.output) if args.output else root / WORKFLOW_PATH
    write_new_file(target, text, force=args.force)
    if not args.quiet:
        print(f"wrote {target}", file=sys.stderr)
    return 0


def repository_root(folder: Path) -> Path:
    """The nearest folder at or above `folder` with a `.git`; else `folder` itself."""
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return folder


def default_install() -> str:
    """What the workflow installs with pip: this version of stacks."""
    from stacks import __version__

    return f"stacks=={__version__}"


def write_new_file(target: Path, text: str, *, force: bool) -> None:
    """Write `text` to `target` (atomically); an existing file only with `force`."""
    from stacks import atomic

    if target.exists() and not force:
        raise UsageError(
            f"{target} already exists; nothing was written",
            hint="pass --force to replace it, or --output FILE (- for standard output)",
        )
    atomic.write_text(target, text)


def cmd_merge(args: argparse.Namespace) -> int:
    """`stacks merge OUTPUT SHARD_DIR...`: one release folder from the shards' publish folders."""
    from stacks.publish.merge import merge_shards, stack_entry

    stack: list[dict[str, Any]] | None = None
    if args.spec:
        spec = load_stack(args)
        stack = [
            stack_entry(layer.env_name, layer.kind.value, layer.platforms) for layer in spec.layers
        ]
    output = Path(os.path.abspath(args.output))
    shards = [Path(os.path.abspath(folder)) for folder in args.shards]
    if output in shards:
        raise UsageError(
            f"stacks merge: {output} is both the output and a shard folder",
            hint="merge into a new folder",
        )
    result = merge_shards(output, shards, stack=stack)
    if not args.quiet:
        what = "merged" if result.changed else "already up to date:"
        print(
            f"{what} {result.output}: {result.archives} archives for "
            f"{', '.join(result.platforms)} from {len(shards)} shards",
            file=sys.stderr,
        )
    return 0


def add_ci_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `stacks ci matrix|workflow` and `stacks merge` on the command parsers."""
    ci = commands.add_parser("ci", help="plan a CI matrix of shards, or write its workflow")
    kinds = ci.add_subparsers(title="ci commands", metavar="WHAT", required=True)
    for name, text in (
        ("matrix", "print the plan: one lock job, then one shard per platform x layer tree"),
        ("workflow", "write a CI workflow that locks, builds the shards and merges them"),
    ):
        sub = kinds.add_parser(name, help=text, allow_abbrev=False)
        sub.add_argument("spec", metavar="SPEC", help="the stack spec file")
        sub.add_argument(
            "--max-shards",
            type=_shard_count,
            metavar="N",
            help="merge independent trees of one platform until there are at most N shards",
        )
        sub.add_argument(
            "--archive-format",
            choices=("tar.xz", "tar.zst", "tar.gz", "zip"),
            default="tar.xz",
            help="the format the shards publish (default: tar.xz, as `stacks publish`)",
        )
        sub.add_argument(
            "-q",
            "--quiet",
            action="store_true",
            default=argparse.SUPPRESS,
            help="print only errors",
        )
        sub.set_defaults(
            runtime_source=None, python_mirror=None, command_parser=sub, command_name=f"ci {name}"
        )
    matrix, workflow = kinds.choices["matrix"], kinds.choices["workflow"]
    matrix.add_argument(
        "--format",
        choices=("json", "github", "gitlab"),
        default="json",
        help="json: the whole plan; github: the matrix for fromJSON, on one line; "
        "gitlab: a child pipeline (default: json)",
    )
    matrix.set_defaults(handler=cmd_ci_matrix)
    add_flag(workflow, "--github", help="a GitHub Actions workflow")
    workflow.add_argument(
        "--output",
        metavar="FILE",
        help=f"where to write it (default: <repository root>/{WORKFLOW_PATH}; - prints it)",
    )
    workflow.add_argument(
        "--install",
        metavar="REQUIREMENT",
        help="what the jobs `pip install` to get stacks (default: this version of stacks)",
    )
    add_flag(workflow, "--force", help="replace the workflow file if it exists")
    workflow.set_defaults(handler=cmd_ci_workflow)

    merge = commands.add_parser(
        "merge", help="merge the publish folders of CI shards into one release folder"
    )
    merge.add_argument("output", metavar="OUTPUT", help="the release folder to write")
    merge.add_argument(
        "shards", nargs="+", metavar="SHARD_DIR", help="shard publish folders (with shard.json)"
    )
    merge.add_argument(
        "--spec",
        metavar="SPEC",
        help="check the layers and platforms against this spec (default: the shard records')",
    )
    merge.set_defaults(handler=cmd_merge, runtime_source=None, python_mirror=None)


def _shard_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value
