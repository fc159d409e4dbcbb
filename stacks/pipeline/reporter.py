"""What a run reports: doit's reporter for stacks (lines, live line) and the run's results."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO


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
    pipes) it prints plain lines only, with no glyphs, colours or carriage returns, and a
    `still running` line for each step every HEARTBEAT seconds, so a long step is no hang.
    """

    desc = "stacks console output"
    LIVE_AFTER = 1.0  # seconds a step runs before the live line shows it
    LIVE_EVERY = 0.5  # seconds between live line updates
    HEARTBEAT = 10.0  # off a terminal: seconds between `still running` lines of a step

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
        # Tasks that never started, with the failed tasks that kept them from running.
        self.not_run: dict[str, tuple[str, ...]] = {}
        self.tty = self.stream.isatty()
        self._lock = threading.Lock()
        self._live_shown = False
        self._last_beat: dict[str, float] = {}
        # Where running steps leave their progress (stacks.progress); None: not shown.
        self.progress_dir: Path | None = None
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
        parts = [
            f"{name} ({now - start:.0f} s{self._progress(name, ', ')})" for start, name in shown
        ]
        return "running: " + ", ".join(parts)

    def _progress(self, task: str, before: str) -> str:
        """What a running task says it has done so far, after `before` (or nothing)."""
        if self.progress_dir is None:
            return ""
        from stacks.progress import describe, read_progress

        data = read_progress(self.progress_dir, task)
        return before + describe(data) if data else ""

    def _clear_live(self) -> None:
        if self._live_shown:
            self.stream.write("\r\x1b[K")
            self._live_shown = False

    def _draw_live(self) -> None:
        # Runtime downloads draw their own progress line: never fight it for the last line.
        if any(name.startswith("runtime:") for name in dict(self.running)):
            return
        text = self.live_text()
        import shutil  # only for a live line: it imports bz2 and lzma

        columns = shutil.get_terminal_size((80, 24)).columns
        with self._lock:
            self._clear_live()
            if text:
                self.stream.write(text[: max(10, columns - 1)])
                self.stream.flush()
                self._live_shown = True

    def heartbeat_lines(self, now: float | None = None) -> list[str]:
        """Off a terminal: a line for each step running HEARTBEAT seconds since its last one."""
        now = time.perf_counter() if now is None else now
        lines = []
        for name, start in sorted(dict(self.running).items(), key=lambda item: item[1]):
            if now - self._last_beat.get(name, start) >= self.HEARTBEAT:
                self._last_beat[name] = now
                lines.append(
                    f".. {name} still running ({now - start:.0f} s){self._progress(name, ': ')}"
                )
        return lines

    def _tick(self) -> None:
        while not self._stop.wait(self.LIVE_EVERY):
            if self.tty:
                self._draw_live()
            else:
                for line in self.heartbeat_lines():
                    self._say(line)

    def _start_ticker(self) -> None:
        if not self.quiet and self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, name="stacks-live", daemon=True)
            self._ticker.start()

    def _stop_ticker(self) -> None:
        if self._ticker is not None:
            self._stop.set()
            # Interrupted inside Thread.start(), join() refuses: the thread, if it runs, sees _stop.
            with contextlib.suppress(RuntimeError):
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
        self._last_beat.pop(task.name, None)
        return time.perf_counter() - self.started.get(task.name, time.perf_counter())

    def add_success(self, task: Any) -> None:
        if ":" not in task.name:
            return
        seconds = self._finished(task)
        self.results[task.name] = TaskResult(task.name, "ran", seconds)
        self._say(f"{'✓' if self.tty else 'ok'} {task.name} ({seconds:.1f} s)")
        for warning in (getattr(task, "values", None) or {}).get("warnings", []):
            self._say(f"warning: {warning}")

    def add_failure(self, task: Any, fail: Any) -> None:
        if ":" not in task.name:
            return
        seconds = self._finished(task)
        if task.name not in self.started:
            message = self._not_run_reason(fail)
            self.results[task.name] = TaskResult(task.name, "not-run", 0.0, message)
            self.not_run[task.name] = self._root_failures(fail, message)
            return
        message = _failure_message(fail)
        self.results[task.name] = TaskResult(task.name, "failed", seconds, message)
        indented = "\n".join("    " + line for line in message.splitlines())
        self._write(f"{'✗' if self.tty else 'FAILED'} {task.name} ({seconds:.1f} s)\n{indented}\n")

    def _not_run_reason(self, fail: Any) -> str:
        """Why a task never started: the tasks it needs that failed (or did not run themselves)."""
        names = unmet_names(fail)
        if names is None:
            return _dependency_failure(fail)
        return unmet_reason({n: self.results[n].status for n in names if n in self.results}, names)

    def _root_failures(self, fail: Any, message: str) -> tuple[str, ...]:
        """The failed tasks behind a task that did not run (through other tasks not run)."""
        names = unmet_names(fail)
        if names is None:
            return (message,)
        roots: list[str] = []
        for name in names:
            for root in self.not_run.get(name, (name,)):
                if root not in roots:
                    roots.append(root)
        return tuple(roots)

    def not_run_lines(self) -> list[str]:
        """One line per cause: which tasks did not run because which tasks failed."""
        by_cause: dict[tuple[str, ...], list[str]] = {}
        for name, roots in self.not_run.items():
            by_cause.setdefault(roots, []).append(name)
        lines = []
        for roots, names in by_cause.items():
            failed = [r for r in roots if self.results.get(r, TaskResult(r, "")).status == "failed"]
            if failed and len(failed) == len(roots):
                cause = "because " + ", ".join(f"{r} failed" for r in roots)
            elif len(roots) == 1 and roots[0] not in self.results:
                cause = f"({roots[0]})"
            else:
                cause = "because " + ", ".join(
                    f"{r} failed" if r in failed else f"{r} did not run" for r in roots
                )
            count = f"{len(names)} task{'s' if len(names) != 1 else ''}"
            lines.append(f"not run {cause}: {count}: {', '.join(sorted(names))}")
        return lines

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
        if not self.quiet:
            for line in self.not_run_lines():
                self.stream.write(f"{'-' if self.tty else '--'} {line}\n")
        for message in self.runtime_errors:
            self.stream.write(f"error: {message.strip()}\n")


@dataclass
class UnmetTasks:
    """A task not started because tasks it needs failed or did not run (doit's UnmetDependency)."""

    names: list[str]

    def get_msg(self) -> str:
        """The names of those tasks, as doit words it."""
        return " ".join(self.names)


def unmet_names(fail: Any) -> list[str] | None:
    """The tasks a task that never started needed, if that is why (else None)."""
    if isinstance(fail, UnmetTasks):
        return list(fail.names)
    # doit's own, only where doit ran the tasks (never imported here just to check).
    doit_exceptions = sys.modules.get("doit.exceptions")
    if doit_exceptions is not None and isinstance(fail, doit_exceptions.UnmetDependency):
        return str(getattr(fail, "message", "")).split()
    return None


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
