"""Run a plan's tasks one after another in this process, without doit.

When no two tasks of a run can overlap (a chain, or `-n 1`), what doit adds is its import and
its own bookkeeping (~100 ms a run). This runs the same tasks in the same order with the same
actions, up-to-date checks and reporter calls that doit makes with `continue` set: a failed
task's dependents are reported as not run, independent tasks still run. doit's state database
is neither read nor written: stacks' stamps alone decide what is up to date.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Sequence
from typing import Any

from stacks.pipeline.reporter import StacksReporter, UnmetTasks
from stacks.pipeline.run_context import RunContext
from stacks.pipeline.steps import all_tasks, is_current
from stacks.pipeline.steps.base import StepFailed, call_step


class _RunningTask:
    """What the reporter reads of a task (as of doit's Task): its name, actions and values."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.actions = [name]
        self.values: dict[str, Any] = {}


def run_sequentially(
    ctx: RunContext,
    planned: Sequence[Any],
    reporter: StacksReporter,
    *,
    early_installs: bool = False,
) -> int:
    """Run the tasks of `planned` (dependencies first) that are not up to date; 1 if any failed.

    With `early_installs` (more than one job allowed), once a build has installed its own
    packages, uv already installs those of the next build to run while this one is checked
    (see `stacks.build.early_installs`).
    """
    tasks = {f"{step}:{task['name']}": task for step, task in all_tasks(ctx)}
    statuses: dict[str, str] = {}
    started = None
    if early_installs:
        from stacks.build import early_installs as started
    reporter.initialize(None, None)
    try:
        for index, item in enumerate(planned):
            name = item.task
            task = _RunningTask(name)
            needs = tasks[name].get("task_dep", [])
            unmet = [dep for dep in needs if statuses.get(dep) in ("failed", "not-run")]
            if unmet:
                reporter.add_failure(task, UnmetTasks(unmet))
                statuses[name] = "not-run"
                continue
            if _up_to_date(ctx, item, [statuses.get(dep) for dep in needs]):
                reporter.skip_uptodate(task)
                statuses[name] = "up-to-date"
                continue
            reporter.execute_task(task)
            if started is not None and name.startswith("build:"):
                later = planned[index + 1 :]
                started.after_this_install(
                    functools.partial(_start_next_install, ctx, later, tasks, statuses)
                )
            try:
                statuses[name] = _execute(tasks[name], task, reporter)
            finally:
                if started is not None:
                    started.forget_queued()
    finally:
        if started is not None:
            started.cancel_all()
        reporter.complete_run()
    return 1 if "failed" in statuses.values() or "not-run" in statuses.values() else 0


def _start_next_install(
    ctx: RunContext,
    later: Sequence[Any],
    tasks: dict[str, dict[str, Any]],
    statuses: dict[str, str],
) -> None:
    """Start the install of the next build planned to run whose lock and runtime are ready
    (current, or done in this run); the builds below it may still be to come."""
    for item in later:
        if not item.task.startswith("build:") or item.status != "run":
            continue
        ready = all(
            statuses.get(dep, "up-to-date" if _planned_current(later, dep) else "") in _READY
            for dep in tasks[item.task].get("task_dep", [])
            if not dep.startswith("build:")
        )
        if ready:
            from stacks.pipeline.steps.build import start_early_install

            start_early_install(ctx, item.task.partition(":")[2])
        return


_READY = ("ran", "up-to-date")


def _planned_current(later: Sequence[Any], task: str) -> bool:
    """Whether the plan found `task` up to date (or it is not in what is left of the plan)."""
    return all(item.status == "up-to-date" for item in later if item.task == task)


def _up_to_date(ctx: RunContext, item: Any, dep_statuses: list[str | None]) -> bool:
    """The plan's answer, checked again (as doit would) only when a task it needs has just run."""
    if item.status == "up-to-date":
        return True
    if "ran" not in dep_statuses:
        return item.status == "maybe"  # current when planned, and nothing below it changed
    return is_current(ctx, item.task)


def _execute(spec: dict[str, Any], task: _RunningTask, reporter: StacksReporter) -> str:
    """Run one task's actions (each a `(run_step, [action, ctx, env_name])`); report how it went."""
    for _, arguments in spec["actions"]:
        try:
            result = call_step(*arguments)
        except Exception as exc:  # a bug: shown with its traceback, as doit shows it
            result = StepFailed("".join(traceback.format_exception(exc)).strip())
        if isinstance(result, StepFailed):
            reporter.add_failure(task, result)
            return "failed"
        if isinstance(result, dict):
            task.values.update(result)
    reporter.add_success(task)
    return "ran"
