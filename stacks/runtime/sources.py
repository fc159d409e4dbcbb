"""Runtime layers: find, fetch, verify and unpack a CPython in python-build-standalone's shape.

Three sources, one result (see docs/internals.md, "Runtime layer"):
- `python-build-standalone`: the `install_only` build for this platform from pbs-installer's
  download table (URL and sha256 per release), optionally through a mirror;
- `archive`: any `{url, sha256}` tar archive holding a runtime at its root or under one
  top folder (`python/` in python-build-standalone's archives);
- `local`: an interpreter installed here (pyenv, uv, PATH), copied and made relocatable.

The target folder is filled in a temporary sibling and renamed into place, so it is either
absent, the old runtime, or the finished new one. Unpacking, shaping and checking a runtime
are in `stacks.runtime.unpack`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stacks import atomic
from stacks.children import run_child
from stacks.errors import RuntimeFetchError
from stacks.hashing import TreeManifest
from stacks.runtime.downloads import download
from stacks.runtime.relocation import (
    InterpreterInfo,
    clean_environment,
    copy_installation,
    query_interpreter,
)
from stacks.runtime.unpack import (
    check_runtime,
    dropped_from_runtime,
    parse_version,
    precompile_stdlib,
    shape_runtime,
    unpack_runtime,
    version_matches,
)
from stacks.spec import RuntimeSource

__all__ = [
    "PBS_RELEASES",
    "PbsRelease",
    "ProvidedRuntime",
    "find_local_interpreter",
    "mirror_url",
    "pbs_release",
    "provide_runtime",
    "requested_version",
]

PBS_RELEASES = "https://github.com/astral-sh/python-build-standalone/releases/download"
LOCAL_HINT = (
    "install it (`pyenv install {v}` or `uv python install {v}`), or use "
    "source = 'python-build-standalone'"
)


@dataclass(frozen=True)
class ProvidedRuntime:
    """A runtime that now exists at its target: its full version and where it came from."""

    python_version: str  # X.Y.Z actually provided
    source: dict[str, str]  # JSON-able provenance
    requested: str | None = None  # the X.Y.Z asked for, when another patch release stood in
    # Its tree manifest when providing it already hashed it (through the store), else None.
    manifest: TreeManifest | None = field(default=None, compare=False, repr=False)


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
    any_patch: bool = False,
    store: Path | None = None,
) -> ProvidedRuntime:
    """Create `target` (atomically) as a runtime for `implementation` from `source`.

    With `any_patch`, a `local` X.Y.Z that is not installed is replaced by the newest
    installed X.Y.* (the result's `requested` then names the version asked for). With a
    `store` (stacks.runtime.store), the runtime is made there once and linked into `target`.
    """
    version = requested_version(implementation)
    xy = ".".join(version.split(".")[:2])
    if source.kind == "local":
        return _provide_local(version, target, any_patch=any_patch, store=store)
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

    def make(staging: Path) -> str:
        archive = download(url, sha256, download_dir, progress=progress)
        unpack_runtime(archive, staging, url)
        shape_runtime(staging, xy, url)
        provided = check_runtime(staging, version, url)
        precompile_stdlib(staging, xy)
        staging.chmod(0o755)
        return provided

    def accept(provided: str) -> None:
        if not version_matches(provided, version):
            raise RuntimeFetchError(
                f"the runtime from {url} is CPython {provided}, not {version}",
                hint="fix python_implementation or the runtime source",
            )

    # The sha256 fixes the archive's bytes, whichever URL or mirror served them.
    identity = {"kind": "archive", "sha256": sha256, "xy": xy}
    provided, manifest = _provide_into(target, store, identity, make, accept)
    # Provenance names the canonical URL, not the mirror: the sha256 fixes the bytes, and
    # switching mirrors must not make the same runtime look like a different one.
    return ProvidedRuntime(
        provided, {"kind": source.kind, "url": origin, "sha256": sha256}, manifest=manifest
    )


def _provide_into(
    target: Path,
    store: Path | None,
    identity: dict[str, Any],
    make: Callable[[Path], str],
    accept: Callable[[str], None],
) -> tuple[str, TreeManifest | None]:
    """`make` the runtime into `target` atomically, or through the store; its version (and manifest)."""
    if store is None:
        with atomic.new_directory(target) as staging:
            return make(staging), None
    from stacks.runtime.store import provide_through_store

    try:
        stored = provide_through_store(store, identity, target, make, accept=accept)
    except OSError as exc:
        raise RuntimeFetchError(
            f"cannot use the runtime store {store}: {exc.strerror or exc}",
            hint="fix its permissions or free space, point STACKS_RUNTIME_STORE (or "
            "--runtime-store) elsewhere, or turn it off with STACKS_RUNTIME_STORE=off",
        ) from None
    return stored.python_version, stored.manifest


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
    wanted = parse_version(version)
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


def _provide_local(
    version: str, target: Path, *, any_patch: bool = False, store: Path | None = None
) -> ProvidedRuntime:
    wanted = version
    try:
        python = find_local_interpreter(version)
    except RuntimeFetchError as missing:
        xy = ".".join(version.split(".")[:2])
        if xy == version:
            raise
        if not any_patch:
            missing.hint = (missing.hint or "") + (
                f"; or let the newest installed {xy}.* stand in with --runtime-any-patch "
                "(STACKS_RUNTIME_ANY_PATCH=1)"
            )
            raise
        python, wanted = find_local_interpreter(xy), xy
    info = query_interpreter(python)
    if not version_matches(info.version, wanted):
        raise RuntimeFetchError(
            f"{python} is CPython {info.version}, not {wanted}",
            hint=LOCAL_HINT.format(v=wanted),
        )

    def make(staging: Path) -> str:
        copy_installation(info, staging, skip=lambda rel: dropped_from_runtime(rel, info.xy))
        shape_runtime(staging, info.xy, str(python))
        provided = check_runtime(staging, wanted, str(python))
        precompile_stdlib(staging, info.xy)
        staging.chmod(0o755)
        return provided

    provided, manifest = _provide_into(
        target, store, _local_identity(info), make, accept=lambda provided: None
    )
    source = {"kind": "local", "origin": str(info.prefix)}
    if provided == version or wanted == version:
        return ProvidedRuntime(provided, source, manifest=manifest)
    return ProvidedRuntime(
        provided, {**source, "requested": version}, requested=version, manifest=manifest
    )


def _local_identity(info: InterpreterInfo) -> dict[str, Any]:
    """What decides a local runtime's bytes: the installation, and its files' stat data
    (a reinstall of the same version at the same place is another runtime)."""
    files = [info.executable, info.stdlib / "os.py"]
    if info.shared:
        files.append(info.libdir / info.instsoname)
    stats = {}
    for path in files:
        with contextlib.suppress(OSError):
            found = os.stat(path)
            stats[str(path)] = [found.st_size, found.st_mtime_ns, found.st_ino]
    return {"kind": "local", "prefix": str(info.prefix), "version": info.version, "files": stats}


def _local_candidates(xy: str) -> Iterator[tuple[tuple[int, ...], Path]]:
    """(version, interpreter) pairs: pyenv first, then uv-managed, then PATH."""
    pattern = re.compile(rf"{re.escape(xy)}\.(\d+)")
    root = _pyenv_root()
    versions = root / "versions" if root else None
    if versions and versions.is_dir():
        for entry in sorted(versions.iterdir()):
            python = entry / "bin" / f"python{xy}"
            if pattern.fullmatch(entry.name) and python.is_file():
                yield parse_version(entry.name), python
    for found_version, python in _uv_managed_pythons():
        if pattern.fullmatch(found_version):
            yield parse_version(found_version), python
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
                yield parse_version(info.version), python


def _pyenv_root() -> Path | None:
    if os.environ.get("PYENV_ROOT"):
        return Path(os.environ["PYENV_ROOT"])
    pyenv = shutil.which("pyenv")
    if pyenv:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = run_child([pyenv, "root"], text=True, timeout=10)
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
        out = run_child(command, text=True, timeout=30, env=env)
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


def _pbs_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pbs-installer")
    except PackageNotFoundError:
        return "?"
