"""The runtime store: provided runtimes kept once per user, hard-linked into each project.

Providing a `local` runtime (copy, strip, patchelf, precompile) takes seconds; with a store,
the first project that needs a runtime makes it in `<store>/<key>/runtime/` and every
project after links its files from there. The key is a hash of what decides the provided
bytes (the source and its identity, the host platform, the runtime format of this stacks),
so a new interpreter, archive or stacks release never reuses an old entry. Each entry keeps
a content manifest (bytecode included); a project linking from it hashes what it linked and
a mismatch discards the entry and makes it again, so a damaged entry is never used.

Entries are written in a temporary sibling and renamed into place, under a per-key file lock
(two projects providing one runtime at once make it once). Deleting the store is always
safe: projects keep their hard links.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stacks import atomic, hashing
from stacks.platforms import host_machine

# Bump when what a provided runtime holds changes (unpack, shape_runtime, copy_installation,
# precompile_stdlib, dropped_from_runtime): old entries then stop matching.
STORE_FORMAT = 1
ENTRY_FILE = "entry.json"
TREE = "runtime"
OFF_WORDS = frozenset({"off", "none", "no", "0", "false"})


def default_store(environ: Mapping[str, str] | None = None) -> Path:
    """`$XDG_CACHE_HOME/stacks/runtimes`, or `~/.cache/stacks/runtimes`."""
    env = os.environ if environ is None else environ
    home = env.get("HOME") or os.path.expanduser("~")
    base = env.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    return Path(base) / "stacks" / "runtimes"


def resolve_store(option: str | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The store folder: `--runtime-store`, else STACKS_RUNTIME_STORE, else the default; None if off."""
    env = os.environ if environ is None else environ
    value = option if option is not None else env.get("STACKS_RUNTIME_STORE")
    if value is None or value.strip() == "":
        return default_store(env)
    if value.strip().lower() in OFF_WORDS:
        return None
    return Path(os.path.abspath(os.path.expanduser(value)))


def store_key(identity: Mapping[str, Any]) -> str:
    """The entry name of a runtime: a hash of its identity, this host and the store format."""
    from stacks import __version__

    keyed = {
        "identity": dict(identity),
        "format": STORE_FORMAT,
        "stacks": __version__,
        "host": [sys.platform, host_machine()],
    }
    return hashing.hash_json(keyed).removeprefix(hashing.PREFIX)


@dataclass(frozen=True)
class StoredRuntime:
    """A runtime provided through the store: its version, and the project copy's manifest."""

    python_version: str
    manifest: hashing.TreeManifest  # of the linked target, bytecode left out (as projects keep it)
    linked: bool  # taken from an existing entry (False: made now)


def provide_through_store(
    store: Path,
    identity: Mapping[str, Any],
    target: Path,
    make: Callable[[Path], str],
    *,
    accept: Callable[[str], None] = lambda version: None,
) -> StoredRuntime:
    """Link `target` (atomically) from the store entry of `identity`, making the entry first if need be.

    `make(folder)` fills an empty folder with the runtime and returns its full version;
    `accept(version)` raises if a stored runtime's version is not the one asked for.
    """
    import filelock

    key = store_key(identity)
    entry = store / key
    (store / "locks").mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(store / "locks" / f"{key}.lock")):
        _clean_partials(store, key)
        recorded = _read_entry(entry)
        if recorded is not None:
            version, expected = recorded
            accept(version)
            manifest = _link_checked(entry / TREE, target, expected)
            if manifest is not None:
                return StoredRuntime(version, manifest, linked=True)
            atomic.remove_tree(entry)  # damaged: never used, made again below
        version, expected = _make_entry(entry, identity, make)
        manifest = _link_checked(entry / TREE, target, expected)
        if manifest is None:  # changed between writing and linking: someone edits the store
            raise OSError(errno.EIO, f"runtime store entry changed while linking: {entry}")
        return StoredRuntime(version, manifest, linked=False)


def _read_entry(entry: Path) -> tuple[str, hashing.TreeManifest] | None:
    data = hashing.read_stamp(entry / ENTRY_FILE)
    if data is None or data.get("format") != STORE_FORMAT or not (entry / TREE).is_dir():
        return None
    try:
        return str(data["python_version"]), hashing.TreeManifest.from_json(data["manifest"])
    except (KeyError, ValueError, TypeError):
        return None


def _make_entry(
    entry: Path, identity: Mapping[str, Any], make: Callable[[Path], str]
) -> tuple[str, hashing.TreeManifest]:
    with atomic.new_directory(entry) as staging:
        tree = staging / TREE
        tree.mkdir()
        version = make(tree)
        manifest = hashing.scan_tree(tree)
        atomic.write_json(
            staging / ENTRY_FILE,
            {
                "format": STORE_FORMAT,
                "identity": dict(identity),
                "python_version": version,
                "manifest": manifest.to_json(),
            },
        )
    return version, manifest


def _link_checked(
    source: Path, target: Path, expected: hashing.TreeManifest
) -> hashing.TreeManifest | None:
    """Link `source` into a new `target` and hash what was linked; None (target untouched) on a mismatch."""

    class _Mismatch(Exception):
        pass

    try:
        with atomic.new_directory(target) as staging:
            link_or_copy_tree(source, staging)
            found = hashing.scan_tree(staging)
            if found.digest() != expected.digest():
                raise _Mismatch
    except _Mismatch:
        return None
    return without_bytecode(found)


def without_bytecode(manifest: hashing.TreeManifest) -> hashing.TreeManifest:
    """The manifest a project keeps of a runtime: bytecode never counts as content there."""
    return hashing.TreeManifest(
        {
            path: entry
            for path, entry in manifest.entries.items()
            if not any(
                hashing.skip_bytecode("/".join(path.split("/")[: i + 1]))
                for i in range(path.count("/") + 1)
            )
        }
    )


def link_or_copy_tree(source: Path, target: Path) -> None:
    """Recreate `source` in the existing folder `target`: hard links (copies across filesystems,
    or with STACKS_LINK_MODE=copy), symlinks as symlinks, folder modes kept."""
    copy = os.environ.get("STACKS_LINK_MODE") == "copy"
    source_str = os.fspath(source)
    for dirpath, dirnames, filenames in os.walk(source_str):
        rel = os.path.relpath(dirpath, source_str)
        out_dir = os.fspath(target) if rel == "." else os.path.join(target, rel)
        for name in list(dirnames):
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                os.symlink(os.readlink(full), os.path.join(out_dir, name))
                dirnames.remove(name)
            else:
                os.mkdir(os.path.join(out_dir, name))
        for name in filenames:
            full, out = os.path.join(dirpath, name), os.path.join(out_dir, name)
            if os.path.islink(full):
                os.symlink(os.readlink(full), out)
                continue
            if not copy:
                try:
                    os.link(full, out)
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                        raise
                    copy = True  # not linkable here: copy this and the rest
            shutil.copy2(full, out)
    # Folder modes last: a read-only folder would refuse the links made into it.
    for dirpath, _dirs, _files in os.walk(source_str):
        rel = os.path.relpath(dirpath, source_str)
        out_dir = os.fspath(target) if rel == "." else os.path.join(target, rel)
        os.chmod(out_dir, stat.S_IMODE(os.lstat(dirpath).st_mode))


def _clean_partials(store: Path, key: str) -> None:
    """Leftovers of an interrupted write of this entry (safe: we hold its lock)."""
    for leftover in store.glob(f".{key}.*"):
        if leftover.name.endswith(".partial") or ".old-" in leftover.name:
            atomic.remove_tree(leftover)
