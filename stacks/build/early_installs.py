"""Installs started ahead of their build step, so a chain of builds overlaps its parts.

A layer's uv install needs only its lock and the provided runtime's interpreter, not the
builds below it (the environment is wired to them by relative paths). So while one layer
of a chain is checked and recorded (Python work in this process), uv can already be
installing the next layer into that layer's staging folder. The build step of that layer
then takes the staging folder over (`take`) instead of making one, waits for uv and goes
on as usual; nothing is renamed into place before its own step has checked it.

An install nobody takes (its build was not reached: a failure below it, an interrupt) is
stopped and its staging folder removed by `cancel_all`, which the runner calls last.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stacks import atomic
from stacks.build.request import BuildRequest
from stacks.build.wiring import wire_environment
from stacks.children import ChildProcess


@dataclass
class EarlyInstall:
    """A layer's packages being installed by uv into a staging folder beside its target."""

    request: BuildRequest
    stage: Path
    lock_identity: tuple[int, int, int]  # the pylock's inode, size and mtime when uv started
    child: ChildProcess | None = None  # None: the layer has nothing to install
    process: subprocess.Popen[str] | None = None

    def wait(self) -> subprocess.CompletedProcess[str] | None:
        """uv's result once it has finished (None if nothing was installed)."""
        if self.child is None or self.process is None:
            return None
        try:
            stdout, stderr = self.process.communicate()
        except BaseException:
            self.stop()
            raise
        self.child.__exit__(None, None, None)
        self.child = None
        return subprocess.CompletedProcess(
            self.process.args, self.process.returncode, stdout, stderr
        )

    def stop(self) -> None:
        """Kill and reap uv (if still running)."""
        if self.child is not None:
            child, self.child = self.child, None
            child.kill()


# Started and not yet taken, by target folder.
_STARTED: dict[Path, EarlyInstall] = {}
# What to start once the running build's own install is done (`after_this_install`).
_QUEUED: list[Callable[[], None]] = []


def after_this_install(start_next: Callable[[], None]) -> None:
    """Call `start_next` once the build about to run has installed its own packages (so
    the two uv processes do not compete), or never, if it does not get that far."""
    _QUEUED.append(start_next)


def this_install_done() -> None:
    """For a build step: its own packages are in place; start what was queued."""
    while _QUEUED:
        _QUEUED.pop(0)()


def forget_queued() -> None:
    """Drop what was queued for a build that is over."""
    _QUEUED.clear()


def start(request: BuildRequest) -> None:
    """Start installing a layer's packages into a new staging folder beside its target."""
    from stacks.build.install import uv_install_command

    if request.target in _STARTED:
        return
    identity = _identity(request.pylock)
    if identity is None:
        return
    stage = Path(atomic.sibling_name(request.target, ".partial"))
    early = EarlyInstall(request, stage, identity)
    _STARTED[request.target] = early  # named before it exists: `cancel_all` removes it
    try:
        request.target.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(stage)
        if not wire_environment(request, stage):
            return  # nothing to install: the build step takes the wired folder as it is
        command, env = uv_install_command(request, stage, stage / "bin" / "python")
        early.child = ChildProcess(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        early.process = early.child.__enter__()
    except BaseException:  # half started: not to be taken, and nothing of it left
        del _STARTED[request.target]
        _discard(early)
        raise


def take(request: BuildRequest) -> EarlyInstall | None:
    """The install started for exactly this request (its lock unchanged since), if any.

    One started for another request is stopped and its staging folder removed. The one
    returned stays known until `release`, so an interrupt before the caller owns its
    staging folder still stops uv and removes the folder (`cancel_all`).
    """
    early = _STARTED.get(request.target)
    if early is None:
        return None
    if early.request == request and _identity(request.pylock) == early.lock_identity:
        return early
    del _STARTED[request.target]
    _discard(early)
    return None


def release(early: EarlyInstall) -> None:
    """Forget an install its build step is done with: uv stopped if it still runs, and its
    staging folder removed unless the build renamed it into place (or removed it)."""
    if _STARTED.get(early.request.target) is early:
        del _STARTED[early.request.target]
    _discard(early)


def cancel_all() -> None:
    """Stop every install not taken and remove its staging folder."""
    _QUEUED.clear()
    while _STARTED:
        _, early = _STARTED.popitem()
        _discard(early)


def _discard(early: EarlyInstall) -> None:
    early.stop()
    atomic.remove_tree_despite_interrupts(early.stage)


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns
