"""Runtime layers: find, fetch, verify and unpack a CPython in python-build-standalone's shape.

Three sources, one result (see docs/internals.md, "Runtime layer"):
- `python-build-standalone`: the `install_only` build for this platform from pbs-installer's
  download table (URL and sha256 per release), optionally through a mirror;
- `archive`: any `{url, sha256}` tar archive holding a runtime at its root or under one
  top folder (`python/` in python-build-standalone's archives);
- `local`: an interpreter installed here (pyenv, uv, PATH), copied and made relocatable.

The target folder is filled in a temporary sibling and renamed into place, so it is either
absent, the old runtime, or the finished new one.
"""

from __future__ import annotations

import contextlib
import json
import lzma
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NoReturn

from stacks import atomic
from stacks.errors import RuntimeFetchError
from stacks.runtime.downloads import download
from stacks.runtime.relocation import clean_environment, copy_installation, query_interpreter
from stacks.spec import RuntimeSource
from stacks.spec.model import ARCHIVE_SUFFIXES, UNSUPPORTED_SUFFIXES

__all__ = [
    "ARCHIVE_SUFFIXES",
    "PBS_RELEASES",
    "UNSUPPORTED_SUFFIXES",
    "PbsRelease",
    "ProvidedRuntime",
    "download",
    "find_local_interpreter",
    "mirror_url",
    "pbs_release",
    "provide_runtime",
    "requested_version",
    "unpack_archive",
]

PBS_RELEASES = "https://github.com/astral-sh/python-build-standalone/releases/download"
TEST_DIRS = frozenset({"test", "tests", "idle_test"})
TEST_EXTENSIONS = ("_test", "_ctypes_test", "_xxtestfuzz")
DROPPED_SUFFIXES = (".pyc", ".pyo", ".a", ".o")
LOCAL_HINT = (
    "install it (`pyenv install {v}` or `uv python install {v}`), or use "
    "source = 'python-build-standalone'"
)


@dataclass(frozen=True)
class ProvidedRuntime:
    """A runtime that now exists at its target: its full version and where it came from."""

    python_version: str  # X.Y.Z actually provided
    source: dict[str, str]  # JSON-able provenance


@dataclass(frozen=True)
class PbsRelease:
    """One python-build-standalone `install_only` build from pbs-installer's table."""

    python_version: str
    url: str
    sha256: str


def provide_runtime(
    implementation: str,
    source: RuntimeSource,
    target: Path,
    *,
    download_dir: Path,
    mirror: str | None = None,
    progress: bool | None = None,
) -> ProvidedRuntime:
    """Create `target` (atomically) as a runtime for `implementation` from `source`."""
    version = requested_version(implementation)
    xy = ".".join(version.split(".")[:2])
    if source.kind == "local":
        return _provide_local(version, target)
    if source.kind == "python-build-standalone":
        release = pbs_release(version)
        origin, sha256 = release.url, release.sha256
        url = mirror_url(origin, mirror)
    elif source.kind == "archive":
        if not source.url or not source.sha256:
            raise RuntimeFetchError(
                "an archive runtime source needs both 'url' and 'sha256'",
                hint='write source = {url = "https://…", sha256 = "<64 hex digits>"}',
            )
        origin = url = source.url
        sha256 = source.sha256.strip().lower().removeprefix("sha256:")
    else:
        raise RuntimeFetchError(
            f"unknown runtime source kind {source.kind!r}",
            hint="use 'python-build-standalone', 'local' or {url, sha256}",
        )
    archive = download(url, sha256, download_dir, progress=progress)
    with atomic.new_directory(target) as staging:
        _unpack_runtime(archive, staging, url)
        _shape_runtime(staging, xy, url)
        provided = _check_runtime(staging, version, url)
        precompile_stdlib(staging, xy)
        staging.chmod(0o755)
    # Provenance names the canonical URL, not the mirror: the sha256 fixes the bytes, and
    # switching mirrors must not make the same runtime look like a different one.
    return ProvidedRuntime(provided, {"kind": source.kind, "url": origin, "sha256": sha256})


