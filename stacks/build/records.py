"""The record of installed files already checked against their wheels' RECORD hashes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from stacks.hashing import read_record, write_record


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
        if not self.trust:
            return False
        key = self._key(info)
        found = self.known.get(key)
        if (
            type(found) is not list  # also a hand-edited record: no traceback, just rehash
            or len(found) != 3
            or found[0] != info.st_size
            or found[1] != info.st_mtime_ns
            or found[2] != sha256
        ):
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
