"""Content hashes (xxh3-128) of strings, files and trees, and the stamps that record them."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import xxhash

from stacks import atomic


def _load_orjson() -> Any:
    """orjson (a speed-up for manifests and stamps, see `compact_json`), or None without it.

    Imported with SIGINT and SIGTERM held back by the process's signal mask: a Ctrl-C
    landing inside its module's initialisation crashed the interpreter (SIGSEGV) instead
    of raising KeyboardInterrupt. Held, the signal is delivered right after the import.
    """
    import _signal  # the C module: `signal` builds enums on import

    mask = getattr(_signal, "pthread_sigmask", None)
    held = mask(_signal.SIG_BLOCK, {_signal.SIGINT, _signal.SIGTERM}) if mask else None
    try:
        import orjson
    except ImportError:  # pragma: no cover - a platform without orjson's wheels
        return None
    finally:
        if mask is not None:
            mask(_signal.SIG_SETMASK, held)
    return orjson


orjson = _load_orjson()

PREFIX = "xxh3_128:"
_CHUNK = 1 << 20


def hash_bytes(data: bytes) -> str:
    """`xxh3_128:<hex>` of some bytes."""
    return PREFIX + xxhash.xxh3_128_hexdigest(data)


def hash_json(data: Any) -> str:
    """Hash of a JSON-able value in canonical form (sorted keys)."""
    return hash_bytes(
        json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    )


def compact_json(data: Any) -> bytes:
    """`data` as compact JSON with sorted keys in UTF-8 (non-ASCII unescaped): the bytes of
    `json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))`.

    For manifests (strings, ints, bools, lists, string-keyed objects), where orjson writes
    exactly those bytes ~10x faster: a big framework's manifest in ~0.5 ms instead of ~6.
    Anything orjson refuses (or no orjson) goes through json.
    """
    if orjson is not None:
        try:
            return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # orjson.JSONEncodeError: e.g. a lone surrogate, a huge int
            pass
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8"
    )


def hash_file(path: Path) -> str:
    """Streamed hash of one file's content."""
    digest = xxhash.xxh3_128()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return PREFIX + digest.hexdigest()


def hash_file_or_none(path: Path) -> str | None:
    """Hash of a file, or None if there is no file there (nothing, or a folder)."""
    try:
        return hash_file(path)
    except (FileNotFoundError, IsADirectoryError):
        return None


class TreeEntry(NamedTuple):
    """One entry of a tree manifest: kind `f` (file), `l` (symlink) or `d` (folder).

    A named tuple: a big framework's scan makes ~9,000, and a frozen dataclass took ~2 us
    each to make.
    """

    kind: str
    digest: str = ""  # file content hash, or symlink target
    executable: bool = False
    size: int = 0
    mtime_ns: int = 0

    def content(self) -> list[Any]:
        """The parts of the entry that are content (not stat data)."""
        return [self.kind, self.digest, self.executable]


