"""StacksReporter: plain lines off a terminal, start lines and a live line on one."""

from __future__ import annotations

import io
import threading
from types import SimpleNamespace

import pytest

from stacks.pipeline.reporter import StacksReporter


class Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def task(name: str) -> SimpleNamespace:
    """The little of a doit task the reporter reads."""
    return SimpleNamespace(name=name, actions=[object()])


def test_off_a_terminal_only_finished_steps_are_printed_plainly() -> None:
    stream = io.StringIO()
    reporter = StacksReporter(stream)
    reporter.execute_task(task("build:app"))
    reporter.add_success(task("build:app"))
    reporter.execute_task(task("lock:fw"))
    reporter.add_failure(task("lock:fw"), SimpleNamespace(get_msg=lambda: "no wheels"))
    reporter.complete_run()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("ok build:app (")
    assert lines[1].startswith("FAILED lock:fw (")
    assert lines[2] == "    no wheels"
    assert len(lines) == 3
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()
    assert reporter.results["build:app"].status == "ran"
    assert reporter.results["lock:fw"].status == "failed"


def test_verbose_off_a_terminal_also_says_when_steps_start() -> None:
    stream = io.StringIO()
    reporter = StacksReporter(stream, verbose=1)
    reporter.execute_task(task("build:app"))
    reporter.complete_run()
    assert stream.getvalue() == "> build:app ...\n"


def test_the_live_line_lists_steps_running_for_a_while_longest_first() -> None:
    reporter = StacksReporter(Terminal())
    reporter.running = {"build:a": 100.0, "build:b": 95.0, "lock:c": 104.5}
    assert reporter.live_text(now=105.0) == "running: build:b (10 s), build:a (5 s)"
    reporter.running = {"lock:c": 104.5}
    assert reporter.live_text(now=105.0) == ""


def test_on_a_terminal_the_live_line_is_cleared_before_other_output() -> None:
    stream = Terminal()
    reporter = StacksReporter(stream)
    reporter.execute_task(task("build:app"))
    reporter.running["build:app"] -= 5  # as if it had been running for five seconds
    reporter._draw_live()
    assert stream.getvalue().endswith("running: build:app (5 s)")
    reporter.add_success(task("build:app"))
    reporter.complete_run()
    last = stream.getvalue().rsplit("running: build:app (5 s)", 1)[1]
    assert last.startswith("\r\x1b[K✓ build:app (")
    assert reporter._ticker is None


def test_quiet_prints_failures_only() -> None:
    stream = Terminal()
    reporter = StacksReporter(stream, quiet=True)
    reporter.execute_task(task("build:app"))
    reporter.add_success(task("build:app"))
    reporter.complete_run()
    assert stream.getvalue() == ""


def test_tasks_that_did_not_run_after_a_failure_are_summed_up_in_one_line() -> None:
    from doit.exceptions import UnmetDependency

    stream = io.StringIO()
    reporter = StacksReporter(stream)
    reporter.execute_task(task("runtime:py"))
    reporter.add_failure(task("runtime:py"), SimpleNamespace(get_msg=lambda: "no python"))
    # doit reports each dependent as an unmet dependency on the task right below it.
    for name, needs in [
        ("lock:py", "runtime:py"),
        ("build:py", "runtime:py lock:py"),
        ("lock:fw", "lock:py"),
        ("build:fw", "build:py lock:fw"),
        ("lock:app", "lock:fw"),
        ("build:app", "build:fw lock:app"),
    ]:
        reporter.add_failure(task(name), UnmetDependency(needs))
    reporter.execute_task(task("lock:other"))
    reporter.add_success(task("lock:other"))
    reporter.complete_run()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("FAILED runtime:py (")
    assert lines[1] == "    no python"
    assert lines[2].startswith("ok lock:other (")
    assert lines[3:] == [
        "-- not run because runtime:py failed: 6 tasks: build:app, build:fw, build:py, "
        "lock:app, lock:fw, lock:py"
    ]
    # Each result still says what kept it from running, for --json.
    assert reporter.results["build:fw"].status == "not-run"
    assert (
        reporter.results["build:fw"].error
        == "not run because build:py did not run, lock:fw did not run"
    )


