"""The no-op's stat check of a tree against its manifest's JSON: the same answer as stat_drift."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from stacks import hashing


def make_tree(root: Path) -> None:
    """Files in nested folders, bytecode (never content), a symlink, an empty folder."""
    (root / "pkg" / "sub" / "__pycache__").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("", encoding="utf-8")
    (root / "pkg" / "sub" / "mod.py").write_text("x = 1\n", encoding="utf-8")
    (root / "pkg" / "sub" / "__pycache__" / "mod.cpython-312.pyc").write_bytes(b"\0" * 16)
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_text("#!/bin/sh\n", encoding="utf-8")
    (root / "bin" / "python").symlink_to("tool")
    (root / "empty").mkdir()


def same_size_edit(root: Path) -> None:
    (root / "pkg" / "sub" / "mod.py").write_text("x = 2\n", encoding="utf-8")


def edit_with_mtime_kept(root: Path) -> None:
    path = root / "pkg" / "sub" / "mod.py"
    info = path.stat()
    path.write_text("x = 22\n", encoding="utf-8")
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


def relink(root: Path) -> None:
    (root / "bin" / "python").unlink()
    (root / "bin" / "python").symlink_to("../pkg/__init__.py")


def file_for_folder(root: Path) -> None:
    shutil.rmtree(root / "empty")
    (root / "empty").write_text("", encoding="utf-8")


CHANGES: dict[str, Callable[[Path], None]] = {
    "added file": lambda root: (root / "pkg" / "new.py").write_text("", encoding="utf-8"),
    "added folder": lambda root: (root / "pkg" / "newdir").mkdir(),
    "removed file": lambda root: (root / "pkg" / "__init__.py").unlink(),
    "removed folder": lambda root: (root / "empty").rmdir(),
    "same-size edit (new mtime)": lambda root: (same_size_edit(root), _later(root)),
    "edit keeping the mtime (new size)": edit_with_mtime_kept,
    "symlink retargeted": relink,
    "a file where a folder was": file_for_folder,
}


def _later(root: Path) -> None:
    path = root / "pkg" / "sub" / "mod.py"
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000))


def test_an_unchanged_tree_is_unchanged(tmp_path: Path) -> None:
    make_tree(tmp_path / "t")
    data = hashing.scan_tree(tmp_path / "t", skip=hashing.skip_bytecode).to_json()
    assert hashing.stat_unchanged(data, tmp_path / "t", skip=hashing.skip_bytecode)
    # Bytecode comes and goes without counting.
    (tmp_path / "t" / "pkg" / "sub" / "__pycache__" / "other.pyc").write_bytes(b"1")
    assert (
        hashing.manifest_stat_drift(data, tmp_path / "t", limit=5, skip=hashing.skip_bytecode) == []
    )


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_every_drift_is_caught_and_named_as_stat_drift_names_it(
    tmp_path: Path, change: str
) -> None:
    root = tmp_path / "t"
    make_tree(root)
    data = hashing.scan_tree(root, skip=hashing.skip_bytecode).to_json()
    CHANGES[change](root)
    assert not hashing.stat_unchanged(data, root, skip=hashing.skip_bytecode)
    expected = hashing.TreeManifest.from_json(data).stat_drift(
        root, limit=5, skip=hashing.skip_bytecode
    )
    assert expected
    assert hashing.manifest_stat_drift(data, root, limit=5, skip=hashing.skip_bytecode) == expected


def test_a_malformed_manifest_is_not_taken_for_an_unchanged_tree(tmp_path: Path) -> None:
    root = tmp_path / "t"
    make_tree(root)
    data = hashing.scan_tree(root, skip=hashing.skip_bytecode).to_json()
    data["pkg/__init__.py"] = [*data["pkg/__init__.py"], "extra"]
    assert not hashing.stat_unchanged(data, root, skip=hashing.skip_bytecode)
    with pytest.raises(ValueError):
        hashing.manifest_stat_drift(data, root, limit=5, skip=hashing.skip_bytecode)
