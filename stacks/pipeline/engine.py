"""Run stack tasks through doit's engine as a library: loader, state database, plan, run."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from stacks.pipeline.project_lock import project_lock
from stacks.pipeline.reporter import RunResult, StacksReporter, TaskResult, unmet_reason
from stacks.pipeline.run_context import RunContext
from stacks.pipeline.signals import prepare_workers, sigterm_as_interrupt, stop_workers
from stacks.pipeline.steps import all_tasks, generators

# ---------------------------------------------------------------- doit glue


def _doit_tasks(ctx: RunContext) -> list[Any]:
    from doit.loader import generate_tasks

    tasks: list[Any] = []
    for step, generator in generators().items():
        tasks.extend(generate_tasks(step, generator(ctx), generator.__doc__))
    return tasks


def _xxh3_checker() -> Any:
    from doit.dependency import FileChangedChecker

    from stacks.hashing import hash_file

    class Xxh3Checker(FileChangedChecker):
        """doit file checker: (mtime, size, xxh3-128), rehashing only when the mtime moved."""

        def check_modified(self, file_path: str, file_stat: os.stat_result, state: Any) -> bool:
            mtime, size, digest = state
            if file_stat.st_mtime == mtime:
                return False
            if file_stat.st_size != size:
                return True
            return digest != hash_file(Path(file_path))

        def get_state(self, dep: str, current_state: Any) -> Any:
            mtime = os.path.getmtime(dep)
            if current_state and current_state[0] == mtime:
                return None
            return mtime, os.path.getsize(dep), hash_file(Path(dep))

    return Xxh3Checker


def doit_config(ctx: RunContext, *, reporter: Any = None, jobs: int = 1) -> dict[str, Any]:
    """The doit configuration for a stack: sqlite3 state in the cache, xxh3 checker, our reporter."""
    ctx.cache_dir.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "dep_file": os.fspath(ctx.cache_dir / "doit.sqlite3"),
        "backend": "sqlite3",
        "check_file_uptodate": _xxh3_checker(),
        # Keep going after a failure: independent layers still finish, and the tasks above a
        # failed one are reported as not run (with the reason) instead of silently skipped.
        "continue": True,
        "num_process": jobs if jobs > 1 else 0,
        "par_type": "process",
        "verbosity": 2,
    }
    if reporter is not None:
        config["reporter"] = reporter
    return config


def state_db_problem(path: Path) -> str | None:
    """Why doit's sqlite3 state file cannot be used (None if it is fine or absent)."""
    if not path.exists():  # runs of one task at a time never make it: no sqlite3 to load
        return None
    import sqlite3

    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            verdict = connection.execute("PRAGMA quick_check").fetchone()
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
            if "doit" in tables:  # one small JSON row per task: read them all, as doit will
                for task_id, data in connection.execute("SELECT task_id, task_data FROM doit"):
                    if not isinstance(json.loads(data), dict):
                        return f"the state of {task_id} is not a JSON object"
        finally:
            connection.close()
    except sqlite3.Error as exc:
        return str(exc)
    except (ValueError, TypeError) as exc:
        return f"a task's state is not valid JSON ({exc})"
    if verdict is None or verdict[0] != "ok":
        return f"integrity check failed: {verdict[0] if verdict else 'no answer'}"
    return None