def test_two_failures_give_one_not_run_line_each_and_quiet_prints_none() -> None:
    from doit.exceptions import UnmetDependency

    for quiet in (False, True):
        stream = Terminal()
        reporter = StacksReporter(stream, quiet=quiet)
        for name in ("lock:a", "lock:b"):
            reporter.execute_task(task(name))
            reporter.add_failure(task(name), SimpleNamespace(get_msg=lambda: "conflict"))
        reporter.add_failure(task("build:a"), UnmetDependency("lock:a"))
        reporter.add_failure(task("build:b"), UnmetDependency("lock:b"))
        reporter.add_failure(task("lock:c"), UnmetDependency("lock:a lock:b"))
        reporter.complete_run()
        not_run = [line for line in stream.getvalue().splitlines() if "not run" in line]
        assert not_run == (
            []
            if quiet
            else [
                "- not run because lock:a failed: 1 task: build:a",
                "- not run because lock:b failed: 1 task: build:b",
                "- not run because lock:a failed, lock:b failed: 1 task: lock:c",
            ]
        )


def test_off_a_terminal_each_long_step_gets_a_heartbeat_line_every_ten_seconds() -> None:
    reporter = StacksReporter(io.StringIO())
    assert reporter.HEARTBEAT == 10.0
    reporter.running = {"archive:big": 100.0, "build:app": 104.0}
    assert reporter.heartbeat_lines(now=105.0) == []
    assert reporter.heartbeat_lines(now=110.0) == [".. archive:big still running (10 s)"]
    assert reporter.heartbeat_lines(now=114.0) == [".. build:app still running (10 s)"]
    assert reporter.heartbeat_lines(now=119.0) == []
    assert reporter.heartbeat_lines(now=120.5) == [".. archive:big still running (20 s)"]


def test_the_heartbeat_is_printed_while_a_step_runs_and_never_when_quiet() -> None:
    import time

    for quiet in (False, True):
        stream = io.StringIO()
        reporter = StacksReporter(stream, quiet=quiet)
        reporter.HEARTBEAT = 0.2
        reporter.LIVE_EVERY = 0.05
        reporter.execute_task(task("archive:big"))
        time.sleep(0.6)
        reporter.add_success(task("archive:big"))
        reporter.complete_run()
        beats = [line for line in stream.getvalue().splitlines() if "still running" in line]
        assert (beats == []) is quiet
        assert all(line.startswith(".. archive:big still running (") for line in beats)
        assert "\r" not in stream.getvalue()


def test_worker_processes_only_for_tasks_that_can_overlap() -> None:
    """A chain of tasks to run goes to the main process; two independent ones to workers."""
    from stacks.pipeline.engine import PlannedTask, _can_overlap

    graph = {"runtime": [], "fw": ["runtime"], "fw2": ["runtime"], "app": ["fw"]}

    def planned(*running: str) -> list[PlannedTask]:
        return [PlannedTask(t, "run" if t in running else "up-to-date") for t in graph]

    assert not _can_overlap(planned("runtime", "fw", "app"), graph)
    assert not _can_overlap(planned("fw2"), graph)
    assert not _can_overlap(planned(), graph)
    assert _can_overlap(planned("fw", "fw2"), graph)
    assert _can_overlap(planned("runtime", "fw", "fw2", "app"), graph)
    # Up-to-date tasks in between do not order the ones that run.
    assert not _can_overlap(planned("runtime", "app"), graph)


def test_an_interrupt_while_the_live_ticker_starts_does_not_break_the_run_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C inside Thread.start() (seen with `build -n 2`) left a thread join() refuses."""

    def interrupted_start(self: threading.Thread) -> None:
        raise KeyboardInterrupt  # before the thread says it has started

    monkeypatch.setattr(threading.Thread, "start", interrupted_start)
    stream = io.StringIO()
    reporter = StacksReporter(stream)
    with pytest.raises(KeyboardInterrupt):
        reporter.execute_task(task("build:app"))
    reporter.complete_run()  # raised RuntimeError("cannot join thread before it is started")
    assert reporter._ticker is None
