"""`stacks list/info/forget/clean`: the stack's tasks, their state, and removing what they did."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from stacks.cli.context import (
    asked_layers,
    context_from_args,
    load_stack,
    narrowed,
    selected_layers,
)
from stacks.errors import UsageError

if TYPE_CHECKING:
    from stacks.pipeline.run_context import RunContext


def cmd_list(args: argparse.Namespace) -> int:
    """`stacks list`: the stack's tasks (doit list), or their status with --status."""
    from stacks.pipeline.engine import run_doit_command

    spec = load_stack(args)
    ctx = context_from_args(args, spec)
    names: list[str] = []
    if narrowed(args):
        from stacks.pipeline.engine import task_graph

        # The tasks of the selected layers (those matched, and the layers they need).
        layers = {layer.env_name for layer in selected_layers(args, spec, with_dependents=False)}
        names = [name for name in task_graph(ctx) if name.partition(":")[2] in layers]
    if narrowed(args) and not names:
        return 0  # --allow-missing and nothing matched: doit would list everything
    if args.json:
        return _list_json(ctx, names, with_status=args.status)
    if args.status:
        return _list_status(ctx, names)
    return run_doit_command(ctx, ["list", "--all", *names])


def _list_json(ctx: RunContext, names: list[str], *, with_status: bool) -> int:
    """`list --json`: each task with its description and what it needs (and its status)."""
    from stacks.pipeline.engine import plan, task_graph
    from stacks.pipeline.steps import task_docs

    graph = task_graph(ctx)
    shown = names or list(graph)
    docs = task_docs(ctx)
    status = {item.task: item for item in plan(ctx, shown)} if with_status else {}
    tasks = []
    for name in shown:
        entry: dict[str, object] = {
            "task": name,
            "doc": docs.get(name, ""),
            "depends_on": graph[name],
        }
        if name in status:
            entry["status"] = status[name].status
            entry["reasons"] = status[name].reasons
        tasks.append(entry)
    print(json.dumps({"tasks": tasks}, indent=2))
    return 0


def _list_status(ctx: RunContext, names: list[str]) -> int:
    """Each step task with the status `--dry-run` would give it: R run, M may run, U up to date."""
    from stacks.pipeline.engine import plan, task_graph
    from stacks.pipeline.steps import task_docs

    docs = task_docs(ctx)
    planned = {item.task: item.status for item in plan(ctx, names or list(task_graph(ctx)))}
    shown = sorted(names or planned)
    width = max(map(len, shown), default=0) + 3
    codes = {"run": "R", "maybe": "M", "up-to-date": "U"}
    for name in shown:
        print(f"{codes[planned[name]]} {name:<{width}}{docs.get(name, '')}")
    print("R: will run, M: may run (after a task it needs), U: up to date", file=sys.stderr)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """`stacks info`: one task's dependencies, status and why it would run."""
    from stacks.hashing import read_stamp
    from stacks.pipeline.engine import closure, plan, task_graph
    from stacks.pipeline.steps import is_current, task_docs, task_step

    spec = load_stack(args)
    ctx = context_from_args(args, spec)
    graph = task_graph(ctx)
    if args.task not in graph:
        raise UsageError(f"unknown task '{args.task}'", hint="`stacks list SPEC` shows every task")
    step, env = task_step(args.task), args.task.partition(":")[2]
    current = is_current(ctx, args.task)
    stamp = read_stamp(step.stamp_path(ctx, env)) or {}
    planned = plan(ctx, [args.task])[-1]  # the task itself comes last, after what it needs
    data = {
        "task": args.task,
        "depends_on": graph[args.task],
        "all_dependencies": closure(graph, [args.task])[:-1],
        "up_to_date": current,
        "status": planned.status,
        "reasons": planned.reasons,
        "last_finished": stamp.get("finished_at"),
        "outputs": stamp.get("outputs", {}),
    }
    layer = spec.layer(env) if spec.has_layer(env) else None
    if layer is not None and layer.variant is not None:
        data["variant"], data["variant_of"] = layer.variant, layer.variant_of
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    # In words, not doit's `info` (it would show our check functions and their arguments).
    print(f"{args.task}: {task_docs(ctx).get(args.task, '')}")
    if "variant" in data:
        print(f"variant: {data['variant']} (of {data['variant_of']})")
    print(f"needs: {', '.join(data['depends_on']) or 'nothing'}")
    stamps = ctx.cache_dir / "stamps"
    products = [p for p in step.products(ctx, env) if p.exists() and stamps not in p.parents]
    if products:
        print("wrote: " + "\n       ".join(map(str, products)))
    label = {"run": "will run", "maybe": "may run", "up-to-date": "up to date"}[planned.status]
    print(f"status: {label}")
    for reason in data["reasons"]:
        print(f"  because: {reason}")
    if data["last_finished"]:
        print(f"last finished: {data['last_finished']}")
    return 0