@dataclass
class TreeManifest:
    """Names and content hashes of every entry below a folder, plus stat data for cheap drift checks."""

    entries: dict[str, TreeEntry] = field(default_factory=dict)

    def digest(self) -> str:
        """Hash of the tree's content (paths, kinds, file hashes, link targets, exec bits)."""
        return manifest_digest(self.to_json())

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form."""
        return {
            path: [e.kind, e.digest, e.executable, e.size, e.mtime_ns]
            for path, e in sorted(self.entries.items())
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TreeManifest:
        """Inverse of to_json."""
        return cls(
            {
                path: TreeEntry(k, d, bool(x), int(s), int(m))
                for path, (k, d, x, s, m) in data.items()
            }
        )

    def stat_drift(
        self, root: Path, *, limit: int = 20, skip: Callable[[str], bool] | None = None
    ) -> list[str]:
        """Paths whose kind, size or mtime differ from the manifest, or that appeared or vanished (no hashing)."""
        current = scan_tree(root, hash_files=False, skip=skip)
        return _differences(
            self,
            current,
            compare=lambda a, b: (
                (a.kind, a.size, a.mtime_ns, a.digest if a.kind == "l" else "")
                != (b.kind, b.size, b.mtime_ns, b.digest if b.kind == "l" else "")
            ),
            limit=limit,
        )

    def content_drift(
        self, root: Path, *, limit: int = 50, skip: Callable[[str], bool] | None = None
    ) -> list[str]:
        """Paths whose content differs from the manifest (rehashes every file)."""
        current = scan_tree(root, skip=skip)
        return _differences(
            self, current, compare=lambda a, b: a.content() != b.content(), limit=limit
        )


def manifest_digest(data: Mapping[str, Sequence[Any]]) -> str:
    """The content hash of a manifest in its JSON form (what `TreeManifest.digest` returns):
    `hash_json` of its [path, kind, digest, executable] rows in path order."""
    rows = [[path, e[0], e[1], bool(e[2])] for path, e in sorted(data.items())]
    return hash_bytes(compact_json(rows))


def manifest_text(data: Mapping[str, Sequence[Any]]) -> str:
    """A manifest file's text: its JSON form, compact, keys sorted, with a final newline."""
    return compact_json(data).decode("utf-8") + "\n"


def manifest_stat_drift(
    data: dict[str, Any], root: Path, *, limit: int, skip: Callable[[str], bool] | None = None
) -> list[str]:
    """`TreeManifest.from_json(data).stat_drift(root, ...)`, answered without building either
    manifest when nothing drifted (the usual no-op); raises ValueError/TypeError if malformed."""
    if stat_unchanged(data, root, skip=skip):
        return []
    return TreeManifest.from_json(data).stat_drift(root, limit=limit, skip=skip)


def stat_unchanged(
    data: dict[str, Any], root: Path, *, skip: Callable[[str], bool] | None = None
) -> bool:
    """Whether `root` matches a manifest's JSON form by kind, size, mtime and link target.

    The same question as an empty `stat_drift`, one lstat per file (folders by their entry
    type), compared with the recorded lists as they are: no per-entry objects, no sorting.
    """
    seen = 0
    pending = [(os.fspath(root), "")]
    while pending:
        folder, prefix = pending.pop()
        try:
            listing = os.scandir(folder)
        except OSError:
            continue
        with listing:
            for entry in listing:
                rel = prefix + entry.name
                if skip is not None and skip(rel):
                    continue
                recorded = data.get(rel)
                if type(recorded) is not list or len(recorded) != 5:
                    return False  # added, or malformed: stat_drift says which
                seen += 1
                kind = recorded[0]
                if entry.is_symlink():
                    info = os.lstat(entry.path)
                    if kind != "l" or recorded[1] != os.readlink(entry.path):
                        return False
                elif entry.is_dir(follow_symlinks=False):
                    if kind != "d":
                        return False
                    pending.append((entry.path, rel + "/"))
                    continue
                else:
                    if kind != "f":
                        return False
                    info = entry.stat(follow_symlinks=False)
                if recorded[3] != info.st_size or recorded[4] != info.st_mtime_ns:
                    return False
    return seen == len(data)  # fewer: something recorded is gone


def _differences(
    recorded: TreeManifest,
    current: TreeManifest,
    *,
    compare: Callable[[TreeEntry, TreeEntry], bool],
    limit: int,
) -> list[str]:
    found: list[str] = []
    for path in sorted(set(recorded.entries) | set(current.entries)):
        old, new = recorded.entries.get(path), current.entries.get(path)
        if old is None:
            found.append(f"added: {path}")
        elif new is None:
            found.append(f"missing: {path}")
        elif old.kind == "d" and new.kind == "d":
            continue
        elif compare(old, new):
            found.append(f"changed: {path}")
        if len(found) >= limit:
            break
    return found


def skip_bytecode(relpath: str) -> bool:
    """Whether a path is compiled bytecode, which never counts as content."""
    return relpath.endswith(("__pycache__", ".pyc"))


