"""One walk of a built layer: every entry's stat, installed files against RECORD, the manifest.

A cold build of a big framework installs ~8,000 files in ~0.1 s of uv's time. Checking them
against their wheels and describing the tree for the manifest must not cost more than that,
so both come from one walk with one `stat` per file, and each file's record answers by
inode, size and mtime before anything is read (see VerifiedFiles and KnownDigests).
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stacks.build.records import VerifiedFiles
from stacks.errors import BuildError
from stacks.hashing import (
    PREFIX,
    KnownDigests,
    manifest_digest,
    manifest_text,
    skip_bytecode,
    walk_entries,
)


@dataclass
class TreeSurvey:
    """What one walk of a built tree found: its manifest (JSON form) and damaged files."""

    # relpath -> [kind, digest, executable, size, mtime_ns]: TreeManifest.to_json()'s form
    entries: dict[str, list[Any]]
    # distribution -> names of its files that do not match their RECORD hash (or are missing)
    damaged: dict[str, list[str]] = field(default_factory=dict)
    digest: str = ""  # manifest_digest(entries), set by `serialise`
    manifest_text: str = ""  # the manifest file's text, set by `serialise`

    def serialise(self) -> TreeSurvey:
        """Compute the content digest and the manifest's JSON text (compact, sorted keys)."""
        with gc_paused():
            # Sorted once here (the walk's order is the folders'): both below sort again,
            # which costs little on sorted input.
            self.entries = dict(sorted(self.entries.items()))
            self.digest = manifest_digest(self.entries)
            self.manifest_text = manifest_text(self.entries)
        return self


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside (it is switched back on after, if it was on).

    A survey makes a list per entry and keeps them all (~20,000 objects on a big
    framework), which set off full collections of everything the process holds: ~11 ms
    of a 13 ms digest. None of these objects form cycles.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# One file to read: (distribution or "", path, relpath in the tree or None, RECORD sha256 or
# None, size as last seen: 0 when unknown).
_Item = tuple[str, str, "str | None", "str | None", int]


@dataclass
class WalkedTree:
    """Every entry below a folder, bytecode left out, as manifest entries (no file hashes yet)."""

    root: str
    entries: dict[str, list[Any]]  # relpath -> [kind, digest, executable, size, mtime_ns]
    stats: dict[str, os.stat_result]  # relpath -> stat, files only
    links: list[str]  # relpaths of the links

    def files_below(self, folder: str) -> list[str]:
        """Paths (relative to `folder`) of the files below it, and of links to anything but a folder."""
        prefix = f"{folder}/"
        cut = len(prefix)
        found = [rel[cut:] for rel in self.stats if rel.startswith(prefix)]
        found += [
            rel[cut:]
            for rel in self.links
            if rel.startswith(prefix) and not os.path.isdir(os.path.join(self.root, rel))
        ]
        return found

    def add(self, rel: str) -> None:
        """Enter a folder or link made below the root after the walk."""
        path = os.path.join(self.root, rel)
        info = os.lstat(path)
        if os.path.islink(path):
            self.entries[rel] = ["l", os.readlink(path), False, info.st_size, info.st_mtime_ns]
            self.links.append(rel)
        else:
            self.entries[rel] = ["d", "", False, 0, 0]


def walk_tree(root: Path) -> WalkedTree:
    """Walk `root` (not following links, bytecode left out): one `stat` per file."""
    top = os.fspath(root)
    with gc_paused():
        return WalkedTree(top, *walk_entries(top, skip_bytecode))


def survey_tree(
    root: Path,
    *,
    site_dir: str | None,
    verified: VerifiedFiles | None = None,
    known: KnownDigests | None = None,
) -> TreeSurvey:
    """Walk `root` once (bytecode left out): the manifest, with every file of a wheel in
    `root/site_dir` checked against its RECORD sha256 (`site_dir=None`: no RECORD check)."""
    return check_tree(walk_tree(root), site_dir=site_dir, verified=verified, known=known)


