"""`stacks lock/build/publish/export` (running the step tasks) and `stacks run`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from stacks.cli.compat import extra_tasks, step_layers, step_options
from stacks.cli.context import check_reset_patterns, context_from_args, load_stack, narrowed
from stacks.errors import StacksError, UsageError

if TYPE_CHECKING:
    from stacks.spec import LayerSpec, StackSpec


def cmd_steps(args: argparse.Namespace) -> int:
    """`stacks lock/build/publish/export`: run (or with --dry-run plan) the step's tasks."""
    import os

    from stacks.pipeline.engine import plan, run_tasks
    from stacks.pipeline.reporter import StacksReporter
    from stacks.pipeline.run_context import builds_here
    from stacks.pipeline.steps import PublishStep, step_named

    step = step_named(args.step)
    spec = load_stack(args)
    layers = step_layers(args, spec)
    check_reset_patterns(args, spec)
    ctx = context_from_args(args, spec)
    if isinstance(step, PublishStep):
        from stacks.pipeline.output_folders import check_output_folder

        check_output_folder(ctx, step, [lay for lay in layers if builds_here(ctx, lay)])
    if narrowed(args):
        ctx = ctx.with_options(selected=frozenset(layer.env_name for layer in layers))
    wanted = step.task_names(ctx, layers) + extra_tasks(args, ctx, spec)
    skipped = [
        layer.env_name
        for layer in layers
        if step.needs_this_platform and not builds_here(ctx, layer)
    ]
    if skipped and not args.quiet:
        print(f"note: not built here ({ctx.platform_tag}): {', '.join(skipped)}", file=sys.stderr)
    # --clean and --force: only the layers asked for are forced (see compat.step_options).
    ctx = step_options(args, ctx, layers)
    built_here = [layer for layer in layers if builds_here(ctx, layer)]
    if getattr(args, "shard_record", False):
        from stacks.pipeline.shards import check_shard_run

        check_shard_run(ctx, built_here)
    if args.dry_run:
        planned = plan(ctx, wanted)
        if args.json:
            print(json.dumps({"plan": [p.to_json() for p in planned]}, indent=2))
        else:
            for item in planned:
                reasons = f": {'; '.join(item.reasons)}" if item.reasons else ""
                label = {"run": "would run", "maybe": "may run", "up-to-date": "up to date"}[
                    item.status
                ]
                print(f"{item.task:40} {label}{reasons}")
        return 0
    if args.verbose:
        # Read by the steps (workers inherit it): uv's own output streams through.
        os.environ.setdefault("STACKS_STREAM_UV", "1")
    reporter = StacksReporter(verbose=args.verbose, quiet=args.quiet)
    jobs = args.jobs if args.jobs is not None else (os.cpu_count() or 1)
    result = run_tasks(ctx, wanted, jobs=jobs, reporter=reporter, wait=not args.no_wait)
    if getattr(args, "shard_record", False) and result.exit_code == 0:
        from stacks.pipeline.shards import write_shard_record

        write_shard_record(ctx, built_here)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    elif not args.quiet:
        print(result.summary(), file=sys.stderr)
        if result.exit_code == 0:
            for line in step.next_steps(ctx, layers):
                print(line, file=sys.stderr)
    return 1 if result.exit_code else 0


def _find_app(spec: StackSpec, name: str) -> LayerSpec:
    from stacks.spec import LayerKind

    for layer in spec.of_kind(LayerKind.APPLICATION):
        if name in (layer.name, layer.env_name):
            return layer
    apps = ", ".join(layer.name for layer in spec.of_kind(LayerKind.APPLICATION)) or "none"
    if name in spec.disabled or f"app-{name}" in spec.disabled:
        raise UsageError(
            f"application '{name}' in {spec.name} is disabled: it targets no platform",
            hint="its `platforms` (or those of the layers below it) leave none; "
            f"enabled applications: {apps}",
        )
    raise UsageError(f"no application '{name}' in {spec.name}", hint=f"applications: {apps}")


def cmd_run(args: argparse.Namespace) -> int:
    """`stacks run`: run an application from its current build environment."""
    import os
    import subprocess

    from stacks.pipeline.steps import BUILD

    spec = load_stack(args)
    if args.app is None:
        raise UsageError(
            "stacks run: which application?", hint=f"`stacks run {args.spec} APP [ARGS...]`"
        )
    app = _find_app(spec, args.app)
    ctx = context_from_args(args, spec)
    python = ctx.build_dir(app.env_name) / "bin" / "python"
    if not python.exists() or not BUILD.check(ctx, app.env_name):
        raise StacksError(
            f"application '{app.env_name}' is not built (or its build is out of date)",
            hint=f"run `stacks build {args.spec}` first",
        )
    extra = args.args[1:] if args.args[:1] == ["--"] else args.args
    command = [os.fspath(python), "-m", app.launch_module_name, *extra]
    return subprocess.run(command, check=False).returncode
