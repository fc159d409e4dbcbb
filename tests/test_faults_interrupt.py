"""Kill `stacks` for real (SIGKILL, SIGTERM, SIGINT) at random moments of lock, build, publish
and export; the rerun must always complete, and the final outputs must be byte-identical to an
uninterrupted run. After every kill, every task the planner calls up to date must have exactly
the reference output: an interrupted output is never treated as finished.

The seed is random unless STACKS_FAULT_SEED is set; it is printed (run with -s to see the kill
log as it happens) and repeated in any failure message, so a failing run can be replayed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from faults import (
    WIDE_STACK,
    diff,
    end_group,
    make_small_project,
    run_timed,
    snapshot,
    start_stacks,
    stopped_before_stacks_ran,
)

pytestmark = pytest.mark.slow

# (CLI command, kills) per step; every round of 1-3 kills ends with a completing rerun.
STEPS = (("lock", 6), ("build", 6), ("publish", 4), ("export", 5))
SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)


@pytest.fixture(autouse=True)
def own_uv_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A uv cache of this module's own, warmed by the reference run.

    Builds hard-link files from uv's cache, so a file edited in place in any build sharing
    the cache (another test, another checkout's test run on this machine) would change this
    module's builds underneath it; comparisons with the reference must not depend on that.
    """
    folder = tmp_path_factory.getbasetemp() / "interrupt-uv-cache"
    monkeypatch.setenv("UV_CACHE_DIR", str(folder))


@dataclass
class Kill:
    """One interruption: which step, which signal, how long after the start."""

    step: str
    signal: str
    jobs: str  # -n: "1" runs steps in the main process, "2" in doit's worker processes
    delay: float
    exit_code: int
    finished_first: bool  # the run ended on its own before the signal arrived

    def __str__(self) -> str:
        ended = "finished before the signal" if self.finished_first else f"exit {self.exit_code}"
        return f"{self.step:8} -n {self.jobs} {self.signal:8} after {self.delay:6.3f} s: {ended}"


class Project:
    """The small stack in one folder, with the outputs of each step located."""

    def __init__(self, spec: Path) -> None:
        self.spec = spec
        self.root = spec.parent
        self.cache = self.root / "cache"

    def outputs(self) -> dict[str, dict[str, str]]:
        """Snapshots of every output folder."""
        return {
            "requirements": snapshot(self.root / "requirements"),
            "build": snapshot(self.cache / "build"),
            "artifacts": snapshot(self.root / "_artifacts"),
            "export": snapshot(self.root / "_export"),
        }

    def reset(self, step: str) -> None:
        """Remove a step's outputs and stamps so the next run has all of it to do again."""
        stamps = self.cache / "stamps"
        doomed = {
            "lock": [self.root / "requirements"],
            "build": [self.cache / "build", stamps / "build"],
            "publish": [
                self.root / "_artifacts",
                stamps / "archive",
                *stamps.glob("manifest/*/archive.json"),  # one per destination
            ],
            "export": [
                self.root / "_export",
                stamps / "export",
                *stamps.glob("manifest/*/export.json"),  # one per destination
            ],
        }[step]
        for path in doomed:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)


def _task_output(project: Project, snap: dict[str, dict[str, str]], task: str) -> dict[str, str]:
    """The part of a snapshot a task produced."""
    step, _, layer = task.partition(":")

    def under(group: str, prefix: str) -> dict[str, str]:
        return {k: v for k, v in snap[group].items() if k == prefix or k.startswith(prefix + "/")}

    def named(group: str, *names: str) -> dict[str, str]:
        return {k: v for k, v in snap[group].items() if k in names}

    if step == "lock":
        return under("requirements", layer)
    if step == "build":
        return under("build", layer)
    if step == "archive" and layer == "__stack__":
        return named("artifacts", "__stacks__/stack.json")
    if step == "archive":
        return {
            k: v
            for k, v in snap["artifacts"].items()
            if k.startswith(f"{layer}.") or k == f"__stacks__/env_metadata/{layer}.json"
        }
    if step == "export" and layer == "__stack__":
        return named("export", "__stacks__/stack.json")
    if step == "export":
        return {
            **under("export", layer),
            **named("export", f"__stacks__/env_metadata/{layer}.json"),
        }
    return {}


def _up_to_date_tasks(project: Project, command: str) -> list[str]:
    out = run_timed(command, project.spec, "--dry-run", "--json")
    assert out.code == 0, out.stderr
    return [t["task"] for t in json.loads(out.stdout)["plan"] if t["status"] == "up-to-date"]


def _interrupt(project: Project, command: str, rng: random.Random, longest: float) -> Kill:
    sig = rng.choice(SIGNALS)
    jobs = rng.choice(("1", "2"))
    delay = rng.uniform(0.0, longest)
    process = start_stacks(command, project.spec, "-n", jobs)
    try:
        try:
            process.wait(timeout=delay)
            finished = True
        except subprocess.TimeoutExpired:
            finished = False
            if sig == signal.SIGINT:
                os.killpg(process.pid, sig)  # Ctrl-C in a terminal reaches the whole group
            else:
                os.kill(process.pid, sig)  # `kill [-9] PID` reaches the main process only
        _, stderr = process.communicate(timeout=120)
    finally:
        end_group(process)
    kill = Kill(command, sig.name, jobs, delay, process.returncode, finished)
    if not finished and sig != signal.SIGKILL and not stopped_before_stacks_ran(stderr):
        # A graceful interruption: a short message and exit 130, never a traceback.
        assert "Traceback" not in stderr, f"{kill}\n{stderr}"
        assert process.returncode in (130, 0, 1, -sig), f"{kill}\n{stderr}"
    return kill