def requested_version(implementation: str) -> str:
    """The `X.Y` or `X.Y.Z` of `cpython@X.Y[.Z]`."""
    match = re.fullmatch(r"cpython@(\d+\.\d+(?:\.\d+)?)", implementation.strip())
    if not match:
        raise RuntimeFetchError(
            f"unsupported Python implementation {implementation!r}",
            hint="write it as cpython@X.Y or cpython@X.Y.Z, e.g. cpython@3.12",
        )
    return match.group(1)


def pbs_release(version: str) -> PbsRelease:
    """The newest (for `X.Y`) or exact (for `X.Y.Z`) install_only build for this machine."""
    import platform

    import pbs_installer

    try:
        with warnings.catch_warnings():  # pbs-installer's own use of a deprecated importlib API
            warnings.simplefilter("ignore", DeprecationWarning)
            found, (url, sha256) = pbs_installer.get_download_link(version, build_dir=False)
    except ValueError:
        found, url, sha256 = None, "", None
    if found is None or not sha256 or "install_only" not in url:
        here = f"{platform.system().lower()}-{platform.machine().lower()}"
        raise RuntimeFetchError(
            f"python-build-standalone has no CPython {version} install_only build for "
            f"{here} (in the table of pbs-installer {_pbs_version()})",
            hint="pick another version, upgrade pbs-installer, or use source = 'local'",
        )
    full = f"{found.major}.{found.minor}.{found.micro}"
    return PbsRelease(full, url, sha256.lower())


def mirror_url(url: str, mirror: str | None) -> str:
    """`url` with python-build-standalone's release prefix replaced by `mirror` (if any)."""
    if not mirror:
        return url
    if not url.startswith(PBS_RELEASES + "/"):
        raise RuntimeFetchError(
            f"cannot apply the mirror {mirror} to {url}: it is not under {PBS_RELEASES}",
            hint="unset PBS_INSTALLER_BASE_URL when using STACKS_PYTHON_MIRROR",
        )
    return mirror.rstrip("/") + url[len(PBS_RELEASES) :]


def find_local_interpreter(version: str) -> Path:
    """An installed CPython: `X.Y` gives the newest `X.Y.z` found, `X.Y.Z` that exact one."""
    if not re.fullmatch(r"\d+\.\d+(\.\d+)?", version):
        raise RuntimeFetchError(
            f"invalid Python version {version!r}", hint="write it as X.Y or X.Y.Z, e.g. 3.12"
        )
    wanted = _parse_version(version)
    candidates = list(_local_candidates(f"{wanted[0]}.{wanted[1]}"))
    matching = [c for c in candidates if c[0][: len(wanted)] == wanted]
    if matching:
        return max(matching, key=lambda c: c[0])[1]
    seen = sorted({".".join(map(str, c[0])) for c in candidates})
    found = f" (found only {', '.join(seen)})" if seen else ""
    raise RuntimeFetchError(
        f"no local CPython {version} found in pyenv, uv-managed Pythons or "
        f"python{wanted[0]}.{wanted[1]} on PATH{found}",
        hint=LOCAL_HINT.format(v=version),
    )


def _provide_local(version: str, target: Path) -> ProvidedRuntime:
    python = find_local_interpreter(version)
    info = query_interpreter(python)
    if not _version_matches(info.version, version):
        raise RuntimeFetchError(
            f"{python} is CPython {info.version}, not {version}",
            hint=LOCAL_HINT.format(v=version),
        )
    with atomic.new_directory(target) as staging:
        copy_installation(info, staging, skip=lambda rel: _dropped(rel, info.xy))
        _shape_runtime(staging, info.xy, str(python))
        provided = _check_runtime(staging, version, str(python))
        precompile_stdlib(staging, info.xy)
        staging.chmod(0o755)
    return ProvidedRuntime(provided, {"kind": "local", "origin": str(info.prefix)})


