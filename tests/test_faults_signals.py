"""SIGTERM and Ctrl-C, sent for real: in the middle of writing a build folder or an archive,
under `-n 1` (steps in the main process) and `-n 2` (steps in doit's worker processes: the
stack has two frameworks side by side, as a chain of builds runs in the main process), a run
exits 130 with no temporary file of its own left behind; and a Ctrl-C at any moment of
start-up, while the command line is still being imported, exits 130 with one line.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from faults import (
    WIDE_STACK,
    end_group,
    leftovers,
    make_small_project,
    stacks_env,
    start_stacks,
    stopped_before_stacks_ran,
)
from projects import private_uv_cache
from stackrun import stacks

uv_cache = pytest.fixture(scope="module", autouse=True)(private_uv_cache)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small stack, built and published once for the module."""
    spec = make_small_project(tmp_path_factory.mktemp("signals") / "stack", WIDE_STACK)
    stacks("publish", spec)
    return spec


def _reset(spec: Path, command: str) -> Path:
    """Remove the outputs `command` writes (so it has them to do again); return their folder."""
    root, cache = spec.parent, spec.parent / "cache"
    if command == "build":
        shutil.rmtree(cache / "build", ignore_errors=True)
        shutil.rmtree(cache / "stamps" / "build", ignore_errors=True)
        return cache / "build"
    shutil.rmtree(root / "_artifacts", ignore_errors=True)
    shutil.rmtree(cache / "stamps" / "archive", ignore_errors=True)
    for stamp in (cache / "stamps").glob("manifest/*/archive.json"):
        stamp.unlink()
    return root / "_artifacts"


def _wait_for_temporary(process: subprocess.Popen[str], folder: Path, timeout: float) -> None:
    """Wait until a step is writing into `folder` (a temporary entry of its own exists)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the run ended before writing into {folder}")
        if leftovers(folder):
            return
        time.sleep(0.005)
    raise AssertionError(f"nothing was being written into {folder} within {timeout} s")


@pytest.mark.slow
@pytest.mark.parametrize("jobs", ["1", "2"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize(("command", "extra_delays"), [("build", (0.0, 0.15)), ("publish", (0.5,))])
def test_interrupt_mid_write_leaves_no_temporary_files(
    project: Path, command: str, extra_delays: tuple[float, ...], sig: signal.Signals, jobs: str
) -> None:
    """Workers remove their `.NAME.*.partial` / `.NAME.*.tmp` before the run exits."""
    root = project.parent
    watched = (root / "_artifacts", root / "cache" / "build", root / "cache" / "runtimes")
    for extra in extra_delays:
        # A fast machine can finish the whole run within the delay: the signal then lands
        # after a completed run (exit 0), which shows nothing, so the delay is shortened.
        for delay in (extra, extra / 3, 0.0) if extra else (0.0,):
            folder = _reset(project, command)
            process = start_stacks(command, project, "-n", jobs)
            context = f"{command} -n {jobs}, {sig.name} {delay:.2f} s into writing {folder.name}"
            try:
                _wait_for_temporary(process, folder, timeout=120)
                time.sleep(delay)
                if sig == signal.SIGINT:
                    os.killpg(process.pid, sig)  # Ctrl-C in a terminal reaches the whole group
                else:
                    os.kill(process.pid, sig)  # `kill PID` reaches the main process only
                try:
                    _, stderr = process.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    raise AssertionError(f"{context}: stacks did not stop within 60 s") from None
                # Checked the moment stacks has exited, before anything else can tidy up.
                left = leftovers(*watched)
            finally:
                end_group(process)
            assert left == [], f"{context}: left behind {left}\n{stderr}"
            if process.returncode != 0 or delay == 0.0:
                break
        assert process.returncode == 130, f"{context}: exit {process.returncode}\n{stderr}"
        assert "Traceback" not in stderr, f"{context}\n{stderr}"


def test_ctrl_c_during_start_up_is_one_line_and_exit_130(tmp_path: Path) -> None:
    """Ctrl-C from the first millisecond on: no traceback from an import, exit 130.

    Only a signal before the first line of stacks runs (CPython's own start-up, or runpy
    finding the `stacks` package) may end the process Python's way.
    """
    spec = make_small_project(tmp_path / "stack")
    outcomes: Counter[str] = Counter()
    for trial in range(32):
        process = subprocess.Popen(
            [sys.executable, "-m", "stacks", "show", str(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=stacks_env(),
            start_new_session=True,
        )
        try:
            time.sleep(0.004 * trial)
            os.killpg(process.pid, signal.SIGINT)
            _, stderr = process.communicate(timeout=60)
        finally:
            end_group(process)
        code = process.returncode
        context = f"SIGINT {0.004 * trial:.3f} s after the start: exit {code}\n{stderr}"
        if (code == -signal.SIGINT and not stderr) or stopped_before_stacks_ran(stderr):
            outcomes["before stacks' code"] += 1
        elif code == 0:
            outcomes["finished first"] += 1
        else:
            assert "Traceback" not in stderr, context
            assert (code, stderr) == (130, "stacks: interrupted\n"), context
            outcomes["interrupted"] += 1
    # Some Ctrl-Cs must have landed while stacks was starting or running, or this tested nothing.
    assert outcomes["interrupted"] >= 4, outcomes
