"""Run a plan's tasks one after another in this process, without doit.

When no two tasks of a run can overlap (a chain, or `-n 1`), what doit adds is its import and
its own bookkeeping (~100 ms a run). This runs the same tasks in the same order with the same
actions, up-to-date checks and reporter calls that doit makes with `continue` set: a failed
task's dependents are reported as not run, independent tasks still run. doit's state database
is neither read nor written: stacks' stamps alone decide what is up to date.
"""

from __future__ import annotations

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


def run_sequentially(ctx: RunContext, planned: Sequence[Any], reporter: StacksReporter) -> int:
    """Run the tasks of `planned` (dependencies first) that are not up to date; 1 if any failed."""
    tasks = {f"{step}:{task['name']}": task for step, task in all_tasks(ctx)}
    statuses: dict[str, str] = {}
    reporter.initialize(None, None)
    try:
        for item in planned:
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
            statuses[name] = _execute(tasks[name], task, reporter)
    finally:
        reporter.complete_run()
    return 1 if "failed" in statuses.values() or "not-run" in statuses.values() else 0


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