class KnownDigests:
    """File content hashes already computed, by device, inode, size and mtime (a cache).

    Build folders hard-link package files from uv's cache, so a rebuild (or a layer sharing a
    package) holds inodes already hashed: the manifest takes their hash from here instead of
    reading hundreds of MB again. A file edited in place gets a new mtime and is hashed again;
    one edited with its size and mtime restored keeps the hash of what was built, which a
    content check (`stacks verify`, which never uses this) then reports as changed.
    """

    LIMIT = 200_000  # entries kept; past it, only the files of this scan are kept

    def __init__(self, path: Path | None, known: dict[str, list[Any]] | None = None) -> None:
        self.path = path
        self.known = known or {}
        self.changed = False
        self.used: set[str] = set()

    @classmethod
    def load(cls, path: Path | None) -> KnownDigests:
        """The record at `path` (empty if missing or unreadable; None: remember nothing)."""
        return cls(path, read_record(path) if path is not None else {})

    def recall(self, info: os.stat_result) -> str | None:
        """The content hash of the file whose stat is `info`, if it was hashed at this inode,
        size and mtime before."""
        return self.recall_all({"": info}).get("")

    def recall_all(self, stats: Mapping[str, os.stat_result]) -> dict[str, str]:
        """`recall` of many files at once (by any key, e.g. relpath): the hashes found."""
        known, used = self.known, self.used
        found: dict[str, str] = {}
        for name, info in stats.items():
            key = f"{info.st_dev}:{info.st_ino}"
            used.add(key)
            record = known.get(key)
            if (
                type(record) is list  # a hand-edited record: hashed again, no traceback
                and len(record) == 3
                and record[0] == info.st_size
                and record[1] == info.st_mtime_ns
            ):
                found[name] = str(record[2])
        return found

    def digest(self, full: str, info: os.stat_result) -> str:
        """The content hash of the file at `full` (whose lstat is `info`), from here or by reading it."""
        found = self.recall(info)
        if found is not None:
            return found
        digest = hash_file(Path(full))
        self.learn(info, digest)
        return digest

    def learn(self, info: os.stat_result, digest: str) -> None:
        """Remember the hash of a hard-linked file just read (by its stat)."""
        # Only hard-linked files recur (from uv's cache, or the provided runtime); a file of
        # one link was written by this build and the next build writes it anew.
        if info.st_nlink > 1:
            self.known[f"{info.st_dev}:{info.st_ino}"] = [info.st_size, info.st_mtime_ns, digest]
            self.changed = True

    def save(self) -> None:
        """Write the record (atomically, compact; concurrent builds may drop each other's additions)."""
        if self.path is None or not self.changed:
            return
        if len(self.known) > self.LIMIT:  # files long gone: start over
            self.known = {key: self.known[key] for key in self.used if key in self.known}
        write_record(self.path, self.known)
        self.changed = False


# Records (JSON objects) read by path, reused while the file is unchanged: one process
# builds many layers, and each would otherwise parse the same megabytes again.
_RECORDS: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}


def read_record(path: Path) -> dict[str, Any]:
    """A cache record (a JSON object; empty if missing or unreadable), as a fresh dict."""
    try:
        info = os.stat(path)
    except OSError:
        return {}
    identity = (info.st_ino, info.st_size, info.st_mtime_ns)
    memo = _RECORDS.get(path)
    if memo is None or memo[0] != identity:
        memo = (identity, read_stamp(path) or {})
        _RECORDS[path] = memo
    return dict(memo[1])


