"""Unpack a runtime archive safely, shape it like python-build-standalone's install_only, check it.

`unpack_archive` refuses members that would land outside the target (absolute paths, `..`,
links leaving it, special files); `shape_runtime` trims a runtime to the layout in
docs/internals.md ("Runtime layer"); `check_runtime` runs it once.
"""

from __future__ import annotations

import contextlib
import lzma
import os
import re
import shutil
import subprocess
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, NoReturn

from stacks import atomic
from stacks.children import run_child
from stacks.errors import RuntimeFetchError
from stacks.runtime.relocation import clean_environment
from stacks.spec.model import ARCHIVE_SUFFIXES

TEST_DIRS = frozenset({"test", "tests", "idle_test"})
TEST_EXTENSIONS = ("_test", "_ctypes_test", "_xxtestfuzz")
DROPPED_SUFFIXES = (".pyc", ".pyo", ".a", ".o")


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def version_matches(provided: str, requested: str) -> bool:
    wanted = parse_version(requested)
    return parse_version(provided)[: len(wanted)] == wanted


def unpack_archive(archive: Path, dest: Path) -> None:
    """Unpack a tar archive (.tar.gz, .tar.xz, .tar.zst, plain) into `dest`, refusing unsafe members."""
    import zstandard

    dest.mkdir(parents=True, exist_ok=True)
    real_dest = os.path.realpath(dest)
    broken = (tarfile.TarError, EOFError, OSError, lzma.LZMAError, zlib.error)
    try:
        with archive.open("rb") as raw, _tar_stream(raw) as tar:
            for member in tar:
                _extract(tar, member, dest, real_dest, archive.name)
    except (*broken, zstandard.ZstdError) as exc:
        raise RuntimeFetchError(
            f"could not unpack {archive.name}: {exc}",
            hint="the archive is damaged, or not one of " + ", ".join(ARCHIVE_SUFFIXES),
        ) from None
    for folder, dirs, files in os.walk(dest):
        for name in dirs + files:
            path = Path(folder, name)
            if path.is_symlink() and not _inside(os.path.realpath(path), real_dest):
                rel = path.relative_to(dest).as_posix()
                _unsafe(archive.name, rel, "is a link that resolves outside the archive")


@contextlib.contextmanager
def _tar_stream(raw: IO[bytes]) -> Iterator[tarfile.TarFile]:
    """A streaming TarFile, with the compression told by the file's magic bytes."""
    magic = raw.read(4)
    raw.seek(0)
    if magic == b"\x28\xb5\x2f\xfd":
        import zstandard

        with (
            zstandard.ZstdDecompressor().stream_reader(raw) as reader,
            tarfile.open(fileobj=reader, mode="r|") as tar,
        ):
            yield tar
    else:
        with tarfile.open(fileobj=raw, mode="r|*") as tar:
            yield tar


def _extract(
    tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, real_dest: str, archive: str
) -> None:
    parts = _member_parts(member.name, archive)
    if not parts:
        return
    path = dest.joinpath(*parts)
    if not _inside(os.path.realpath(path.parent), real_dest):
        _unsafe(archive, member.name, "would be written through a link leaving the archive")
    if member.isdir():
        path.mkdir(parents=True, exist_ok=True)
        path.chmod((member.mode & 0o777) | 0o700)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.is_file():
        path.unlink()
    if member.isreg():
        source = tar.extractfile(member)
        assert source is not None
        with source, path.open("xb") as out:
            shutil.copyfileobj(source, out, 1024 * 1024)
        path.chmod((member.mode & 0o777) | 0o600)
    elif member.issym():
        link = member.linkname
        lexical = os.path.normpath(os.path.join(*parts[:-1], link)) if link else ".."
        if os.path.isabs(link) or lexical == ".." or lexical.startswith("../"):
            _unsafe(archive, member.name, f"is a link to {link!r}, outside the archive")
        os.symlink(link, path)
    elif member.islnk():
        link = member.linkname
        link_parts = [p for p in link.split("/") if p not in ("", ".")]
        real = os.path.realpath(dest.joinpath(*link_parts))
        if os.path.isabs(link) or ".." in link_parts or not _inside(real, real_dest):
            _unsafe(archive, member.name, f"is a hard link to {link!r}, outside the archive")
        if not os.path.isfile(real):
            _unsafe(archive, member.name, f"is a hard link to {link!r}, which it does not hold")
        os.link(real, path)
    else:
        _unsafe(archive, member.name, "is a device, FIFO or other special file")


