"""`publish --bytecode`: byte-stable unchecked-hash pycs in archives, kept by deploy when they
belong to the source beside them; and the deploy's own tar reader against tarfile's view."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from stack_trees import FRAMEWORK, RUNTIME, build_stack
from test_deploy import publish

from stacks.deploy.deploy import DeployError, deploy, unpack_layer

SITE = "lib/python3.12/site-packages"
# Constant sets (ordered by string hashes), shared and interned strings, nested code: what
# makes marshal's output depend on the hash seed or on the process's history.
_TRICKY = """\
KINDS = frozenset({"alpha", "beta", "gamma", "delta"})
def pick(x):
    return x in {"one", "two", "three", "four", "five"}
class Shape:
    names = ("alpha", "beta", "alpha", "beta")
    def area(self, *, width=1.0, height=2.0):
        return [w * h for w in (width,) for h in (height,)]
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test stack, with a module whose bytecode is easily unstable."""
    root = tmp_path_factory.mktemp("bytecode") / "build"
    build_stack(root)
    (root / FRAMEWORK / SITE / "fwpkg" / "tricky.py").write_text(_TRICKY, encoding="utf-8")
    return root


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar.gz"))
    }


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar
            if m.isfile()
        }


def test_bytecode_archives_are_byte_reproducible_and_hold_unchecked_hash_pycs(
    stack: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = publish(stack, tmp_path / "one", "tar.gz", bytecode=True)
    monkeypatch.setenv("PYTHONHASHSEED", "4242")  # the caller's seed must not matter
    second = publish(stack, tmp_path / "two", "tar.gz", bytecode=True)
    assert _digests(first) == _digests(second)
    plain = publish(stack, tmp_path / "plain", "tar.gz")
    assert all(".pyc" not in name for name in _members(plain / f"{FRAMEWORK}.tar.gz"))
    members = _members(first / f"{FRAMEWORK}.tar.gz")
    pyc = members[f"{FRAMEWORK}/{SITE}/fwpkg/__pycache__/tricky.cpython-312.pyc"]
    assert pyc[4:8] == b"\x01\x00\x00\x00"  # hash-based, unchecked (PEP 552)
    # The build tree's own (fake) pycs are never shipped: ours replace them.
    assert members[f"{FRAMEWORK}/{SITE}/fwpkg/__pycache__/__init__.cpython-312.pyc"][:1] != b"\0"
    runtime = _members(first / f"{RUNTIME}.tar.gz")
    assert f"{RUNTIME}/lib/python3.12/__pycache__/os.cpython-312.pyc" in runtime
    # The source hash in the header is the source's, as the runtime computes it.
    check = (
        "import importlib.util, sys; src, pyc = open(sys.argv[1], 'rb').read(), "
        "open(sys.argv[2], 'rb').read(); sys.exit(importlib.util.source_hash(src) != pyc[8:16])"
    )
    (tmp_path / "s.py").write_bytes(members[f"{FRAMEWORK}/{SITE}/fwpkg/tricky.py"])
    (tmp_path / "s.pyc").write_bytes(pyc)
    python = stack / RUNTIME / "bin" / "python"
    subprocess.run([python, "-c", check, tmp_path / "s.py", tmp_path / "s.pyc"], check=True)


def _flags(pyc: Path) -> bytes:
    return pyc.read_bytes()[4:8]


def _rewrite(archive: Path, change: dict[str, bytes]) -> None:
    """Replace members' content in a tar.gz (and fix nothing else: the caller fixes metadata)."""
    with tarfile.open(archive) as tar:
        items = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar]  # type: ignore[union-attr]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member, data in items:
            if member.name in change:
                data = change[member.name]
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    archive.write_bytes(gzip.compress(raw.getvalue(), mtime=0))
    manifest = archive.parent / "__stacks__" / "stack.json"
    data = json.loads(manifest.read_text())
    for group in data["layers"].values():
        for entry in group:
            if entry["archive_name"] == archive.name:
                entry["archive_size"] = archive.stat().st_size
                entry["archive_hashes"] = {
                    "sha256": hashlib.sha256(archive.read_bytes()).hexdigest()
                }
    manifest.write_text(json.dumps(data))