def write_record(path: Path, data: dict[str, Any]) -> None:
    """Replace a cache record atomically, compact and not fsynced (losing it means hashing again)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, path)
        info = os.stat(path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return
    _RECORDS[path] = ((info.st_ino, info.st_size, info.st_mtime_ns), dict(data))


def write_manifest(path: Path, manifest: TreeManifest, *, durable: bool = True) -> None:
    """Write a tree manifest atomically as compact JSON (`manifest_text`)."""
    atomic.write_text(path, manifest_text(manifest.to_json()), durable=durable)


def scan_tree(
    root: Path,
    *,
    hash_files: bool = True,
    skip: Callable[[str], bool] | None = None,
    known: KnownDigests | None = None,
) -> TreeManifest:
    """Walk `root` (not following links) into a manifest; `skip(relpath)` prunes entries;
    `known` answers (and remembers) the hashes of files by inode, size and mtime."""
    top = os.fspath(root)
    entries, stats, _ = walk_entries(top, skip)
    if hash_files:
        for rel, info in stats.items():
            path = os.path.join(top, rel)
            entries[rel][1] = (
                known.digest(path, info) if known is not None else hash_file(Path(path))
            )
    return TreeManifest({rel: TreeEntry(*entry) for rel, entry in entries.items()})


def walk_entries(
    top: str, skip: Callable[[str], bool] | None = None
) -> tuple[dict[str, list[Any]], dict[str, os.stat_result], list[str]]:
    """Every entry below `top` that `skip(relpath)` keeps, as manifest entries in JSON form
    (file digests left empty), each file's stat by relpath, and the relpaths of links.
    Unreadable folders are left out, as os.walk leaves them out. Folders and links are told apart by
    their entry type (no stat); folders are listed through descriptors where the platform
    allows, so each file's stat looks up one name, not its whole path."""
    entries: dict[str, list[Any]] = {}
    stats: dict[str, os.stat_result] = {}
    links: list[str] = []
    by_fd = _FD_WALK
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
    pending: list[tuple[Any, str]] = []
    try:
        pending.append((os.open(top, flags) if by_fd else top, ""))
    except OSError:
        return entries, stats, links
    try:
        while pending:
            folder, prefix = pending.pop()
            try:
                listing = os.scandir(folder)
            except OSError:
                if by_fd:
                    os.close(folder)
                continue
            try:
                with listing:
                    for entry in listing:
                        name = entry.name
                        rel = prefix + name
                        if skip is not None and skip(rel):
                            continue
                        if entry.is_dir(follow_symlinks=False):
                            entries[rel] = ["d", "", False, 0, 0]
                            if not by_fd:
                                pending.append((entry.path, rel + "/"))
                                continue
                            try:
                                pending.append((os.open(name, flags, dir_fd=folder), rel + "/"))
                            except OSError:
                                continue
                        elif entry.is_symlink():
                            info = entry.stat(follow_symlinks=False)
                            target = (
                                os.readlink(name, dir_fd=folder)
                                if by_fd
                                else os.readlink(entry.path)
                            )
                            entries[rel] = ["l", target, False, info.st_size, info.st_mtime_ns]
                            links.append(rel)
                        else:
                            info = entry.stat(follow_symlinks=False)
                            stats[rel] = info
                            entries[rel] = [
                                "f",
                                "",
                                bool(info.st_mode & 0o111),
                                info.st_size,
                                info.st_mtime_ns,
                            ]
            finally:
                if by_fd:
                    os.close(folder)
    finally:
        if by_fd:
            for folder, _ in pending:
                os.close(folder)
    return entries, stats, links


# Folders listed by descriptor (fstatat per file) where os.scandir takes one.
_FD_WALK = os.scandir in os.supports_fd and os.readlink in os.supports_dir_fd


# ---------------------------------------------------------------- stamps


def read_stamp(path: Path) -> dict[str, Any] | None:
    """A stamp's data, or None if it is missing or unreadable (then the step must run again)."""
    try:
        raw = path.read_bytes()
        data = orjson.loads(raw) if orjson is not None else json.loads(raw)
    except (OSError, ValueError, UnicodeDecodeError):  # orjson's errors are ValueErrors too
        return None
    return data if isinstance(data, dict) else None


def write_stamp(path: Path, data: dict[str, Any], *, durable: bool = True) -> None:
    """Record a finished step's inputs and outputs, atomically and last."""
    atomic.write_json(path, data, durable=durable)
