"""Signals during a run: SIGTERM as Ctrl-C, and doit's forked workers stopping once, quietly."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

from stacks.children import interrupt_held


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
        if not interrupt_held(signum):  # a child process is starting: raised once it has
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
    worker loop becomes KeyboardInterrupt, so the step removes its temporary files, and the
    worker ignores every later SIGTERM: doit and `stop_workers` both terminate each worker,
    and a second signal ending the worker half way through its clean-up would leave a
    `.NAME.*.tmp` or `.NAME.*.partial` behind (`stop_workers` waits for the clean-up and
    kills only a worker that does not finish it). A SIGTERM that lands while the worker is
    still starting, inside Python's at-fork hooks, ends it at once (raising there would be
    swallowed and leave the worker waiting forever; it has nothing to clean up yet).
    On Linux a worker also gets SIGTERM when the main process dies: without that, a
    `kill -9` of stacks leaves workers that finish their task next to the rerun and then
    wait forever for work from a parent that is gone.
    """
    if os.name != "posix" or _WORKERS_PREPARED:
        return
    parent = os.getpid()
    _WORKERS_PREPARED.append(parent)

    def _in_child() -> None:
        def _on_sigterm(signum: int, frame: Any) -> None:
            if not _inside_worker_loop(frame):
                os._exit(128 + signum)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if not interrupt_held(signum):
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
    """Stop worker processes still running after doit returned or raised, and wait for them.

    doit terminates its workers when interrupted while it waits for results, but not when
    the interrupt lands while it is still starting them; the workers then wait for jobs
    forever, and so does this process, joining them at exit. doit does not wait for the
    workers it terminated either: without the wait here, stacks would exit while a worker
    still removes its temporary files. A worker already stopping ignores the second SIGTERM.
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
