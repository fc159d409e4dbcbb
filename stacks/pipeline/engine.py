"""Run stack tasks through doit's engine as a library: loader, reporter, project lock, signals."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from stacks.errors import BusyError
from stacks.pipeline.run_context import RunContext
from stacks.pipeline.tasks import GENERATORS

# ---------------------------------------------------------------- results


@dataclass
class TaskResult:
    """What happened to one task in a run."""

    task: str
    status: str  # "ran", "up-to-date", "failed", "not-run"
    seconds: float = 0.0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form."""
        step, _, layer = self.task.partition(":")
        return {
            "task": self.task,
            "step": step,
            "layer": layer,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "error": self.error,
        }


@dataclass
class RunResult:
    """The outcome of a run: per-task results and the doit exit code."""

    tasks: list[TaskResult] = field(default_factory=list)
    exit_code: int = 0
    seconds: float = 0.0

    def count(self, status: str) -> int:
        """How many tasks ended with this status."""
        return sum(1 for t in self.tasks if t.status == status)

    def summary(self) -> str:
        """One line: tasks run / up to date / failed, and the total time."""
        parts = [
            f"{self.count('ran')} ran",
            f"{self.count('up-to-date')} up to date",
            f"{self.count('failed')} failed",
        ]
        if self.count("not-run"):
            parts.append(f"{self.count('not-run')} not run")
        return f"{', '.join(parts)} in {self.seconds:.2f} s"

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form."""
        return {
            "tasks": [t.to_json() for t in self.tasks],
            "ran": self.count("ran"),
            "up_to_date": self.count("up-to-date"),
            "failed": self.count("failed"),
            "not_run": self.count("not-run"),
            "seconds": round(self.seconds, 3),
            "exit_code": self.exit_code,
        }


class StacksReporter:
    """A doit reporter: a line per finished task step with its duration.

    On a terminal it also says when a step starts and keeps a live `running: ...` line
    (steps and their elapsed time) at the bottom while steps run; elsewhere (CI logs,
    pipes) it prints plain lines only, with no glyphs, colours or carriage returns.
    """

    desc = "stacks console output"
    LIVE_AFTER = 1.0  # seconds a step runs before the live line shows it
    LIVE_EVERY = 0.5  # seconds between live line updates

    def __init__(
        self, stream: TextIO | None = None, *, verbose: int = 0, quiet: bool = False
    ) -> None:
        self.stream = stream or sys.stderr
        self.verbose = verbose
        self.quiet = quiet
        self.results: dict[str, TaskResult] = {}
        self.started: dict[str, float] = {}
        self.running: dict[str, float] = {}
        self.runtime_errors: list[str] = []
        self.tty = self.stream.isatty()
        self._lock = threading.Lock()
        self._live_shown = False
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()

    def _write(self, text: str) -> None:
        with self._lock:
            self._clear_live()
            self.stream.write(text)
            self.stream.flush()

    def _say(self, text: str) -> None:
        if not self.quiet:
            self._write(text + "\n")

    # the live line (terminals only)
    def live_text(self, now: float | None = None) -> str:
        """The live line: steps running for a while, longest first, with elapsed seconds."""
        now = time.perf_counter() if now is None else now
        running = dict(self.running)  # a copy: the main thread adds and removes steps
        shown = sorted(
            (start, name) for name, start in running.items() if now - start >= self.LIVE_AFTER
        )
        if not shown:
            return ""
        parts = [f"{name} ({now - start:.0f} s)" for start, name in shown]
        return "running: " + ", ".join(parts)

    def _clear_live(self) -> None:
        if self._live_shown:
            self.stream.write("\r\x1b[K")
            self._live_shown = False

    def _draw_live(self) -> None:
        # Runtime downloads draw their own progress line: never fight it for the last line.
        if any(name.startswith("runtime:") for name in dict(self.running)):
            return
        text = self.live_text()
        columns = shutil.get_terminal_size((80, 24)).columns
        with self._lock:
            self._clear_live()
            if text:
                self.stream.write(text[: max(10, columns - 1)])
                self.stream.flush()
                self._live_shown = True

    def _tick(self) -> None:
        while not self._stop.wait(self.LIVE_EVERY):
            self._draw_live()

    def _start_ticker(self) -> None:
        if self.tty and not self.quiet and self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, name="stacks-live", daemon=True)
            self._ticker.start()

    def _stop_ticker(self) -> None:
        if self._ticker is not None:
            self._stop.set()
            self._ticker.join()
            self._ticker = None
        with self._lock:
            self._clear_live()
            self.stream.flush()

    # doit's reporter interface
    def initialize(self, tasks: Any, selected_tasks: Any) -> None:
        pass

    def get_status(self, task: Any) -> None:
        pass

    def execute_task(self, task: Any) -> None:
        if not task.actions or ":" not in task.name:
            return
        self.started[task.name] = self.running[task.name] = time.perf_counter()
        # Started here, not in initialize(): with -n N doit forks its workers after
        # initialize(), and forking a process that runs a thread can deadlock the child.
        self._start_ticker()
        if self.tty or self.verbose:
            self._say(f"{'▶' if self.tty else '>'} {task.name} ...")

    def _finished(self, task: Any) -> float:
        self.running.pop(task.name, None)
        return time.perf_counter() - self.started.get(task.name, time.perf_counter())

    def add_success(self, task: Any) -> None:
        if ":" not in task.name:
            return
        seconds = self._finished(task)
        self.results[task.name] = TaskResult(task.name, "ran", seconds)
        self._say(f"{'✓' if self.tty else 'ok'} {task.name} ({seconds:.1f} s)")

    def add_failure(self, task: Any, fail: Any) -> None:
        if ":" not in task.name:
            return
        seconds = self._finished(task)
        if task.name not in self.started:
            message = self._not_run_reason(fail)
            self.results[task.name] = TaskResult(task.name, "not-run", 0.0, message)
            self._say(f"{'-' if self.tty else '--'} {task.name} {message}")
            return
        message = _failure_message(fail)
        self.results[task.name] = TaskResult(task.name, "failed", seconds, message)
        indented = "\n".join("    " + line for line in message.splitlines())
        self._write(f"{'✗' if self.tty else 'FAILED'} {task.name} ({seconds:.1f} s)\n{indented}\n")

    def _not_run_reason(self, fail: Any) -> str:
        """Why a task never started: the tasks it needs that failed (or did not run themselves)."""
        from doit.exceptions import UnmetDependency

        if not isinstance(fail, UnmetDependency):
            return _dependency_failure(fail)
        names = str(getattr(fail, "message", "")).split()
        return unmet_reason({n: self.results[n].status for n in names if n in self.results}, names)

    def skip_uptodate(self, task: Any) -> None:
        if ":" not in task.name:
            return
        self.results[task.name] = TaskResult(task.name, "up-to-date")
        if self.verbose:
            self._say(f"  {task.name} is up to date")

    def skip_ignore(self, task: Any) -> None:
        if ":" in task.name:
            self.results[task.name] = TaskResult(task.name, "not-run", error="ignored")

    def cleanup_error(self, exception: Any) -> None:
        self._write(str(exception) + "\n")

    def runtime_error(self, msg: str) -> None:
        self.runtime_errors.append(msg)

    def teardown_task(self, task: Any) -> None:
        pass

    def complete_run(self) -> None:
        self._stop_ticker()
        for message in self.runtime_errors:
            self.stream.write(f"error: {message.strip()}\n")


def _failure_message(fail: Any) -> str:
    exception = getattr(fail, "exception", None)
    message = fail.get_msg() if hasattr(fail, "get_msg") else str(fail)
    if exception is None and message:
        return message.strip()
    return message.strip() or repr(fail)


def unmet_reason(statuses: dict[str, str], names: Sequence[str]) -> str:
    """`not run because lock:x failed` for tasks that needed `names` (with their run statuses)."""
    parts = [
        f"{name} failed" if statuses.get(name) == "failed" else f"{name} did not run"
        for name in names
    ]
    return "not run because " + ", ".join(parts or ["a task it needs failed"])


def _dependency_failure(fail: Any) -> str:
    text = _failure_message(fail)
    return text.splitlines()[0] if text else "a task it depends on failed"


# ---------------------------------------------------------------- doit glue


def _doit_tasks(ctx: RunContext) -> list[Any]:
    from doit.loader import generate_tasks

    tasks: list[Any] = []
    for step, generator in GENERATORS.items():
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
    import sqlite3

    if not path.exists():
        return None
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


# ---------------------------------------------------------------- the project lock and signals


@contextlib.contextmanager
def project_lock(
    cache_dir: Path, *, wait: bool = True, stream: TextIO | None = None
) -> Iterator[None]:
    """Hold the project's file lock: one stacks run per project; the second waits (or fails)."""
    from filelock import FileLock, Timeout

    cache_dir.mkdir(parents=True, exist_ok=True)
    lock_path = cache_dir / ".stacks.lock"
    owner_path = cache_dir / ".stacks.lock.owner"
    lock = FileLock(os.fspath(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = _read_owner(owner_path)
        if not wait:
            raise BusyError(
                f"another stacks run holds this project's lock ({holder})",
                hint="wait for it to finish, or run again without --no-wait to queue behind it",
            ) from None
        (stream or sys.stderr).write(
            f"waiting for another stacks run on this project to finish ({holder}) ...\n"
        )
        lock.acquire()
    try:
        owner_path.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "command": " ".join(sys.argv[:4]),
                    "since": time.strftime("%H:%M:%S"),
                }
            ),
            encoding="utf-8",
        )
        yield
    finally:
        with contextlib.suppress(OSError):
            owner_path.unlink()
        lock.release()