def test_deploy_keeps_matching_shipped_pycs_and_compiles_the_others(
    stack: Path, tmp_path: Path
) -> None:
    artifacts = publish(stack, tmp_path / "artifacts", "tar.gz", bytecode=True)
    archive = artifacts / f"{FRAMEWORK}.tar.gz"
    members = _members(archive)
    cache = f"{FRAMEWORK}/{SITE}/fwpkg/__pycache__"
    wrong_magic = bytearray(members[f"{cache}/cli.cpython-312.pyc"])
    wrong_magic[0] ^= 0xFF
    _rewrite(
        archive,
        {
            # A source that is not the one its shipped pyc was compiled from ...
            f"{FRAMEWORK}/{SITE}/fwpkg/tricky.py": b"MARK = 'the source beside it'\n",
            # ... and a pyc for another interpreter: both compiled on the target instead.
            f"{cache}/cli.cpython-312.pyc": bytes(wrong_magic),
        },
    )
    target = tmp_path / "deploy"
    deploy(artifacts, target)
    deployed = target / FRAMEWORK / SITE / "fwpkg" / "__pycache__"
    shipped = members[f"{cache}/__init__.cpython-312.pyc"]
    assert (deployed / "__init__.cpython-312.pyc").read_bytes() == shipped  # kept as shipped
    assert _flags(deployed / "tricky.cpython-312.pyc") == b"\0\0\0\0"  # compiled here
    assert _flags(deployed / "cli.cpython-312.pyc") == b"\0\0\0\0"
    stdlib = target / RUNTIME / "lib" / "python3.12" / "__pycache__" / "os.cpython-312.pyc"
    assert _flags(stdlib) == b"\x01\0\0\0"
    app = target / "app-demo" / "bin" / "python"
    done = subprocess.run(
        [app, "-c", "import fwpkg.tricky as t, fwpkg; print(t.MARK); print(t.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.splitlines()[0] == "the source beside it"
    # Shipped bytecode is not compared content: the deployment checks clean and is kept.
    again = deploy(artifacts, target)
    assert [layer.action for layer in again] == ["unchanged"] * 3


def _tarfile_view(data: bytes, dest: Path) -> dict[str, object]:
    seen: dict[str, object] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar:
            rel = m.name.partition("/")[2]
            if rel and m.isfile():
                seen[rel] = [
                    "f",
                    hashlib.sha256(tar.extractfile(m).read()).hexdigest(),
                    bool(m.mode & 0o111),
                ]  # type: ignore[union-attr]
            elif rel and m.issym():
                seen[rel] = ["l", m.linkname]
            elif rel and m.isdir():
                seen[rel] = ["d"]
            elif rel and m.islnk():
                seen[rel] = seen[m.linkname.partition("/")[2]]
    return seen


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_the_tar_reader_reads_what_tarfile_writes(tmp_path: Path, fmt: int) -> None:
    long = "d" * 60 + "/" + "e" * 60 + "/" + "f" * 90  # over 100 characters: prefix or long name
    names = {
        "root/empty": b"",
        "root/block": bytes(range(256)) * 2,  # exactly 512 bytes
        "root/big.bin": os.urandom(200_003),
        f"root/{long}/x.py": b"print('long')\n",
    }
    if fmt != tarfile.USTAR_FORMAT:
        names["root/dé ploy 🦎.txt"] = b"unicode\n"
        names[f"root/{'g' * 150}"] = b"a long name without folders\n"
    target = "block" if fmt == tarfile.USTAR_FORMAT else f"{long}/x.py"  # ustar: 100 at most
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tar:
        folders = sorted(
            {"root"}
            | {n.rsplit("/", 1)[0] for n in names}
            | {f"root/{long}".rsplit("/", 1)[0], "root/" + long.split("/")[0]}
        )
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in names.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755 if name.endswith(".py") else 0o644
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("root/link")
        link.type, link.linkname = tarfile.SYMTYPE, target
        tar.addfile(link)
        hard = tarfile.TarInfo("root/hard")
        hard.type, hard.linkname = tarfile.LNKTYPE, "root/big.bin"
        tar.addfile(hard)
    data = raw.getvalue()
    archive = tmp_path / "root.tar.gz"
    archive.write_bytes(gzip.compress(data, mtime=0))
    dest = tmp_path / "out"
    dest.mkdir()
    content = unpack_layer(archive, dest, "root", max_bytes=64 << 20)
    expected = _tarfile_view(data, tmp_path / "ref")
    assert {k: v for k, v in content.items() if v != ["d"] or k in expected} == expected
    assert (dest / long / "x.py").read_bytes() == b"print('long')\n"
    assert (dest / "big.bin").read_bytes() == names["root/big.bin"]
    assert os.readlink(dest / "link") == target


def _tar_gz(build: Callable[[tarfile.TarFile], None], **options: Any) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", **options) as tar:
        root = tarfile.TarInfo("root")
        root.type = tarfile.DIRTYPE
        tar.addfile(root)
        build(tar)
    return gzip.compress(raw.getvalue(), mtime=0)


def _add(tar: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, **pax: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.pax_headers = kind, pax
    tar.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: _tar_gz(
                lambda t: _add(t, "root/s", **{"GNU.sparse.size": "9"}), format=tarfile.PAX_FORMAT
            ),
            "special file",
        ),
        (lambda: _tar_gz(lambda t: _add(t, "root/v", b"V")), "special file"),
        (
            lambda: _tar_gz(
                lambda t: _add(t, "root/f"), format=tarfile.PAX_FORMAT, pax_headers={"path": "x"}
            ),
            "global headers",
        ),
        (
            lambda: gzip.compress(
                bytes(
                    b ^ (i == 700)
                    for i, b in enumerate(gzip.decompress(_tar_gz(lambda t: _add(t, "root/f"))))
                ),
                mtime=0,
            ),
            "checksum",
        ),
    ],
    ids=["sparse", "unknown type", "pax global header", "bad checksum"],
)
def test_the_tar_reader_refuses_what_it_does_not_know(
    tmp_path: Path, make: Callable[[], bytes], message: str
) -> None:
    archive = tmp_path / "root.tar.gz"
    archive.write_bytes(make())
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(DeployError, match=message):
        unpack_layer(archive, dest, "root", max_bytes=64 << 20)
