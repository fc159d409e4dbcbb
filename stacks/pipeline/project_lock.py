"""The project's file lock: one stacks run per project at a time; the second waits or fails."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from stacks.errors import BusyError


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
