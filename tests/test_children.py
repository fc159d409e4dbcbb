"""Child processes of an interrupted step are killed and reaped, whenever the interrupt lands.

Real signals and real children. Where the interrupt must land at one exact moment (inside
`subprocess.Popen()`, right after the fork; right after a staging folder was made), the
test sends the SIGTERM from that moment itself, by wrapping the call that reaches it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from stacks import atomic
from stacks.children import run_child
from stacks.pipeline.signals import sigterm_as_interrupt

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The pids of the children started during the test (killed at the end if still there)."""
    pids: list[int] = []
    original = subprocess.Popen._execute_child  # type: ignore[attr-defined]

    def recording(self: subprocess.Popen[str], *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)
        pids.append(self.pid)

    monkeypatch.setattr(subprocess.Popen, "_execute_child", recording)
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _reaped(pid: int) -> bool:
    """Whether `pid` was a child of this process that has been waited for (gone for good)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_sigterm_landing_inside_popen_kills_and_reaps_the_child(
    monkeypatch: pytest.MonkeyPatch, started: list[int]
) -> None:
    """The interrupt waits until Popen() returns, then the new child is killed before it is raised."""
    recording = subprocess.Popen._execute_child  # type: ignore[attr-defined]

    def interrupted_after_fork(
        self: subprocess.Popen[str], *args: object, **kwargs: object
    ) -> None:
        recording(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # the child exists; Popen() has not returned

    monkeypatch.setattr(subprocess.Popen, "_execute_child", interrupted_after_fork)
    with sigterm_as_interrupt(), pytest.raises(KeyboardInterrupt):
        run_child(SLEEPER, text=True)
    assert len(started) == 1
    assert _reaped(started[0]), "the child started inside the interrupted Popen() still runs"


def test_interrupt_while_the_child_runs_kills_and_reaps_it(started: list[int]) -> None:
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    with sigterm_as_interrupt(), pytest.raises(KeyboardInterrupt):
        timer.start()
        run_child(SLEEPER)
    assert len(started) == 1 and _reaped(started[0])


def test_own_session_child_is_killed_with_its_group(tmp_path: Path, started: list[int]) -> None:
    """With start_new_session (an export's postinstall and its worker pool) the group goes too."""
    marker = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen({SLEEPER!r})\n"
        f"open({str(marker)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )

    def interrupt_once_started() -> None:
        while not marker.exists() or not marker.read_text():
            threading.Event().wait(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    watcher = threading.Thread(target=interrupt_once_started, daemon=True)
    with sigterm_as_interrupt(), pytest.raises(KeyboardInterrupt):
        watcher.start()
        run_child([sys.executable, "-c", script], start_new_session=True, timeout=60)
    grandchild = int(marker.read_text())
    deadline = threading.Event()
    for _ in range(100):  # the orphaned grandchild is reaped by init, not by us
        if _gone(grandchild):
            break
        deadline.wait(0.05)
    assert _gone(grandchild), "the child's own child survived the interrupt"


def test_timeout_kills_and_reaps_the_child(started: list[int]) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        run_child(SLEEPER, timeout=0.3)
    assert _reaped(started[0])


def test_run_child_captures_like_subprocess_run() -> None:
    done = run_child(
        [sys.executable, "-c", "import sys; print(sys.stdin.read().upper()); sys.exit(3)"],
        input="abc",
        text=True,
    )
    assert (done.returncode, done.stdout, done.stderr) == (3, "ABC\n", "")


def test_interrupt_right_after_the_staging_folder_is_made_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_mkdir = os.mkdir

    def mkdir_then_interrupted(path: str | os.PathLike[str], *args: object) -> None:
        real_mkdir(path, *args)  # type: ignore[arg-type]
        if ".partial" in os.fspath(path):
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(atomic.os, "mkdir", mkdir_then_interrupted)
    target = tmp_path / "out" / "layer"
    with (
        sigterm_as_interrupt(),
        pytest.raises(KeyboardInterrupt),
        atomic.new_directory(target) as stage,
    ):
        (stage / "never").write_text("reached")
    assert sorted(os.listdir(target.parent)) == []


def test_new_directory_replaces_the_target_or_leaves_it(tmp_path: Path) -> None:
    target = tmp_path / "layer"
    target.mkdir()
    (target / "old").write_text("1")
    with pytest.raises(RuntimeError), atomic.new_directory(target) as stage:
        (stage / "new").write_text("2")
        raise RuntimeError("the build failed")
    assert sorted(os.listdir(tmp_path)) == ["layer"] and os.listdir(target) == ["old"]
    with atomic.new_directory(target) as stage:
        (stage / "new").write_text("2")
    assert sorted(os.listdir(tmp_path)) == ["layer"] and os.listdir(target) == ["new"]


def test_sigterm_inside_a_pool_threads_start_waits_until_the_pool_knows_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An interrupt inside `Thread.start()` of a pool's worker left a thread the pool did not
    know: it waited for work forever and the process never exited. Started under
    `interrupts_deferred`, the interrupt comes once the pool knows its thread."""
    from concurrent.futures import ThreadPoolExecutor

    from stacks.children import interrupts_deferred

    original = threading.Thread.start

    def start_then_interrupted(self: threading.Thread) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # lands inside start(), as it can for real
        original(self)

    monkeypatch.setattr(threading.Thread, "start", start_then_interrupted)
    done = threading.Event()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stacks-test-pool")
    submitted = None
    with sigterm_as_interrupt(), pytest.raises(KeyboardInterrupt), pool, interrupts_deferred():
        submitted = pool.submit(done.set)
    assert submitted is not None and submitted.result(timeout=5) is None and done.is_set()
    # The pool's shutdown joined its thread: nothing is left waiting for work.
    assert not [t for t in threading.enumerate() if t.name.startswith("stacks-test-pool")]