def _check_up_to_date_tasks(
    project: Project, command: str, reference: dict[str, dict[str, str]], context: str
) -> None:
    """Every task the planner now calls up to date has exactly the reference output."""
    now = project.outputs()
    for task in _up_to_date_tasks(project, command):
        got, want = _task_output(project, now, task), _task_output(project, reference, task)
        assert got == want, (
            f"{context}: {task} is called up to date but differs from the uninterrupted run: "
            f"{diff(want, got)}"
        )


def test_interrupted_runs_recover_byte_identical(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = int(os.environ.get("STACKS_FAULT_SEED") or random.randrange(2**32))
    rng = random.Random(seed)
    log: list[str] = []

    def report(line: str) -> None:
        log.append(line)
        with capsys.disabled():  # shown in CI's output even when the test passes
            print(line, flush=True)

    report(f"\ninterruption harness: seed {seed} (replay with STACKS_FAULT_SEED={seed})")
    project = Project(make_small_project(tmp_path / "stack"))

    # The reference: an uninterrupted run of each step, timed (this also warms uv's cache).
    durations: dict[str, float] = {}
    for command, _ in STEPS:
        done = run_timed(command, project.spec)
        assert done.code == 0, done.stderr
        durations[command] = done.seconds
    reference = project.outputs()
    assert all(reference.values()), "the reference run produced nothing"
    # Calibrate on what each kill interrupts: the step redone after a reset (the same outputs).
    for command, _ in STEPS:
        project.reset(command)
        done = run_timed(command, project.spec)
        assert done.code == 0, done.stderr
        durations[command] = done.seconds
        assert project.outputs() == reference, f"{command} redone differs from the first run"
    report("calibration: " + ", ".join(f"{c} {s:.2f} s" for c, s in durations.items()))

    kills: list[Kill] = []
    for command, wanted in STEPS:
        landed = tries = 0
        while landed < wanted and tries < 3 * wanted:
            project.reset(command)
            for _ in range(min(rng.randint(1, 3), wanted - landed)):
                kill = _interrupt(project, command, rng, durations[command] * 0.9)
                kills.append(kill)
                tries += 1
                landed += not kill.finished_first
                report(f"kill {len(kills):2}: {kill}")
                _check_up_to_date_tasks(project, command, reference, f"seed {seed}, {kill}")
                if kill.finished_first:
                    project.reset(command)  # give the next signal something to interrupt
            rerun = run_timed(command, project.spec)
            assert rerun.code == 0, f"seed {seed}: rerun of {command} failed:\n{rerun.stderr}"
            final = project.outputs()
            for group, files in reference.items():
                assert final[group] == files, (
                    f"seed {seed}, after {kills[-1]}: {group} differs from the uninterrupted "
                    f"run: {diff(files, final[group])}"
                )
    interrupted = [k for k in kills if not k.finished_first]
    report(
        f"{len(interrupted)} kills landed mid-run ("
        + ", ".join(f"{s.name} {sum(k.signal == s.name for k in interrupted)}" for s in SIGNALS)
        + f"; {len(kills) - len(interrupted)} more runs finished first); every rerun completed "
        "with byte-identical outputs"
    )
    assert len(interrupted) >= 20, f"seed {seed}: only {len(interrupted)} kills landed"
    # Nothing is left running and no rerun finds work left over.
    time.sleep(0.2)
    for command, _ in STEPS:
        assert _up_to_date_tasks(project, command), command


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that mention `text` (e.g. a project folder)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            found.append(f"{pid}: {cmdline[:120]}")
    return found


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_parallel_runs_stop_promptly_and_leave_nothing_running(tmp_path: Path) -> None:
    """Interrupts of parallel builds and exports (doit workers, uv, postinstall's compile
    pool): stacks exits within seconds and no process outlives it.

    The hangs this guards against were races (about one interrupt in 20 left a worker
    waiting for jobs and stacks joining it forever), so one run of this test catches a
    regression only with some probability; the harness above adds more chances.
    """
    seed = int(os.environ.get("STACKS_FAULT_SEED") or random.randrange(2**32))
    rng = random.Random(seed)
    project = Project(make_small_project(tmp_path / "stack", WIDE_STACK))
    for command in ("build", "export"):
        assert run_timed(command, project.spec).code == 0
    for index in range(12):
        command = rng.choice(("build", "export"))
        project.reset(command)
        sig = rng.choice((signal.SIGINT, signal.SIGTERM))
        delay = rng.uniform(0.2, 3.0)
        process = start_stacks(command, project.spec, "-n", "2")
        context = f"seed {seed}, run {index}: {command} {sig.name} after {delay:.2f} s"
        try:
            try:
                process.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                if sig == signal.SIGINT:
                    os.killpg(process.pid, sig)
                else:
                    os.kill(process.pid, sig)
            try:
                _, stderr = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{context}: stacks did not stop within 30 s") from None
            # Checked before this test cleans up: nothing may outlive stacks.
            deadline = time.monotonic() + 5
            while _processes_mentioning(str(project.root)) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _processes_mentioning(str(project.root)) == [], context
        finally:
            end_group(process)
        assert "Traceback" not in stderr or stopped_before_stacks_ran(stderr), (
            f"{context}\n{stderr}"
        )
