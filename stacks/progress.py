"""Progress of a long step, shared through a small file the reporter reads (workers are processes)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

WRITE_EVERY = 0.5  # seconds between writes of one progress file


class ProgressFile:
    """How far a step has got (`done` of `total` bytes), written now and then to `path`."""

    def __init__(self, path: Path, what: str, total: int) -> None:
        self.path = path
        self.what = what
        self.total = total
        self.done = 0
        self._written = 0.0

    def add(self, amount: int) -> None:
        """Count `amount` more bytes done; write the file if the last write is old enough."""
        self.done += amount
        now = time.monotonic()
        if now - self._written >= WRITE_EVERY:
            self._written = now
            self._write()

    def _write(self) -> None:
        # Best effort: progress is never worth failing a step for.
        data = {"what": self.what, "done": self.done, "total": self.total}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data), encoding="utf-8")
            os.replace(tmp, self.path)

    def close(self) -> None:
        """The step is over: remove the file."""
        with contextlib.suppress(OSError):
            self.path.unlink()


def progress_path(folder: Path, task: str) -> Path:
    """The progress file of a task (`archive:app-x`) in `folder`."""
    return folder / f"{task}.json"


def read_progress(folder: Path, task: str) -> dict[str, Any] | None:
    """The last progress a task wrote (None if none, or unreadable)."""
    try:
        data = json.loads(progress_path(folder, task).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def describe(data: dict[str, Any]) -> str:
    """`archive 12.5 MB of 80.0 MB, 15%` for a progress record."""
    done, total = int(data.get("done", 0)), int(data.get("total", 0))
    text = f"{data.get('what', '')} {_megabytes(done)}".strip()
    if total > 0:
        text += f" of {_megabytes(total)}, {min(100, done * 100 // total)}%"
    return text


def _megabytes(count: int) -> str:
    return f"{count / 1_000_000:.1f} MB"
