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
    cache_dir.mkdir(parents=True, exist_ok=True)
    lock_path = cache_dir / ".stacks.lock"
    owner_path = cache_dir / ".stacks.lock.owner"
    lock = _file_lock(lock_path)
    if not lock.acquire(blocking=False):
        holder = _read_owner(owner_path)
        if not wait:
            raise BusyError(
                f"another stacks run holds this project's lock ({holder})",
                hint="wait for it to finish, or run again without --no-wait to queue behind it",
            ) from None
        (stream or sys.stderr).write(
            f"waiting for another stacks run on this project to finish ({holder}) ...\n"
        )
        lock.acquire(blocking=True)
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


class _FlockLock:
    """An exclusive flock(2) on the lock file: what filelock does on POSIX, without importing it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self, *, blocking: bool) -> bool:
        """Take the lock (waiting for it if `blocking`); False if another process holds it."""
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return False
            except BaseException:
                os.close(fd)
                raise
            if os.fstat(fd).st_nlink == 0:  # removed while we waited: lock the new one
                os.close(fd)
                continue
            self.fd = fd
            return True

    def release(self) -> None:
        """Let the lock go (closing the file releases the flock)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class _PortableLock:
    """filelock's lock, where there is no fcntl (Windows)."""

    def __init__(self, path: Path) -> None:
        from filelock import FileLock

        self.lock = FileLock(os.fspath(path))

    def acquire(self, *, blocking: bool) -> bool:
        """Take the lock (waiting for it if `blocking`); False if another process holds it."""
        from filelock import Timeout

        try:
            self.lock.acquire(timeout=-1 if blocking else 0)
        except Timeout:
            return False
        return True

    def release(self) -> None:
        """Let the lock go."""
        self.lock.release()


def _file_lock(path: Path) -> _FlockLock | _PortableLock:
    return _PortableLock(path) if sys.platform == "win32" else _FlockLock(path)


def _read_owner(path: Path) -> str:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {data['pid']}: {data['command']}, since {data['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