def _read_owner(path: Path) -> str:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {data['pid']}: {data['command']}, since {data['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C, so doit saves its state and steps clean up their temp files.

    In processes forked from this one, both signals end the process at once until it sets
    its own handlers (see `prepare_workers`).
    """
    if os.name != "posix":
        yield
        return

    owner = os.getpid()

    def _raise(signum: int, frame: Any) -> None:
        if os.getpid() != owner:
            # A worker forked from here that is still starting (inside Python's at-fork
            # hooks, before `prepare_workers` gave it its own handlers): raising there would
            # only print "Exception ignored ... Traceback". It has done nothing yet: stop.
            os._exit(128 + signum)
        raise KeyboardInterrupt

    previous_term = signal.signal(signal.SIGTERM, _raise)
    # Ctrl-C reaches the whole process group, workers included: the same rule for SIGINT
    # (unless it is ignored, e.g. in a background job).
    ours_int = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    previous_int = signal.signal(signal.SIGINT, _raise) if ours_int else None
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)


_WORKERS_PREPARED: list[int] = []


def prepare_workers() -> None:
    """Make processes forked from here (doit's workers) stop once, quietly, and with their parent.

    A worker ignores Ctrl-C (the terminal sends it to the whole group; the main process then
    stops its workers with SIGTERM). The first SIGTERM that reaches a worker inside doit's
    worker loop becomes KeyboardInterrupt, so the step removes its temporary folder; any
    other SIGTERM ends the worker at once (a second one during that clean-up would only
    print a traceback, and one that lands while the worker is still starting, inside
    Python's at-fork hooks, would be swallowed there and leave the worker waiting forever).
    On Linux a worker also gets SIGTERM when the main process dies: without that, a
    `kill -9` of stacks leaves workers that finish their task next to the rerun and then
    wait forever for work from a parent that is gone.
    """
    if os.name != "posix" or _WORKERS_PREPARED:
        return
    parent = os.getpid()
    _WORKERS_PREPARED.append(parent)

    def _in_child() -> None:
        stopping: list[bool] = []

        def _on_sigterm(signum: int, frame: Any) -> None:
            if stopping or not _inside_worker_loop(frame):
                os._exit(128 + signum)
            stopping.append(True)
            raise KeyboardInterrupt

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, _on_sigterm)
        if not sys.platform.startswith("linux"):
            return
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(128 + signal.SIGTERM)

    os.register_at_fork(after_in_child=_in_child)


def stop_workers(timeout: float = 10.0) -> None:
    """Stop worker processes still running after doit returned or raised.

    doit terminates its workers when interrupted while it waits for results, but not when
    the interrupt lands while it is still starting them; the workers then wait for jobs
    forever, and so does this process, joining them at exit.
    """
    import multiprocessing

    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    for child in children:
        child.join(timeout)
        if child.is_alive():
            child.kill()
            child.join(timeout)


def _inside_worker_loop(frame: Any) -> bool:
    """Whether a signal arrived while doit's worker loop (not start-up code) was running."""
    while frame is not None:
        if frame.f_code.co_name == "execute_task_subprocess":
            return True
        frame = frame.f_back
    return False


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
    for step, generator in GENERATORS.items():
        for task in generator(ctx):
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
    from stacks.pipeline.tasks import explain, is_current

    graph = task_graph(ctx)
    result: dict[str, PlannedTask] = {}
    for name in closure(graph, wanted):
        step, _, env = name.partition(":")
        running = [dep for dep in graph[name] if result[dep].status != "up-to-date"]
        if not is_current(ctx, step, env):
            result[name] = PlannedTask(name, "run", explain(ctx, step, env))
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

        for folder in (ctx.build_root, ctx.cache_dir / "runtimes", ctx.output_dir, ctx.export_dir):
            if folder is not None:
                clean_stale_partials(folder)
        planned = plan(ctx, wanted)
        if all(p.status == "up-to-date" for p in planned):
            # Nothing to do: skip loading doit at all (the same answer, much faster).
            result = RunResult([TaskResult(p.task, "up-to-date") for p in planned], 0)
        else:
            set_aside_bad_state_db(ctx.cache_dir, reporter.stream)
            config = doit_config(ctx, reporter=reporter, jobs=jobs)
            if jobs > 1:
                prepare_workers()
            main = _doit_main(_loader(ctx, config))
            try:
                code = main.run(["run", *wanted])
            finally:
                if jobs > 1:
                    stop_workers()
            result = RunResult(_results(planned, reporter.results, task_graph(ctx)), code)
    result.seconds = time.perf_counter() - start
    # The process's exit code: doit's own codes (2 for a skipped dependent) mean nothing to users.
    failed = result.count("failed") or result.count("not-run") or result.exit_code
    result.exit_code = 1 if failed else 0
    return result


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