def check_tree(
    walked: WalkedTree,
    *,
    site_dir: str | None,
    verified: VerifiedFiles | None = None,
    known: KnownDigests | None = None,
) -> TreeSurvey:
    """The manifest of a walked tree, with every file of a wheel in `site_dir` checked
    against its RECORD sha256 (`site_dir=None`: no RECORD check).

    Files are read only when a record cannot answer: `verified` for the RECORD check,
    `known` for the manifest's xxh3; a file read for one feeds both, and both learn it.
    """
    verified = verified if verified is not None else VerifiedFiles(None)
    top, entries, stats = walked.root, walked.entries, walked.stats
    with gc_paused():
        items: list[_Item] = []
        if site_dir is not None:
            items = _record_checks(top, site_dir, stats, verified)
        recalled = known.recall_all(stats) if known is not None else {}
        for rel, digest in recalled.items():
            entries[rel][1] = digest
        checked = {item[2] for item in items}
        items += [
            ("", os.path.join(top, rel), rel, None, info.st_size)
            for rel, info in stats.items()
            if rel not in recalled and rel not in checked
        ]
    damaged: dict[str, list[str]] = {}
    for (dist, path, rel, expected, _), read in zip(items, _read_all(items), strict=True):
        if read is None:
            if expected is None:
                raise BuildError(f"cannot read {path} in the build just made")
            damaged.setdefault(dist, []).append(f"{os.path.basename(path)} (missing)")
            continue
        info, sha256, content = read
        if rel is not None:
            entries[rel][1] = content
        if expected is not None and sha256 != expected:
            verified.forget(info)
            damaged.setdefault(dist, []).append(os.path.basename(path))
            continue
        if expected is not None:
            verified.add(info, expected)
        if known is not None:
            known.learn(info, content)
    return TreeSurvey(entries, damaged)


def _record_checks(
    top: str, site_dir: str, stats: dict[str, os.stat_result], verified: VerifiedFiles
) -> list[_Item]:
    """The RECORD rows of every wheel in `site_dir` that the record of verified files cannot answer."""
    prefix = f"{site_dir}/" if site_dir else ""
    site = os.path.join(top, site_dir) if site_dir else top
    try:
        folders = [name for name in os.listdir(site) if name.endswith(".dist-info")]
    except OSError:
        return []
    trust = verified.trust and bool(verified.known)
    items: list[_Item] = []
    for folder in sorted(folders):
        dist = folder.split("-")[0]
        try:
            with open(os.path.join(site, folder, "RECORD"), encoding="utf-8") as handle:
                text = handle.read()
        except OSError:
            continue
        for row in _rows(text):
            if len(row) < 2 or not row[1].startswith("sha256="):
                continue
            name, expected = row[0], row[1][7:]
            rel: str | None = prefix + name
            if ".." in name or name.startswith("/"):
                rel = os.path.normpath(rel) if not name.startswith("/") else None
            info = stats.get(rel) if rel is not None else None
            if info is None:  # not a file of this walk (outside it, or gone): read by its path
                path = os.path.realpath(os.path.join(site, name))
                items.append((dist, path, None, expected, 0))
            elif not (trust and verified.matches(info, expected)):
                items.append((dist, os.path.join(top, rel), rel, expected, info.st_size))
    return items


def _rows(text: str) -> list[list[str]]:
    """A RECORD's rows: split plainly unless a row is quoted (a path with a comma or a quote)."""
    if '"' in text:
        return list(csv.reader(io.StringIO(text)))
    return [line.rsplit(",", 2) for line in text.splitlines()]


def _read_all(items: list[_Item]) -> list[tuple[os.stat_result, str, str] | None]:
    """Each item's (fstat, RECORD-style sha256, manifest xxh3) from one read; None if unreadable."""
    if not items:
        return []
    # Only when something is read: loading OpenSSL for hashlib alone took ~10 ms.
    import base64
    import hashlib

    import xxhash

    def read(item: _Item) -> tuple[os.stat_result, str, str] | None:
        digest = hashlib.sha256() if item[3] is not None else None
        content = xxhash.xxh3_128()
        try:
            with open(item[1], "rb") as handle:
                info = os.fstat(handle.fileno())
                while chunk := handle.read(1 << 20):
                    content.update(chunk)
                    if digest is not None:
                        digest.update(chunk)
        except OSError:
            return None
        sha256 = (
            base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")
            if digest is not None
            else ""
        )
        return info, sha256, PREFIX + content.hexdigest()

    if len(items) <= _INLINE or sum(item[4] for item in items) <= _INLINE_BYTES:
        # A few files, or small ones (uv's INSTALLER and RECORD files, the layer's own): a
        # pool of threads costs more than reading them here.
        return [read(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    from stacks.children import interrupts_deferred

    # A batch per task, files dealt out in turn (big ones spread): a task per file cost
    # more in the pool's bookkeeping than hashing a small file does.
    batches = min(len(items), 4 * (os.cpu_count() or 2))
    found: list[tuple[os.stat_result, str, str] | None] = [None] * len(items)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        with interrupts_deferred():  # map submits (and starts threads) at once
            reading = pool.map(
                lambda first: [read(i) for i in items[first::batches]], range(batches)
            )
        for first, results in enumerate(reading):
            found[first::batches] = results
    return found


# Fewer files than this, or fewer bytes, are read in this thread: a pool costs more.
_INLINE = 64
_INLINE_BYTES = 4 << 20
