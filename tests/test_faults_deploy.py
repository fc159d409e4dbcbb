"""Hostile and broken input for deploy: the kinds tests/test_deploy.py did not cover yet, and a
fuzz test of randomly corrupted archives (compressed and raw tar bytes) and metadata JSON.

Whatever the input, deploy returns exit 0, 1 or 2 (never an exception, so never a
traceback), writes nothing outside the target, and leaves no temporary folder in it.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_deploy import ROOT, hostile_tar, hostile_zip, publish_raw, snapshot, tar_member

from stacks.deploy.deploy import RECORD, DeployError, deploy, main

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _zeros_zip(size: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo(f"{ROOT}/", date_time=(2025, 1, 1, 0, 0, 0))
        info.create_system, info.external_attr = 3, 0o40755 << 16
        zf.writestr(info, b"")
        info = zipfile.ZipInfo(f"{ROOT}/zeros", date_time=(2025, 1, 1, 0, 0, 0))
        info.create_system, info.external_attr = 3, 0o100644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w") as dest:
            chunk = bytes(1 << 20)
            for _ in range(size >> 20):
                dest.write(chunk)
    return out.getvalue()


def _zeros_tar_gz(size: int) -> bytes:
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz:  # noqa: SIM117
        with tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(tar_member(ROOT, tarfile.DIRTYPE))
            info = tar_member(f"{ROOT}/zeros", size=size)
            tar.addfile(info, io.BytesIO(bytes(size)))
    return raw.getvalue()


MORE_HOSTILE: dict[str, Any] = {
    "hard link with ..": lambda t: (
        hostile_tar(
            [
                (tar_member(f"{ROOT}/f"), b"x"),
                (tar_member(f"{ROOT}/hl", tarfile.LNKTYPE, linkname=f"{ROOT}/../{ROOT}/f"), b""),
            ]
        ),
        "tar.gz",
        r"'\.\.'",
    ),
    "hard link to a symlink pointing out": lambda t: (
        hostile_tar(
            [
                (tar_member(f"{ROOT}/s", tarfile.SYMTYPE, linkname="."), b""),
                (tar_member(f"{ROOT}/hl", tarfile.LNKTYPE, linkname=f"{ROOT}/s"), b""),
            ]
        ),
        "tar.gz",
        "not a file earlier",
    ),
    "block device": lambda t: (
        hostile_tar([(tar_member(f"{ROOT}/sda", tarfile.BLKTYPE, devmajor=8, devminor=0), b"")]),
        "tar.gz",
        "device",
    ),
    "zip absolute path": lambda t: (
        hostile_zip([(str(t / "pwned"), 0o100644, b"x")]),
        "zip",
        "absolute path|outside the archive",
    ),
    "zip absolute symlink": lambda t: (
        hostile_zip([(f"{ROOT}/etc", 0o120777, str(t).encode())]),
        "zip",
        "absolute",
    ),
    "zip device": lambda t: (hostile_zip([(f"{ROOT}/d", 0o020644, b"")]), "zip", "device"),
    "zip bomb (deflate)": lambda t: (_zeros_zip(80 << 20), "zip", "unpacks to more"),
    "gzip bomb (one file)": lambda t: (_zeros_tar_gz(80 << 20), "tar.gz", "unpacks to more"),
}


@pytest.mark.parametrize("kind", list(MORE_HOSTILE))
def test_more_hostile_archives_are_refused(kind: str, tmp_path: Path) -> None:
    target = tmp_path / "deploy"
    data, fmt, message = MORE_HOSTILE[kind](tmp_path)
    artifacts = publish_raw(tmp_path / "artifacts", data, fmt)
    before = snapshot(tmp_path, target)
    with pytest.raises(DeployError, match=message):
        deploy(artifacts, target)
    assert snapshot(tmp_path, target) == before  # nothing written outside the target
    assert os.listdir(target) == []  # and nothing left inside it


# --- fuzzing --------------------------------------------------------------------------

LAUNCHER = f'#!/bin/sh\nexec {sys.executable} "$@"\n'
LAYER_CONFIG = {
    "layer_name": ROOT,
    "install_target": ROOT,
    "kind": "runtime",
    "python": "bin/python",
    "base_python": "bin/python",
    "py_version": "3.12.1",
    "site_dir": "lib/python3.12/site-packages",
    "pylib_dirs": [],
    "dynlib_dirs": [],
    "runtime_layer": ROOT,
    "required_layers": [],
}


def _valid_tar() -> bytes:
    """A tiny runtime-like layer that deploys: a launcher, a postinstall never run, metadata."""
    members = [
        (tar_member(f"{ROOT}/bin", tarfile.DIRTYPE), b""),
        (tar_member(f"{ROOT}/bin/python", mode=0o755), LAUNCHER.encode()),
        (tar_member(f"{ROOT}/postinstall.py"), b"print('configured')\n"),
        (tar_member(f"{ROOT}/share", tarfile.DIRTYPE), b""),
        (tar_member(f"{ROOT}/share/venv", tarfile.DIRTYPE), b""),
        (tar_member(f"{ROOT}/share/venv/metadata", tarfile.DIRTYPE), b""),
        (
            tar_member(f"{ROOT}/share/venv/metadata/venvstacks_layer.json"),
            json.dumps(LAYER_CONFIG).encode(),
        ),
        # data/, not lib/: deploy would compile lib/ with bin/python, which is a script here
        # (and deploy refuses to run anything but a native interpreter).
        (tar_member(f"{ROOT}/data", tarfile.DIRTYPE), b""),
        (tar_member(f"{ROOT}/data/data.txt"), b"data\n" * 50),
        (tar_member(f"{ROOT}/data/link", tarfile.SYMTYPE, linkname="data.txt"), b""),
        (tar_member(f"{ROOT}/data/hard", tarfile.LNKTYPE, linkname=f"{ROOT}/data/data.txt"), b""),
    ]
    return gzip.decompress(hostile_tar(members))


VALID_TAR = _valid_tar()


@contextlib.contextmanager
def _example_dir(base: Path) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(dir=base))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _deploy_and_check(
    folder: Path, archive: bytes, metadata: str | None = None, *, fuzzing: bool = True
) -> int:
    """Publish `archive` (with correct size and hash) or raw `metadata`, deploy, check safety."""
    artifacts = publish_raw(folder / "artifacts", archive, "tar.gz")
    if metadata is not None:
        (artifacts / "__stacks__" / "stack.json").write_text(metadata, encoding="utf-8")
    target = folder / "target"
    before = snapshot(folder, target)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main([str(artifacts), "--target", str(target)])
    assert code in (0, 1, 2)
    if fuzzing:
        event(f"exit {code}")
    assert snapshot(folder, target) == before  # nothing written outside the target
    if target.exists():
        hidden = [n for n in os.listdir(target) if n.startswith(".")]
        assert hidden == ([RECORD] if code == 0 else [])  # no partials
        if code == 0:
            assert (target / ROOT / ".stacks-deployed.json").is_file()
    return code


def test_the_fuzz_baseline_deploys(tmp_path: Path) -> None:
    assert _deploy_and_check(tmp_path, gzip.compress(VALID_TAR, mtime=0), fuzzing=False) == 0


flips = st.lists(st.tuples(st.integers(min_value=0), st.integers(1, 255)), min_size=1, max_size=8)


def _flip(data: bytes, changes: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for position, mask in changes:
        out[position % len(out)] ^= mask
    return bytes(out)


@FUZZ
@given(changes=flips, cut=st.none() | st.integers(min_value=0))
def test_corrupted_tar_bytes_never_crash_deploy(
    tmp_path: Path, changes: list[tuple[int, int]], cut: int | None
) -> None:
    """Damage inside the tar stream (headers, sizes, names, link targets), validly gzipped."""
    data = _flip(VALID_TAR, changes)
    if cut is not None:
        data = data[: cut % len(data)]
    with _example_dir(tmp_path) as folder:
        _deploy_and_check(folder, gzip.compress(data, mtime=0))


@FUZZ
@given(changes=flips, cut=st.none() | st.integers(min_value=0))
def test_corrupted_compressed_bytes_never_crash_deploy(
    tmp_path: Path, changes: list[tuple[int, int]], cut: int | None
) -> None:
    """Damage in the gzip stream itself."""
    data = _flip(gzip.compress(VALID_TAR, mtime=0), changes)
    if cut is not None:
        data = data[: cut % len(data)]
    with _example_dir(tmp_path) as folder:
        _deploy_and_check(folder, data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=10,
)
FIELDS = [
    "layer_name",
    "install_target",
    "kind",
    "runtime_layer",
    "archive_name",
    "archive_size",
    "archive_hashes",
    "required_layers",
    "app_launch_module",
]


@FUZZ
@given(
    edits=st.lists(st.tuples(st.sampled_from(FIELDS), json_values | st.just(...)), max_size=4),
    group=st.sampled_from(["runtimes", "frameworks", "applications", "other"]),
    raw=st.none() | st.text(max_size=80),
)
def test_corrupted_metadata_never_crashes_deploy(
    tmp_path: Path, edits: list[tuple[str, Any]], group: str, raw: str | None
) -> None:
    """Fields replaced by random JSON or removed, the layer filed under another kind, or junk."""
    archive = gzip.compress(VALID_TAR, mtime=0)
    data = hashlib.sha256(archive).hexdigest()
    entry: dict[str, Any] = {
        "layer_name": ROOT,
        "install_target": ROOT,
        "kind": "runtime",
        "runtime_layer": ROOT,
        "archive_name": f"{ROOT}.tar.gz",
        "archive_size": len(archive),
        "archive_hashes": {"sha256": data},
    }
    for name, value in edits:
        if value is ...:
            entry.pop(name, None)
        else:
            entry[name] = value
    document = raw if raw is not None else json.dumps({"layers": {group: [entry]}})
    with _example_dir(tmp_path) as folder:
        _deploy_and_check(folder, archive, metadata=document)


# --- hostile input from issue 12: one clear error each, exit 1, nothing deployed ----------


def _patched_zip(offsets: dict[str, tuple[int, int]]) -> bytes:
    """A one-file zip whose local and central headers get `field: (offset pair, value)`."""
    data = bytearray(hostile_zip([(f"{ROOT}/f", 0o100644, b"content")]))
    for field, (local_offset, central_offset) in offsets.items():
        value = {"flags": 0x1, "method": 99}[field]
        start = 0
        while (at := data.find(b"PK\x03\x04", start)) >= 0:
            data[at + local_offset : at + local_offset + 2] = value.to_bytes(2, "little")
            start = at + 4
        start = 0
        while (at := data.find(b"PK\x01\x02", start)) >= 0:
            data[at + central_offset : at + central_offset + 2] = value.to_bytes(2, "little")
            start = at + 4
    return bytes(data)


def _link_chain(length: int) -> bytes:
    members = [(tar_member(f"{ROOT}/file"), b"x")]
    for index in range(length):
        target = "file" if index == 0 else f"l{index - 1}"
        members.append((tar_member(f"{ROOT}/l{index}", tarfile.SYMTYPE, linkname=target), b""))
    return hostile_tar(members)


def _many_dirs(count: int) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(tar_member(ROOT, tarfile.DIRTYPE))
        for index in range(count):
            tar.addfile(tar_member(f"{ROOT}/d{index}", tarfile.DIRTYPE))
    return lzma.compress(raw.getvalue(), preset=1)


HOSTILE_ARCHIVES: dict[str, tuple[Any, str, str]] = {
    "1,200-link symlink chain": (lambda: _link_chain(1200), "tar.gz", "symlinks in a chain"),
    "encrypted zip entry": (
        lambda: _patched_zip({"flags": (6, 8)}),
        "zip",
        "encrypted zip entry",
    ),
    "unsupported zip compression": (
        lambda: _patched_zip({"method": (8, 10)}),
        "zip",
        "unsupported zip compression method 99",
    ),
    "entry-count bomb": (lambda: _many_dirs(20_000), "tar.xz", "unpacks to more than"),
}


@pytest.mark.parametrize("kind", list(HOSTILE_ARCHIVES))
def test_issue_12_hostile_archives_get_one_clear_error(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, fmt, message = HOSTILE_ARCHIVES[kind]
    artifacts = publish_raw(tmp_path / "artifacts", make(), fmt)
    target = tmp_path / "deploy"
    assert main([str(artifacts), "--target", str(target)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert os.listdir(target) == []


def _stack_json(entries: dict[str, list[dict[str, Any]]]) -> str:
    return json.dumps({"layers": entries})


def _entry(name: str, **fields: Any) -> dict[str, Any]:
    entry = {
        "layer_name": name,
        "install_target": name,
        "runtime_layer": "rt",
        "archive_name": f"{name}.tar.gz",
        "archive_size": 10,
        "archive_hashes": {"sha256": "0" * 64},
    }
    entry.update(fields)
    return entry


def _deep_required_layers(depth: int) -> str:
    frameworks = [_entry(f"f{i}", required_layers=[f"f{i - 1}"] if i else []) for i in range(depth)]
    # Listed top first, so that resolving them follows the whole chain down at once.
    return _stack_json({"runtimes": [_entry("rt")], "frameworks": frameworks[::-1]})


HOSTILE_METADATA: dict[str, tuple[Any, str]] = {
    "archive_size 1e400": (
        lambda: _stack_json({"runtimes": [_entry("rt")]}).replace(
            '"archive_size": 10', '"archive_size": 1e400'
        ),
        "archive_size inf is not a size",
    ),
    "archive_size Infinity": (
        lambda: _stack_json({"runtimes": [_entry("rt")]}).replace(
            '"archive_size": 10', '"archive_size": Infinity'
        ),
        "Infinity is not a number JSON allows",
    ),
    "nested 200,000 levels": (
        lambda: '{"layers": ' + "[" * 200_000 + "]" * 200_000 + "}",
        "nested too deeply",
    ),
    "3,000-deep required_layers": (lambda: _deep_required_layers(3000), "nested too deeply"),
    "non-string app_launch_module": (
        lambda: _stack_json(
            {"runtimes": [_entry("rt")], "applications": [_entry("app", app_launch_module=5)]}
        ),
        "app_launch_module 5 is not a module name",
    ),
}


@pytest.mark.parametrize("kind", list(HOSTILE_METADATA))
def test_issue_12_hostile_metadata_gets_one_clear_error(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, message = HOSTILE_METADATA[kind]
    artifacts = publish_raw(tmp_path / "artifacts", gzip.compress(VALID_TAR, mtime=0), "tar.gz")
    (artifacts / "__stacks__" / "stack.json").write_text(make(), encoding="utf-8")
    target = tmp_path / "deploy"
    assert main([str(artifacts), "--target", str(target)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not target.exists()


def test_full_disk_names_the_target_and_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "small disk"
    target.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(target)]).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(tar_member(ROOT, tarfile.DIRTYPE))
            tar.addfile(tar_member(f"{ROOT}/big", size=4 << 20), io.BytesIO(bytes(4 << 20)))
        artifacts = publish_raw(tmp_path / "artifacts", gzip.compress(raw.getvalue()), "tar.gz")
        assert main([str(artifacts), "--target", str(target)]) == 1
        err = capsys.readouterr().err
        assert f"no space left on the device of {target}" in err and "hint: free space" in err
        assert "Traceback" not in err and os.listdir(target) == []
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_no_code_from_the_archive_runs(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    evil = f"open({str(pwned)!r}, 'w').write('x')\n".encode()
    script = f'#!/bin/sh\ntouch {pwned}\nexec {sys.executable} "$@"\n'.encode()
    members = [
        (info, evil if info.name == f"{ROOT}/postinstall.py" else data)
        for info, data in _members_of(VALID_TAR)
    ]
    # postinstall.py is shipped for other consumers; deploy configures layers itself.
    assert _deploy_and_check(tmp_path / "a", hostile_tar(members), fuzzing=False) == 0
    assert not pwned.exists()
    # A runtime whose bin/python is a script is refused before anything runs it.
    members = [
        (info, script if info.name == f"{ROOT}/bin/python" else data) for info, data in members
    ]
    members.append((tar_member(f"{ROOT}/lib", tarfile.DIRTYPE), b""))
    artifacts = publish_raw(tmp_path / "b", hostile_tar(members), "tar.gz")
    with pytest.raises(DeployError, match="is not a native interpreter"):
        deploy(artifacts, tmp_path / "b" / "target")
    assert not pwned.exists() and os.listdir(tmp_path / "b" / "target") == []


def _members_of(tar_bytes: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        return [
            (info, tar.extractfile(info).read() if info.isreg() else b"")  # type: ignore[union-attr]
            for info in tar.getmembers()
            if info.name != ROOT
        ]
