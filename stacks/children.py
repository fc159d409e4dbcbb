"""Child processes that never outlive an interrupt of the step that started them.

An interrupt (Ctrl-C, or SIGTERM turned into KeyboardInterrupt) can land inside
`subprocess.Popen()` right after the child was forked, before the `Popen` object reaches
the caller: nothing then knows the child, which goes on running. A uv left that way kept
writing into a staging folder after the step had removed it, and the folder came back.
Here the signal handlers of a run (`stacks.pipeline.signals`) hold such an interrupt back
while a child starts, and a child whose caller is interrupted is killed and reaped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import subprocess

# `subprocess` (~9 ms to import) is imported where a child starts: the signal handlers'
# module imports this one on every run, a no-op run included, which starts no child.

_held = 0
_pending: list[int] = []


def interrupt_held(signum: int) -> bool:
    """For signal handlers: whether interrupts are held now (the signal is then kept for later)."""
    if _held:
        _pending.append(signum)
        return True
    return False


class _Held:
    """While inside, an interrupt handled by `interrupt_held` waits; it is raised on leaving."""

    def __init__(self) -> None:
        self.active = False

    def __enter__(self) -> None:
        global _held
        self.active = threading.current_thread() is threading.main_thread()
        if self.active:
            _held += 1

    def __exit__(self, *exc: object) -> None:
        global _held
        if not self.active:
            return
        _held -= 1
        if not _held and _pending:
            _pending.clear()
            raise KeyboardInterrupt


def interrupts_deferred() -> _Held:
    """`with interrupts_deferred():` an interrupt arriving inside is raised on leaving it.

    For starting threads too: an interrupt inside `Thread.start()` of a thread pool's worker
    leaves a thread the pool does not know, which waits for work forever and so keeps the
    process from exiting. Only the main thread defers (signals are handled there).
    """
    return _Held()


class ChildProcess:
    """`with ChildProcess(args, **popen_kwargs) as process:` a child killed and reaped on any exception.

    With `start_new_session=True` the child's whole process group is killed (a worker pool
    it started goes with it).
    """

    def __init__(self, args: Sequence[str], **popen_kwargs: Any) -> None:
        self.args = list(args)
        self.popen_kwargs = popen_kwargs
        self.process: subprocess.Popen[Any] | None = None

    def __enter__(self) -> subprocess.Popen[Any]:
        import subprocess

        try:
            with _Held():
                self.process = subprocess.Popen(self.args, **self.popen_kwargs)
        except BaseException:
            self._end()  # the interrupt held back while it started
            self._close_streams()
            raise
        return self.process

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._end()
        self._close_streams()

    def kill(self) -> None:
        """Kill and reap the child (if it is still running) and close its streams."""
        self._end()
        self._close_streams()

    def _end(self) -> None:
        """Kill the child (its group, if it has its own) and wait until it is gone."""
        process = self.process
        if process is None:
            return
        with contextlib.suppress(OSError):
            if self.popen_kwargs.get("start_new_session") and os.name == "posix":
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
        while True:
            try:
                process.wait()
                break
            except KeyboardInterrupt:  # a second Ctrl-C: the child is dying already
                continue

    def _close_streams(self) -> None:
        if self.process is None:
            return
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def run_child(
    args: Sequence[str],
    *,
    input: str | bytes | None = None,
    timeout: float | None = None,
    **popen_kwargs: Any,
) -> subprocess.CompletedProcess[Any]:
    """`subprocess.run(args, capture_output=True, check=False, ...)` through `ChildProcess`.

    On a timeout the child is killed and reaped, then `subprocess.TimeoutExpired` is raised.
    """
    import subprocess

    if input is not None:
        popen_kwargs["stdin"] = subprocess.PIPE
    with ChildProcess(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen_kwargs
    ) as process:
        stdout, stderr = process.communicate(input, timeout=timeout)
    return subprocess.CompletedProcess(list(args), process.returncode, stdout, stderr)
