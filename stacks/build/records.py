"""Check installed files against their wheels' RECORD hashes, remembering what was checked."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from stacks.hashing import PREFIX, KnownDigests, read_record, write_record


class VerifiedFiles:
    """Hard-linked files already found to match their RECORD sha256, by inode, size and mtime.

    Installed files are hard links into uv's cache, so every layer (and every rebuild) with
    the same package holds the same inodes: each is hashed once, not once per build. Editing
    a file in place changes its mtime, so it is hashed again, like the stat drift checks; an
    edit that puts the size and mtime back is not seen here. That is why a forced rebuild
    (`trust=False`) hashes every file, and a file found damaged is forgotten.
    """

    LIMIT = 100_000  # entries kept; past it, only the files of this build are kept

    def __init__(
        self, path: Path | None, known: dict[str, list[Any]] | None = None, *, trust: bool = True
    ) -> None:
        self.path = path
        self.known = known or {}
        self.trust = trust  # False: `matches` never answers from the record (it still learns)
        self.changed = False
        self.used: set[str] = set()

    @classmethod
    def load(cls, path: Path | None, *, trust: bool = True) -> VerifiedFiles:
        """The record at `path` (empty if missing or unreadable; None: remember nothing)."""
        return cls(None, trust=trust) if path is None else cls(path, read_record(path), trust=trust)

    @staticmethod
    def _key(info: os.stat_result) -> str:
        return f"{info.st_dev}:{info.st_ino}"

    def matches(self, info: os.stat_result, sha256: str) -> bool:
        """Whether this file (by stat) was verified before with this RECORD hash."""
        key = self._key(info)
        if not self.trust or self.known.get(key) != [info.st_size, info.st_mtime_ns, sha256]:
            return False
        self.used.add(key)
        return True

    def add(self, info: os.stat_result, sha256: str) -> None:
        """Remember that this hard-linked file (by stat) matched this RECORD hash."""
        # Only hard-linked files recur (links into uv's cache); a file of one link was written
        # by this install (INSTALLER, or every file with STACKS_LINK_MODE=copy) and the next
        # install writes it anew: remembering it would only grow the record, rewritten each build.
        if info.st_nlink < 2:
            return
        key = self._key(info)
        self.known[key] = [info.st_size, info.st_mtime_ns, sha256]
        self.used.add(key)
        self.changed = True

    def forget(self, info: os.stat_result) -> None:
        """Drop a file found not to match (its inode may still be linked elsewhere)."""
        if self.known.pop(self._key(info), None) is not None:
            self.changed = True

    def save(self) -> None:
        """Write the record (atomically; concurrent builds may drop each other's additions)."""
        if self.path is None or not self.changed:
            return
        if len(self.known) > self.LIMIT:  # files of packages long gone: start over
            self.known = {key: self.known[key] for key in self.used}
        write_record(self.path, self.known)  # atomic, not fsynced: losing it means hashing again
        self.changed = False


def verify_installed(
    site: Path,
    verified: VerifiedFiles | None = None,
    digests: KnownDigests | None = None,
    stats: dict[str, os.stat_result] | None = None,
) -> dict[str, list[str]]:
    """Installed files whose sha256 differs from their RECORD entry, by distribution name.

    Each file read is also hashed for the tree manifest (xxh3), from the same
    bytes, into `digests`: a first build reads every file once, not once per hash.
    `stats` gets the stat result of every hard-linked file checked, by path, for the
    manifest's scan (a hard-linked inode lives on in uv's cache: its number cannot be
    reused by a file this build writes later at the same path).
    """
    verified = verified or VerifiedFiles(None)

    # Plain strings, not Path objects: a big framework has ~10,000 rows, each joined and
    # stat'ed, and pathlib's parsing took most of the check's time.
    root = os.fspath(site)
    checks: list[tuple[str, str, str]] = []
    for record in site.glob("*.dist-info/RECORD"):
        dist = record.parent.name.split("-")[0]
        for row in csv.reader(io.StringIO(record.read_text(encoding="utf-8"))):
            if len(row) >= 2 and row[1].startswith("sha256="):
                path = os.path.join(root, row[0])
                checks.append(
                    (dist, os.path.realpath(path) if ".." in row[0] else path, row[1][7:])
                )

    def bad(item: tuple[str, str, str]) -> tuple[str, str] | None:
        dist, path, expected = item
        digest = hashlib.sha256()
        content = xxhash.xxh3_128()
        try:
            with open(path, "rb") as handle:
                info = os.fstat(handle.fileno())
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
                    content.update(chunk)
        except OSError:
            return dist, f"{os.path.basename(path)} (missing)"
        actual = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")
        if actual != expected:
            verified.forget(info)
            return dist, os.path.basename(path)
        verified.add(info, expected)
        if digests is not None:
            digests.learn(info, PREFIX + content.hexdigest())
        if stats is not None and info.st_nlink > 1:
            stats[path] = info
        return None

    def known(item: tuple[str, str, str]) -> bool:
        try:
            info = os.stat(item[1])
        except OSError:
            return False
        if stats is not None and info.st_nlink > 1:
            stats[item[1]] = info
        return verified.matches(info, item[2])

    # Answering from the record takes a stat; only the rest is worth a thread each.
    checks = (
        [item for item in checks if not known(item)]
        if verified.known and verified.trust
        else checks
    )
    if not checks:
        return {}
    # Only when something is read: loading OpenSSL for hashlib alone took ~10 ms.
    import base64
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    import xxhash

    damaged: dict[str, list[str]] = {}
    if len(checks) <= _INLINE:  # the small files uv writes itself (INSTALLER, REQUESTED)
        outcomes = [bad(item) for item in checks]
    else:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            outcomes = list(pool.map(bad, checks))
    for found in outcomes:
        if found is not None:
            damaged.setdefault(found[0], []).append(found[1])
    return damaged


# Fewer files than this are hashed in this thread: starting a pool costs more than they do.
_INLINE = 64