def _local_candidates(xy: str) -> Iterator[tuple[tuple[int, ...], Path]]:
    """(version, interpreter) pairs: pyenv first, then uv-managed, then PATH."""
    pattern = re.compile(rf"{re.escape(xy)}\.(\d+)")
    root = _pyenv_root()
    versions = root / "versions" if root else None
    if versions and versions.is_dir():
        for entry in sorted(versions.iterdir()):
            python = entry / "bin" / f"python{xy}"
            if pattern.fullmatch(entry.name) and python.is_file():
                yield _parse_version(entry.name), python
    for found_version, python in _uv_managed_pythons():
        if pattern.fullmatch(found_version):
            yield _parse_version(found_version), python
    shims = os.path.realpath(root / "shims") if root else None
    seen: set[str] = set()
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        python = Path(folder or ".", f"python{xy}")
        real = os.path.realpath(python)
        if real in seen or os.path.realpath(folder) == shims or not _is_binary(python):
            continue
        seen.add(real)
        with contextlib.suppress(RuntimeFetchError):
            info = query_interpreter(python, timeout=10)
            if info.implementation == "cpython" and pattern.fullmatch(info.version):
                yield _parse_version(info.version), python


def _pyenv_root() -> Path | None:
    if os.environ.get("PYENV_ROOT"):
        return Path(os.environ["PYENV_ROOT"])
    pyenv = shutil.which("pyenv")
    if pyenv:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pyenv, "root"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                return Path(out.stdout.strip())
    home = Path.home() / ".pyenv"
    return home if home.is_dir() else None


def _uv_managed_pythons() -> list[tuple[str, Path]]:
    """`uv python list --only-installed --managed-python`, as (version, path) pairs."""
    try:
        import uv

        uv_bin = uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        uv_bin = shutil.which("uv")
    if not uv_bin:
        return []
    command = [str(uv_bin), "python", "list", "--only-installed", "--managed-python"]
    command += ["--output-format", "json", "--no-config"]
    # An empty PATH: uv would otherwise probe every python on PATH (slow, and noisy with
    # pyenv shims) before filtering down to the managed ones we asked for.
    env = {**clean_environment(), "UV_PYTHON_DOWNLOADS": "never", "PATH": ""}
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30, env=env)
        entries = json.loads(out.stdout) if out.returncode == 0 else []
    except (OSError, subprocess.SubprocessError, ValueError):
        return []
    return [
        (e["version"], Path(e["path"]))
        for e in entries
        if isinstance(e, dict)
        and e.get("implementation") == "cpython"
        and e.get("variant", "default") == "default"
        and e.get("path")
    ]


def _is_binary(path: Path) -> bool:
    """An executable file that is a compiled program, not a script (pyenv shims are scripts)."""
    try:
        with path.open("rb") as handle:
            return os.access(path, os.X_OK) and handle.read(2) != b"#!"
    except OSError:
        return False


def _parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def _version_matches(provided: str, requested: str) -> bool:
    wanted = _parse_version(requested)
    return _parse_version(provided)[: len(wanted)] == wanted


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


def _unpack_runtime(archive: Path, staging: Path, url: str) -> None:
    """Unpack next to `staging`, then move the runtime's root folder into its place."""
    scratch = Path(tempfile.mkdtemp(prefix=f"{staging.name}.unpack-", dir=staging.parent))
    try:
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


def _dropped(rel: Path, xy: str) -> bool:
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


def _shape_runtime(root: Path, xy: str, origin: str) -> None:
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
            if _dropped(rel / name, xy):
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
        subprocess.run(
            command, capture_output=True, env=clean_environment(), timeout=600, check=False
        )


def _check_runtime(root: Path, requested: str, origin: str) -> str:
    """Run the new runtime once; return its full version if it is the one asked for."""
    xy = ".".join(requested.split(".")[:2])
    python = root / "bin" / f"python{xy}"
    try:
        result = subprocess.run(
            [str(python), "-I", "-B", "-c", _CHECK],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_environment(),
            cwd=root.parent,
            check=False,
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
    if not _version_matches(provided, requested):
        raise RuntimeFetchError(
            f"the runtime from {origin} is CPython {provided}, not {requested}",
            hint="fix python_implementation or the runtime source",
        )
    return provided


def _pbs_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pbs-installer")
    except PackageNotFoundError:
        return "?"