def set_aside_bad_state_db(cache_dir: Path, stream: TextIO | None = None) -> Path | None:
    """Move an unreadable doit state database aside (with a note) so doit starts a new one.

    Our stamps decide what is up to date, so the database holds nothing that matters; a
    corrupt one must never stop a run. Call it under the project lock.
    """
    path = cache_dir / "doit.sqlite3"
    problem = state_db_problem(path)
    if problem is None:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    counter = 1
    while aside.exists():  # two set-asides within one second must not overwrite each other
        counter += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{counter}")
    os.replace(path, aside)
    for suffix in ("-journal", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    (stream or sys.stderr).write(
        f"note: doit's state database was unreadable ({problem}); moved it to {aside.name} "
        "and started a new one (stacks' own stamps decide what is up to date)\n"
    )
    return aside


def _loader(ctx: RunContext, config: dict[str, Any]) -> Any:
    from doit.cmd_base import TaskLoader2

    class StackTaskLoader(TaskLoader2):
        """Loads the tasks of one stack (no dodo.py needed)."""

        def load_doit_config(self) -> dict[str, Any]:
            return dict(config)

        def load_tasks(self, cmd: Any, pos_args: Any) -> list[Any]:
            return _doit_tasks(ctx)

    return StackTaskLoader()


def _doit_main(loader: Any) -> Any:
    from doit.cmd_clean import Clean
    from doit.cmd_forget import Forget
    from doit.cmd_help import Help
    from doit.cmd_ignore import Ignore
    from doit.cmd_info import Info
    from doit.cmd_list import List
    from doit.cmd_run import Run
    from doit.doit_cmd import DoitMain
    from doit.plugin import PluginDict

    class StacksDoitMain(DoitMain):
        """doit with a fixed command set: installed plugins cannot replace a command."""

        def get_cmds(self) -> Any:
            commands = PluginDict()
            for cmd_cls in (Help, Run, List, Info, Clean, Forget, Ignore):
                commands[cmd_cls.get_name()] = cmd_cls
            return commands

    return StacksDoitMain(loader, config_filenames=())


# ---------------------------------------------------------------- planning (no doit needed)


@dataclass
class PlannedTask:
    """What a run would do with one task, and why."""

    task: str
    status: str  # "up-to-date", "run", "maybe" (something below it runs first)
    reasons: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form."""
        return {"task": self.task, "status": self.status, "reasons": self.reasons}


def task_graph(ctx: RunContext) -> dict[str, list[str]]:
    """task name -> the task names it depends on (step tasks only)."""
    graph: dict[str, list[str]] = {}
    for step, task in all_tasks(ctx):
        graph[f"{step}:{task['name']}"] = list(task.get("task_dep", []))
    return graph


def closure(graph: dict[str, list[str]], wanted: Sequence[str]) -> list[str]:
    """`wanted` plus everything they depend on, dependencies first."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in graph:
            return
        seen.add(name)
        for dep in graph[name]:
            visit(dep)
        order.append(name)

    for name in wanted:
        visit(name)
    return order


def plan(ctx: RunContext, wanted: Sequence[str]) -> list[PlannedTask]:
    """Which of `wanted` (and their dependencies) are up to date, would run, or may run, and why."""
    from stacks.pipeline.steps import explain, is_current

    graph = task_graph(ctx)
    result: dict[str, PlannedTask] = {}
    for name in closure(graph, wanted):
        running = [dep for dep in graph[name] if result[dep].status != "up-to-date"]
        if not is_current(ctx, name):
            result[name] = PlannedTask(name, "run", explain(ctx, name))
        elif running:
            result[name] = PlannedTask(
                name, "maybe", [f"after {', '.join(running)}, if that changes its inputs"]
            )
        else:
            result[name] = PlannedTask(name, "up-to-date")
    return list(result.values())


def run_tasks(
    ctx: RunContext,
    wanted: Sequence[str],
    *,
    jobs: int = 1,
    reporter: StacksReporter,
    wait: bool = True,
) -> RunResult:
    """Run `wanted` tasks (and what they need) under the project lock; report every task."""
    start = time.perf_counter()
    with project_lock(ctx.cache_dir, wait=wait, stream=reporter.stream), sigterm_as_interrupt():
        from stacks.atomic import clean_stale_partials
        from stacks.lock.metadata import lock_paths

        # What killed runs (SIGKILL) left: staging folders, and temporary files beside the
        # lock files, whose up-to-date checks never look at them.
        lock_folders = [lock_paths(ctx.spec, layer).folder for layer in ctx.spec.layers]
        for folder in (
            ctx.build_root,
            ctx.cache_dir / "runtimes",
            ctx.output_dir,
            ctx.export_dir,
            *lock_folders,
        ):
            if folder is not None:
                clean_stale_partials(folder)
        planned = plan(ctx, wanted)
        reporter.progress_dir = ctx.progress_dir
        if all(p.status == "up-to-date" for p in planned):
            # Nothing to do: skip loading doit at all (the same answer, much faster).
            result = RunResult([TaskResult(p.task, "up-to-date") for p in planned], 0)
        else:
            set_aside_bad_state_db(ctx.cache_dir, reporter.stream)
            if jobs > 1 and _can_overlap(planned, task_graph(ctx)):
                config = doit_config(ctx, reporter=reporter, jobs=jobs)
                prepare_workers()
                main = _doit_main(_loader(ctx, config))
                try:
                    code = main.run(["run", *wanted])
                finally:
                    stop_workers()
            else:
                # One task at a time (a chain, or -n 1): no doit needed to run them in order.
                from stacks.pipeline.sequential import run_sequentially

                ctx.cache_dir.mkdir(parents=True, exist_ok=True)
                code = run_sequentially(ctx, planned, reporter, early_installs=jobs > 1)
            result = RunResult(_results(planned, reporter.results, task_graph(ctx)), code)
    result.seconds = time.perf_counter() - start
    # The process's exit code: doit's own codes (2 for a skipped dependent) mean nothing to users.
    failed = result.count("failed") or result.count("not-run") or result.exit_code
    result.exit_code = 1 if failed else 0
    return result


def _can_overlap(planned: Sequence[PlannedTask], graph: dict[str, list[str]]) -> bool:
    """Whether two of the tasks that may run could run at the same time (not one chain).

    A task's level counts the tasks that run on the longest path up to it; two that run on
    one level depend on neither, and if every level holds one task they form a chain.
    """
    level: dict[str, int] = {}
    levels: list[int] = []
    for item in planned:  # dependencies first
        below = max((level[dep] for dep in graph.get(item.task, []) if dep in level), default=-1)
        level[item.task] = below + (item.status != "up-to-date")
        if item.status != "up-to-date":
            levels.append(level[item.task])
    return len(set(levels)) < len(levels)


def _results(
    planned: Sequence[PlannedTask], reported: dict[str, TaskResult], graph: dict[str, list[str]]
) -> list[TaskResult]:
    """One result per planned task; a task doit never reached says which task it needed failed."""
    results: dict[str, TaskResult] = {}
    for item in planned:
        name = item.task
        if name in reported:
            results[name] = reported[name]
            continue
        # `planned` lists dependencies first, so their results are already known here.
        bad = {
            d: results[d].status
            for d in graph.get(name, [])
            if d in results and results[d].status in ("failed", "not-run")
        }
        error = unmet_reason(bad, list(bad)) if bad else "not reached"
        results[name] = TaskResult(name, "not-run", error=error)
    return list(results.values())


def run_doit_command(ctx: RunContext, args: Sequence[str], *, wait: bool = True) -> int:
    """Run a doit command (`list`, `info`, `forget`, `clean`, ...) on the stack's tasks."""
    needs_lock = args and args[0] in ("forget", "clean", "ignore")
    with contextlib.ExitStack() as stack:
        if needs_lock or state_db_problem(ctx.cache_dir / "doit.sqlite3"):
            stack.enter_context(project_lock(ctx.cache_dir, wait=wait))
            set_aside_bad_state_db(ctx.cache_dir)
        config = doit_config(ctx)
        # Some doit commands (forget, ignore) return None on success.
        return int(_doit_main(_loader(ctx, config)).run(list(args)) or 0)