def _tasks_for(args: argparse.Namespace, ctx: RunContext) -> list[str]:
    from stacks.pipeline.engine import task_graph

    graph = task_graph(ctx)
    if args.tasks:
        unknown = [t for t in args.tasks if t not in graph]
        if unknown:
            raise UsageError(
                f"unknown task: {', '.join(unknown)}", hint="`stacks list SPEC` shows every task"
            )
        return list(args.tasks)
    # Only the layers the patterns match: forgetting or cleaning an app leaves its runtime alone.
    layers = {
        layer.env_name
        for layer in asked_layers(args, selected_layers(args, ctx.spec, with_dependents=False))
    }
    if not narrowed(args):
        return list(graph)  # the stack manifest tasks too
    return [name for name in graph if name.partition(":")[2] in layers]


def cmd_forget(args: argparse.Namespace) -> int:
    """`stacks forget`: remove the stamps of tasks, so they run again."""
    from stacks.pipeline.project_lock import project_lock
    from stacks.pipeline.steps import task_step

    spec = load_stack(args)
    ctx = context_from_args(args, spec)
    names = _tasks_for(args, ctx)
    # The stamps alone decide what is up to date (doit's own database does not).
    with project_lock(ctx.cache_dir, wait=not args.no_wait):
        # Every destination's stamps; a step that keeps none (lock) follows its files.
        kept = [task_step(name).forget(ctx, name.partition(":")[2]) for name in names]
    locks = kept.count(False)
    if not args.quiet:
        forgotten = len(names) - locks
        print(
            f"forgot {forgotten} task(s); they will run again"
            if forgotten
            else "nothing to forget",
            file=sys.stderr,
        )
        if locks:
            print(
                "note: lock tasks follow the committed lock files; "
                "`stacks lock SPEC --reset-lock PATTERN` re-resolves them",
                file=sys.stderr,
            )
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    """`stacks clean`: remove what tasks produced."""
    from pathlib import Path

    from stacks.pipeline.project_lock import project_lock
    from stacks.pipeline.run_context import task_name
    from stacks.pipeline.steps import STACK_TASK, PublishStep, step_named, task_step

    spec = load_stack(args)
    ctx = context_from_args(args, spec)
    names = _tasks_for(args, ctx)
    removed = 0
    refresh: set[tuple[str, Path]] = set()  # stack manifests listing a removed layer
    with project_lock(ctx.cache_dir, wait=not args.no_wait):
        for name in names:
            step = task_step(name)
            for path in step.remove_products(ctx, name.partition(":")[2]):
                removed += 1
                if not args.quiet:
                    print(path, flush=True)
                # An archive or an exported layer (not its stamp or metadata file): its folder.
                output = ctx.cache_dir not in path.parents and path.parent.name != "env_metadata"
                if isinstance(step, PublishStep) and output:
                    refresh.add((step.name, path.parent))
        for basename, folder in sorted(refresh):
            publish = step_named(basename)
            if task_name(basename, STACK_TASK) in names or publish.manifest is None:
                continue
            # A partial clean: the stack manifest of that folder lists what is left.
            assert isinstance(publish, PublishStep)
            folder_ctx = publish.with_folder(ctx, folder)
            if publish.manifest.path(folder_ctx).is_file():
                publish.manifest.action(folder_ctx, basename)
    if not args.quiet:
        print(f"removed {removed} item(s) for {len(names)} task(s)", file=sys.stderr)
    return 0
