"""The build's survey: installed files against their RECORD (each unchanged file hashed once)
and the tree manifest, from one walk."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

from stacks import hashing
from stacks.build.records import VerifiedFiles
from stacks.build.survey import survey_tree


def record_hash(data: bytes) -> str:
    """The RECORD form of a sha256."""
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")


def verify_installed(
    site: Path, verified: VerifiedFiles | None = None, known: hashing.KnownDigests | None = None
) -> dict[str, list[str]]:
    """Installed files in `site` whose sha256 differs from their RECORD entry, by distribution."""
    return survey_tree(site, site_dir="", verified=verified, known=known).damaged


def install(site: Path, files: dict[str, bytes], *, linked: bool = True) -> None:
    """A fake installed distribution `pkg` with a RECORD listing `files`, each hard-linked from
    a cache folder beside `site` as uv installs them (`linked=False`: written in place)."""
    rows = []
    cache = site.with_name(site.name + "-cache")
    for name, data in files.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        if linked:
            (cache / name).parent.mkdir(parents=True, exist_ok=True)
            (cache / name).write_bytes(data)
            os.link(cache / name, site / name)
        else:
            (site / name).write_bytes(data)
        rows.append(f"{name},sha256={record_hash(data)},{len(data)}")
    meta = site / "pkg-1.0.dist-info"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "RECORD").write_text("\n".join([*rows, "pkg-1.0.dist-info/RECORD,,"]) + "\n")


def test_matching_files_are_remembered_and_survive_a_reload(tmp_path: Path) -> None:
    site = tmp_path / "site"
    install(site, {"pkg/__init__.py": b"x = 1\n", "pkg/data.bin": b"\0" * 100})
    record = tmp_path / "verified.json"
    verified = VerifiedFiles.load(record)
    assert verify_installed(site, verified) == {}
    verified.save()
    again = VerifiedFiles.load(record)
    info = os.stat(site / "pkg" / "__init__.py")
    assert again.matches(info, record_hash(b"x = 1\n"))
    assert not again.matches(info, record_hash(b"something else"))


def test_a_file_edited_in_place_after_verification_is_caught(tmp_path: Path) -> None:
    site = tmp_path / "site"
    install(site, {"pkg/__init__.py": b"x = 1\n"})
    verified = VerifiedFiles.load(tmp_path / "verified.json")
    assert verify_installed(site, verified) == {}
    victim = site / "pkg" / "__init__.py"
    before = victim.stat().st_mtime_ns
    with open(victim, "r+b") as handle:  # same inode, new content
        handle.write(b"y")
    os.utime(victim, ns=(before + 1_000_000, before + 1_000_000))
    assert verify_installed(site, verified) == {"pkg": ["__init__.py"]}


def test_a_hard_link_to_a_verified_file_is_not_hashed_again(tmp_path: Path) -> None:
    site = tmp_path / "site"
    install(site, {"pkg/__init__.py": b"x = 1\n"})
    verified = VerifiedFiles.load(tmp_path / "verified.json")
    assert verify_installed(site, verified) == {}
    other = tmp_path / "other"
    install(other, {"pkg/__init__.py": b"x = 1\n"})
    (other / "pkg" / "__init__.py").unlink()
    os.link(site / "pkg" / "__init__.py", other / "pkg" / "__init__.py")
    verified.changed = False
    assert verify_installed(other, verified) == {}
    assert not verified.changed  # answered from the record: nothing new to remember


def test_missing_and_unreadable_records_start_empty(tmp_path: Path) -> None:
    assert VerifiedFiles.load(tmp_path / "absent.json").known == {}
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert VerifiedFiles.load(broken).known == {}
    assert VerifiedFiles.load(None).path is None


def test_a_record_past_its_limit_keeps_only_the_files_just_used(tmp_path: Path) -> None:
    site = tmp_path / "site"
    install(site, {"pkg/__init__.py": b"x = 1\n"})
    record = tmp_path / "verified.json"
    stale = {f"0:{n}": [1, 1, "x"] for n in range(VerifiedFiles.LIMIT + 1)}
    verified = VerifiedFiles(record, dict(stale))
    assert verify_installed(site, verified) == {}
    verified.save()
    kept = VerifiedFiles.load(record).known
    info = os.stat(site / "pkg" / "__init__.py")
    assert list(kept) == [f"{info.st_dev}:{info.st_ino}"]


def test_files_of_one_link_are_checked_but_not_remembered(tmp_path: Path) -> None:
    """An install writes them anew each time: remembering them would only grow the record."""
    site = tmp_path / "site"
    install(site, {"pkg/__init__.py": b"x = 1\n"}, linked=False)
    record = tmp_path / "verified.json"
    verified = VerifiedFiles.load(record)
    assert verify_installed(site, verified) == {}
    assert verified.known == {} and not verified.changed
    verified.save()
    assert not record.exists()  # nothing new: the record is not rewritten
    (site / "pkg" / "__init__.py").write_bytes(b"y = 2\n")  # still checked every time
    assert verify_installed(site, verified) == {"pkg": ["__init__.py"]}


def test_the_record_check_hands_the_manifest_the_hash_of_each_file_it_read(
    tmp_path: Path,
) -> None:
    """One read per file on a first build: the manifest takes the xxh3 the check computed."""
    site = tmp_path / "site"
    install(site, {"pkg/__init__.py": b"x = 1\n", "pkg/data.bin": os.urandom(3 << 20)})
    digests = hashing.KnownDigests.load(tmp_path / "digests.json")
    assert verify_installed(site, VerifiedFiles(None), digests) == {}
    assert digests.changed and len(digests.known) == 2
    # The hashes handed over are the content hashes a full scan computes.
    assert hashing.scan_tree(site, known=digests).to_json() == hashing.scan_tree(site).to_json()
    # A damaged file hands over nothing (its content is not what gets installed).
    other = tmp_path / "other"
    install(other, {"pkg/__init__.py": b"x = 1\n"})
    victim = other / "pkg" / "__init__.py"
    victim.unlink()
    victim.write_bytes(b"edited")
    os.link(victim, tmp_path / "second-link")
    fresh = hashing.KnownDigests.load(None)
    assert verify_installed(other, VerifiedFiles(None), fresh) == {"pkg": ["__init__.py"]}
    assert fresh.known == {}


def test_a_survey_describes_the_tree_as_a_full_scan_does(tmp_path: Path) -> None:
    """Entries, digest and manifest text equal scan_tree's (bytecode left out), whether the
    hashes come from reading or from the record of known digests."""
    root = tmp_path / "layer"
    site = root / "lib" / "site-packages"
    install(site, {"pkg/__init__.py": b"x = 1\n", "pkg/data.bin": os.urandom(5 << 20)})
    (root / "bin").mkdir()
    (root / "bin" / "python").symlink_to("../../runtime/bin/python3")
    (root / "bin" / "tool").write_text("#!/bin/sh\n", encoding="utf-8")
    (root / "bin" / "tool").chmod(0o755)
    (site / "pkg" / "__pycache__").mkdir()
    (site / "pkg" / "__pycache__" / "x.cpython-312.pyc").write_bytes(b"bytecode")
    (site / "stray.pyc").write_bytes(b"bytecode")
    (root / "empty").mkdir()
    full = hashing.scan_tree(root, skip=hashing.skip_bytecode)
    known = hashing.KnownDigests.load(tmp_path / "digests.json")
    for _ in range(2):  # read, then answered from the record
        survey = survey_tree(root, site_dir="lib/site-packages", known=known).serialise()
        assert survey.damaged == {}
        assert survey.entries == full.to_json()
        assert survey.digest == full.digest()
        assert json.loads(survey.manifest_text) == full.to_json()
        assert (
            survey.manifest_text
            == json.dumps(full.to_json(), sort_keys=True, separators=(",", ":")) + "\n"
        )
    assert known.changed


def test_a_survey_finds_damage_and_a_missing_file_and_checks_no_record_without_a_site(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    install(site, {"pkg/__init__.py": b"x = 1\n", "pkg/gone.py": b"y = 2\n", "pkg/ok.py": b""})
    (site / "pkg" / "gone.py").unlink()
    victim = site / "pkg" / "__init__.py"
    victim.unlink()
    victim.write_bytes(b"edited")
    survey = survey_tree(site, site_dir="")
    assert survey.damaged == {"pkg": ["__init__.py", "gone.py (missing)"]}
    assert survey_tree(site, site_dir=None).damaged == {}  # a runtime with nothing installed


def test_record_rows_outside_the_walk_and_quoted_paths_are_checked(tmp_path: Path) -> None:
    """A row for a file above the site folder (`../`), and a quoted path with a comma."""
    root = tmp_path / "layer"
    site = root / "site"
    install(site, {"pkg/a,b.py": b"comma\n"})
    (root / "share").mkdir()
    (root / "share" / "data.txt").write_bytes(b"data\n")
    record = site / "pkg-1.0.dist-info" / "RECORD"
    rows = record.read_text().replace("pkg/a,b.py,", '"pkg/a,b.py",')
    data_hash = record_hash(b"data\n")
    rows += f"../share/data.txt,sha256={data_hash},5\n"
    record.write_text(rows)
    assert survey_tree(root, site_dir="site").damaged == {}
    (root / "share" / "data.txt").write_bytes(b"DATA\n")
    assert survey_tree(root, site_dir="site").damaged == {"pkg": ["data.txt"]}


def test_hand_edited_records_mean_reading_again_not_a_traceback(tmp_path: Path) -> None:
    site = tmp_path / "site"
    install(site, {"pkg/__init__.py": b"x = 1\n"})
    info = os.stat(site / "pkg" / "__init__.py")
    key = f"{info.st_dev}:{info.st_ino}"
    for junk in (1, [], [info.st_size], "text", None, {"a": 1}):
        verified = VerifiedFiles(None, {key: junk})
        known = hashing.KnownDigests(None, {key: junk})
        survey = survey_tree(site, site_dir="", verified=verified, known=known)
        assert survey.damaged == {}
        assert survey.entries["pkg/__init__.py"][1] == hashing.hash_bytes(b"x = 1\n")