def _member_parts(name: str, archive: str) -> list[str]:
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        _unsafe(archive, name, "has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        _unsafe(archive, name, "has '..' in its path")
    return parts


def _inside(real: str, real_root: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def _unsafe(archive: str, member: str, why: str) -> NoReturn:
    raise RuntimeFetchError(
        f"refusing to unpack {archive}: member {member!r} {why}",
        hint="the archive is unsafe or damaged; use a python-build-standalone-style archive",
    )


def unpack_runtime(archive: Path, staging: Path, url: str) -> None:
    """Unpack next to `staging`, then move the runtime's root folder into its place."""
    scratch = Path(f"{staging}.unpack-{os.urandom(4).hex()}")  # named first: see sibling_name
    try:
        os.mkdir(scratch)
        os.chmod(scratch, atomic.directory_mode())  # it becomes the runtime when bin/ is on top
        unpack_archive(archive, scratch)
        entries = list(scratch.iterdir())
        if (scratch / "bin").is_dir():
            root = scratch
        elif len(entries) == 1 and (entries[0] / "bin").is_dir():
            root = entries[0]
        else:
            raise RuntimeFetchError(
                f"{url} does not hold a Python runtime: expected bin/ at its top, or under "
                "one top folder such as python/",
                hint="use a python-build-standalone install_only archive or the same layout",
            )
        staging.rmdir()
        os.replace(root, staging)
    finally:
        atomic.remove_tree(scratch)


def dropped_from_runtime(rel: Path, xy: str) -> bool:
    """Whether a runtime path (relative to its root) is left out: tests, caches, archives."""
    parts = rel.parts
    if "__pycache__" in parts or rel.name.endswith(DROPPED_SUFFIXES):
        return True
    if parts[:2] != ("lib", f"python{xy}") or len(parts) < 3:
        return False
    inner = parts[2:]
    if inner[0] == "site-packages":
        return len(inner) > 1
    if any(p in TEST_DIRS for p in inner):
        return True
    return inner[0] == "lib-dynload" and rel.name.startswith(TEST_EXTENSIONS)


def shape_runtime(root: Path, xy: str, origin: str) -> None:
    """Trim an unpacked or copied runtime to the install_only shape in docs/internals.md."""
    bin_dir, exe = root / "bin", root / "bin" / f"python{xy}"
    if exe.is_symlink():
        real = Path(os.path.realpath(exe))
        if not _inside(str(real), os.path.realpath(root)) or not real.is_file():
            raise RuntimeFetchError(f"bin/python{xy} from {origin} links outside the runtime")
        exe.unlink()
        shutil.copy2(real, exe)
    if not exe.is_file():
        present = sorted(
            p.name for p in bin_dir.glob("python3.*") if re.fullmatch(r"python3\.\d+", p.name)
        )
        raise RuntimeFetchError(
            f"{origin} has no bin/python{xy}"
            + (f" (it has {', '.join(present)})" if present else ""),
            hint="check that the runtime's Python version matches python_implementation",
        )
    for entry in bin_dir.iterdir():
        if entry.name != exe.name:
            atomic.remove_tree(entry)
    for alias in ("python3", "python"):
        (bin_dir / alias).symlink_to(exe.name)
    atomic.remove_tree(root / "share")
    for folder, dirs, files in os.walk(root, topdown=True):
        rel = Path(folder).relative_to(root)
        for name in [*dirs, *files]:
            if dropped_from_runtime(rel / name, xy):
                atomic.remove_tree(Path(folder, name))
        dirs[:] = [d for d in dirs if (Path(folder, d)).is_dir()]
    (root / "lib" / f"python{xy}" / "site-packages").mkdir(parents=True, exist_ok=True)


_CHECK = (
    "import sys; print('%d.%d.%d' % sys.version_info[:3]); print(sys.prefix); print(sys.version)"
)


def precompile_stdlib(root: Path, xy: str) -> None:
    """Write the stdlib's bytecode once, so interpreters started from the runtime load it."""
    # Without it every smoke check and uv interpreter query in a build compiles the modules it
    # imports (~0.4 s each). Build trees link it; archives and exports never carry it.
    python = root / "bin" / f"python{xy}"
    command = [
        str(python),
        "-I",
        "-m",
        "compileall",
        "-q",
        "-j",
        "0",
        str(root / "lib" / f"python{xy}"),
    ]
    # A file Python cannot compile (or a slow disk) costs speed only, never the runtime.
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        run_child(command, env=clean_environment(), timeout=600)


def check_runtime(root: Path, requested: str, origin: str) -> str:
    """Run the new runtime once; return its full version if it is the one asked for."""
    xy = ".".join(requested.split(".")[:2])
    python = root / "bin" / f"python{xy}"
    try:
        result = run_child(
            [str(python), "-I", "-B", "-c", _CHECK],
            text=True,
            timeout=60,
            env=clean_environment(),
            cwd=root.parent,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeFetchError(f"the runtime from {origin} does not start: {exc}") from None
    lines = result.stdout.split("\n")
    if result.returncode != 0 or len(lines) < 3:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeFetchError(
            f"the runtime from {origin} does not start: {detail}",
            hint="it may be built for another platform or need system libraries missing here",
        )
    provided, prefix = lines[0].strip(), lines[1].strip()
    if not lines[2].startswith(provided):
        raise RuntimeFetchError(
            f"the runtime from {origin} is damaged: sys.version is {lines[2].strip()!r}"
        )
    if os.path.realpath(prefix) != os.path.realpath(root):
        raise RuntimeFetchError(
            f"the runtime from {origin} is not relocatable: it uses sys.prefix {prefix}"
        )
    if not version_matches(provided, requested):
        raise RuntimeFetchError(
            f"the runtime from {origin} is CPython {provided}, not {requested}",
            hint="fix python_implementation or the runtime source",
        )
    return provided
