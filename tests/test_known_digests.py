"""hashing.KnownDigests: tree manifests reuse file hashes by inode, size and mtime, never stale ones."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stacks import hashing


def make_tree(root: Path) -> None:
    """Two package files hard-linked from a cache (as uv installs them), a file of the build's own, a link."""
    cache = root.with_name(root.name + "-cache")
    cache.mkdir()
    (cache / "a.py").write_text("print('a')\n", encoding="utf-8")
    (cache / "b.bin").write_bytes(os.urandom(3 << 20))
    (root / "pkg").mkdir(parents=True)
    for name in ("a.py", "b.bin"):
        os.link(cache / name, root / "pkg" / name)
    (root / "pyvenv.cfg").write_text("home = /x\n", encoding="utf-8")
    (root / "link").symlink_to("pkg/a.py")


def test_a_scan_with_known_digests_equals_a_full_scan(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    make_tree(tree)
    record = tmp_path / "digests.json"
    known = hashing.KnownDigests.load(record)
    first = hashing.scan_tree(tree, known=known)
    known.save()
    assert first.to_json() == hashing.scan_tree(tree).to_json()
    # A hard-linked copy (what a rebuild holds) is answered from the record, with equal results.
    copy = tmp_path / "copy"
    (copy / "pkg").mkdir(parents=True)
    for name in ("a.py", "b.bin"):
        os.link(tree / "pkg" / name, copy / "pkg" / name)
    (copy / "link").symlink_to("pkg/a.py")
    again = hashing.KnownDigests.load(record)
    assert again.known and not again.changed
    (copy / "pyvenv.cfg").write_text("home = /x\n", encoding="utf-8")
    assert hashing.scan_tree(copy, known=again).digest() == first.digest()
    assert not again.changed  # nothing new to remember
    # Only hard-linked files are remembered: a file of one link is the build's own, made anew.
    info = os.lstat(tree / "pyvenv.cfg")
    assert f"{info.st_dev}:{info.st_ino}" not in again.known


def test_the_record_is_what_answers_and_an_edit_is_hashed_again(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    make_tree(tree)
    record = tmp_path / "digests.json"
    known = hashing.KnownDigests.load(record)
    hashing.scan_tree(tree, known=known)
    known.save()
    # The record is consulted: a planted hash for an unchanged inode is what the scan reports.
    data = json.loads(record.read_text(encoding="utf-8"))
    info = os.lstat(tree / "pkg" / "a.py")
    key = f"{info.st_dev}:{info.st_ino}"
    data[key][2] = "xxh3_128:planted"
    record.write_text(json.dumps(data), encoding="utf-8")
    planted = hashing.scan_tree(tree, known=hashing.KnownDigests.load(record))
    assert planted.entries["pkg/a.py"].digest == "xxh3_128:planted"
    # An in-place edit moves the mtime: the file is hashed again, not answered from the record.
    (tree / "pkg" / "a.py").write_text("print('A')\n", encoding="utf-8")  # same size
    os.utime(tree / "pkg" / "a.py", ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000))
    known = hashing.KnownDigests.load(record)
    edited = hashing.scan_tree(tree, known=known)
    assert edited.entries["pkg/a.py"].digest == hashing.hash_file(tree / "pkg" / "a.py")
    assert known.changed
    # A content check never uses the record.
    assert hashing.scan_tree(tree).entries["pkg/a.py"].digest == edited.entries["pkg/a.py"].digest


def test_an_unreadable_record_is_an_empty_one(tmp_path: Path) -> None:
    record = tmp_path / "digests.json"
    record.write_text("{not json", encoding="utf-8")
    tree = tmp_path / "tree"
    make_tree(tree)
    known = hashing.KnownDigests.load(record)
    assert hashing.scan_tree(tree, known=known).to_json() == hashing.scan_tree(tree).to_json()
    known.save()
    assert len(json.loads(record.read_text(encoding="utf-8"))) == 2


def test_manifests_are_written_compact_and_read_back(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    make_tree(tree)
    manifest = hashing.scan_tree(tree)
    path = tmp_path / "m.json"
    hashing.write_manifest(path, manifest)
    assert "\n" not in path.read_text(encoding="utf-8").rstrip("\n")
    data = hashing.read_stamp(path)
    assert data is not None
    assert hashing.TreeManifest.from_json(data).digest() == manifest.digest()


ODD_MANIFEST = {
    "bin/python": ["l", "../rt/bin/python3", False, 12, 1_700_000_000_123_456_789],
    "lib/caf\u00e9/\u00fcber.py": ["f", "xxh3_128:" + "0" * 32, False, 5, 1],
    'lib/quote"back\\slash\u2028/\U0001f600.txt': ["f", "xxh3_128:" + "1" * 32, True, 0, 2],
    "lib/ctl\x01\x1f\x7f": ["d", "", False, 0, 0],
}


@pytest.mark.parametrize("with_orjson", [True, False])
def test_manifest_json_and_digest_are_json_s_whether_or_not_orjson_writes_them(
    monkeypatch: pytest.MonkeyPatch, with_orjson: bool
) -> None:
    """Digests made before orjson wrote manifests stay valid: the same bytes, the same hash."""
    if not with_orjson:
        monkeypatch.setattr(hashing, "orjson", None)
    rows = [[p, e[0], e[1], bool(e[2])] for p, e in sorted(ODD_MANIFEST.items())]
    assert hashing.manifest_digest(ODD_MANIFEST) == hashing.hash_json(rows)
    expected = json.dumps(ODD_MANIFEST, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert hashing.manifest_text(ODD_MANIFEST) == expected + "\n"
    assert json.loads(hashing.manifest_text(ODD_MANIFEST)) == ODD_MANIFEST
    # What orjson refuses (a huge int) goes through json, as it always did.
    assert hashing.compact_json({"n": 2**70}) == b'{"n":1180591620717411303424}'


def test_stamps_read_through_orjson_or_json_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stamp = tmp_path / "stamp.json"
    stamp.write_text(json.dumps({"inputs": {"caf\u00e9": [1, 2.5, None, True]}}), encoding="utf-8")
    first = hashing.read_stamp(stamp)
    monkeypatch.setattr(hashing, "orjson", None)
    assert hashing.read_stamp(stamp) == first == {"inputs": {"caf\u00e9": [1, 2.5, None, True]}}
    for junk in (b"{not json", b"[1, 2]", b"\xff\xfe garbage", b""):
        stamp.write_bytes(junk)
        assert hashing.read_stamp(stamp) is None
