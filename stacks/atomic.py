"""Atomic writes: write into a temporary sibling, then rename over the target."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any


def _read_umask() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


# Read once at import: os.umask() can only be read by setting it, which is not thread-safe.
_UMASK = _read_umask()


def _default_mode() -> int:
    """The mode a plain `open(..., "w")` would give a new file (0o666 minus the umask)."""
    return 0o666 & ~_UMASK


def directory_mode() -> int:
    """The mode a plain `mkdir` would give a new folder (0o777 minus the umask)."""
    return 0o777 & ~_UMASK


def write_bytes(path: Path, data: bytes, *, mode: int | None = None, durable: bool = True) -> None:
    """Write `data` to `path` atomically (readers see the old or the new file, never a part).

    `durable=False` skips the fsync, for files that describe a tree which is not fsynced
    either (a build folder): the fsync would not make the pair durable, and on ext4 it
    commits the journal of every file the build just linked (~3 ms each).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:
        mode = _default_mode()
    tmp = ""
    try:
        while True:
            tmp = sibling_name(path, ".tmp")  # named first: see sibling_name
            try:
                fd = os.open(tmp, _NEW_FILE, 0o600)
                break
            except FileExistsError:
                tmp = ""
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            if tmp:
                os.unlink(tmp)
        raise


_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def sibling_name(target: Path, suffix: str) -> str:
    """A fresh `.NAME.XXXXXXXX<suffix>` path beside `target` (not created).

    Callers set their clean-up's variable to it, then create it inside their `try`: with
    `tempfile.mkstemp`/`mkdtemp` an interrupt landing between the creation and the `try`
    (a worker preempted right after its `mkdir`, then stopped) left the entry behind.
    """
    return os.path.join(target.parent, f".{target.name}.{os.urandom(4).hex()}{suffix}")


def write_text(path: Path, text: str, *, mode: int | None = None, durable: bool = True) -> None:
    """Write UTF-8 `text` with LF line endings to `path` atomically."""
    write_bytes(path, text.encode("utf-8"), mode=mode, durable=durable)


def write_json(path: Path, data: Any, *, durable: bool = True) -> None:
    """Write `data` as sorted, indented JSON with a trailing newline, atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n", durable=durable)


def write_if_changed(path: Path, data: bytes) -> bool:
    """Atomically write `data` unless `path` already holds exactly it; return whether it was written."""
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    write_bytes(path, data)
    return True


class new_directory:  # lower case: used as a function, `with new_directory(target) as stage:`
    """A temporary sibling of `target` to fill (`as stage`); on success it replaces `target`.

    On any failure (or interruption) the temporary folder is removed and `target` is left
    exactly as it was, so a half-built folder is never mistaken for a finished one. A class,
    not a generator: an interrupt landing in a generator context manager's `__enter__` after
    the folder was made (between its `yield` and the `with` body) skipped the clean-up.
    """

    def __init__(self, target: Path, *, staging: Path | None = None) -> None:
        self.target = target
        self.staging: Path | None = staging  # given: a staging folder made (and filled) before

    def __enter__(self) -> Path:
        if self.staging is not None:
            return self.staging
        self.target.parent.mkdir(parents=True, exist_ok=True)
        try:
            while True:
                self.staging = Path(sibling_name(self.target, ".partial"))  # see sibling_name
                try:
                    os.mkdir(self.staging)  # 0o777 minus the umask, as a plain mkdir gives
                    return self.staging
                except FileExistsError:
                    self.staging = None
        except BaseException:
            self._discard()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is not None:
            self._discard()
            return
        assert self.staging is not None
        try:
            replace_directory(self.staging, self.target)
        except BaseException:
            self._discard()
            raise

    def _discard(self) -> None:
        if self.staging is not None:
            remove_tree_despite_interrupts(self.staging)


def remove_tree_despite_interrupts(path: Path) -> None:
    """Remove `path` to the end even if interrupted meanwhile; re-raise the interrupt after.

    A clean-up that starts because a step failed (uv killed by the Ctrl-C sent to the whole
    process group) can be interrupted by the SIGTERM that stops the worker: stopping half way
    would leave the temporary folder behind.
    """
    interrupted: KeyboardInterrupt | None = None
    while True:
        try:
            remove_tree(path)
            break
        except KeyboardInterrupt as exc:
            interrupted = exc
    if interrupted is not None:
        raise interrupted


def replace_directory(source: Path, target: Path) -> None:
    """Move the folder `source` to `target`, replacing what was there (old tree removed after)."""
    old: Path | None = None
    if target.exists() or target.is_symlink():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        remove_tree(old)
        os.replace(target, old)
    os.replace(source, target)
    if old is not None:
        remove_tree(old)


def remove_tree(path: Path) -> None:
    """Remove a file, link or folder if it exists, making read-only entries writable first."""
    if path.is_symlink() or path.is_file():
        path.unlink()
        return
    if not path.exists():
        return

    def _onerror(func: Any, failed: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(failed, 0o700)
            os.chmod(os.path.dirname(failed), 0o700)
        func(failed)

    shutil.rmtree(path, onerror=_onerror)


def clean_stale_partials(folder: Path) -> None:
    """Remove `.NAME.*.partial` / `.NAME.old-PID` leftovers of interrupted runs in `folder`."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name.startswith(".") and (
            entry.name.endswith(".partial") or ".old-" in entry.name or entry.name.endswith(".tmp")
        ):
            # Best effort: a leftover that cannot be removed now (a killed run's orphaned
            # child still writing into it, a read-only folder) is harmless and goes next time.
            with contextlib.suppress(OSError):
                remove_tree(entry)
