"""Full disks and read-only folders, for real: small tmpfs mounts (root only; skipped otherwise).

Also for uv's cache (UV_CACHE_DIR): uv's own "os error" must be reported as the folder uv
could not write to, not as a resolution failure or a stale lock.

Root ignores permission bits, so "unwritable" is a read-only mount, and "full" is a
size-limited tmpfs. Each run must fail with exit 1, a message naming the path and the
cause, no traceback, and leave the outputs of earlier runs exactly as they were.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from faults import make_small_project, snapshot
from projects import private_uv_cache
from stackrun import stacks

pytestmark = pytest.mark.slow

uv_cache = pytest.fixture(scope="module", autouse=True)(private_uv_cache)


def _mount(folder: Path, options: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'})")


@contextlib.contextmanager
def tmpfs(folder: Path, size: str = "4m") -> Iterator[Path]:
    """A size-limited tmpfs mounted at `folder` for the duration."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    _mount(folder, f"size={size},mode=0755")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _remount_read_only(folder: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)


def _fill(folder: Path, leave: int = 64 << 10) -> None:
    """Fill the filesystem of `folder` until about `leave` bytes are free."""
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    with open(folder / ".filler", "wb") as handle, contextlib.suppress(OSError):
        handle.write(bytes(max(0, free - leave)))


def assert_clear_failure(out: object, *words: str) -> None:
    """Exit 1, the cause in words, no traceback."""
    code, stderr = out.code, out.stderr  # type: ignore[attr-defined]
    assert code == 1, stderr
    assert "Traceback" not in stderr, stderr
    for word in words:
        assert word in stderr, stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small stack, built once (on the normal disk)."""
    spec = make_small_project(tmp_path_factory.mktemp("disk") / "stack")
    stacks("build", spec)
    return spec


def test_publish_to_a_full_disk_keeps_the_previous_archives(built: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "out", "24m") as out:
        stacks("publish", built, "--output-dir", out)
        before = snapshot(out)
        # The app changes: its archive must be redone, on a disk with no room for it.
        app = built.parent / "app.py"
        original = app.read_text(encoding="utf-8")
        try:
            app.write_text(original + "\n# " + "x" * 200 + "\n", encoding="utf-8")
            _fill(out, leave=8 << 10)
            failed = stacks("publish", built, "--output-dir", out, check=False)
            assert_clear_failure(failed, "No space left on device", "hint: free some space")
            (out / ".filler").unlink()
            assert snapshot(out) == before  # the old archives and metadata, byte for byte
            assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
            assert stacks("verify", built, "--output-dir", out, check=False).code == 0
        finally:
            app.write_text(original, encoding="utf-8")
        assert stacks("publish", built, "--output-dir", out).code == 0


def test_publish_and_export_to_a_read_only_folder(built: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro") as folder:
        (folder / "kept.txt").write_text("kept\n", encoding="utf-8")
        _remount_read_only(folder)
        for command in ("publish", "export"):
            failed = stacks(command, built, "--output-dir", folder / "out", check=False)
            assert_clear_failure(failed, "Read-only file system", "make the folder writable")
        assert (folder / "kept.txt").read_text(encoding="utf-8") == "kept\n"


def test_export_to_a_full_disk_keeps_the_previous_export(built: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "6m") as folder:
        (folder / "exported").mkdir()
        (folder / "exported" / "previous.txt").write_text("old\n", encoding="utf-8")
        failed = stacks("export", built, "--output-dir", folder / "exported", check=False)
        assert_clear_failure(failed, "No space left on device")
        # Nothing half-copied is left, and what was there stays.
        assert sorted(p.name for p in (folder / "exported").iterdir()) == ["previous.txt"]


def test_cache_on_a_full_or_read_only_disk(built: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "cache", "2m") as cache:
        failed = stacks("build", built, "--cache-dir", cache, check=False)
        assert_clear_failure(failed, "No space left on device", "runtime:cpython-3.12")
        assert [p.name for p in (cache / "runtimes").iterdir()] == []
        _remount_read_only(cache)
        failed = stacks("lock", built, "--cache-dir", cache / "sub", check=False)
        assert_clear_failure(failed, "Read-only file system")
    # The project's own outputs were never touched.
    assert stacks("build", built, "--json").ran() == []


def test_lock_into_a_read_only_requirements_folder(tmp_path: Path) -> None:
    spec = make_small_project(tmp_path / "stack")
    with tmpfs(spec.parent / "requirements"):
        _remount_read_only(spec.parent / "requirements")
        failed = stacks("lock", spec, check=False)
        assert_clear_failure(failed, "Read-only file system", "lock:")


def assert_uv_could_not_write(out: object, folder: Path, *words: str) -> None:
    """A uv failure reported as the uv cache it could not write to, not as a lock problem."""
    assert_clear_failure(out, "uv could not write to " + str(folder), "UV_CACHE_DIR", *words)
    stderr = out.stderr  # type: ignore[attr-defined]
    for misleading in ("no solution", "relax the conflicting", "if the lock is stale"):
        assert misleading not in stderr, stderr


def test_read_only_uv_cache_is_named_with_a_fix(built: Path, tmp_path: Path) -> None:
    locks = snapshot(built.parent / "requirements")
    with tmpfs(tmp_path / "uv-cache") as cache:
        _remount_read_only(cache)
        env = {"UV_CACHE_DIR": str(cache)}
        locked = stacks("lock", built, "--reset-lock", "cpython-*", env=env, check=False)
        assert_uv_could_not_write(locked, cache, "Read-only file system", "lock:cpython-3.12")
        assert "hint: make uv's cache writable, or point UV_CACHE_DIR" in locked.stderr
        built_out = stacks(
            "build", built, "--clean", "--include", "cpython-*", env=env, check=False
        )
        assert_uv_could_not_write(built_out, cache, "Read-only file system", "build:cpython-3.12")
    assert snapshot(built.parent / "requirements") == locks
    assert stacks("build", built, "--json").ran() == []  # the failed runs changed nothing


def test_full_uv_cache_is_named_with_a_fix(built: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "uv-cache", "1m") as cache:
        _fill(cache, leave=0)
        env = {"UV_CACHE_DIR": str(cache)}
        out = stacks("build", built, "--clean", "--include", "cpython-*", env=env, check=False)
        assert_uv_could_not_write(out, cache, "No space left on device", "build:cpython-3.12")
        assert "hint: free some space on that disk, or point UV_CACHE_DIR" in out.stderr
    assert stacks("build", built, "--json").ran() == []
