"""Install a layer's locked packages with uv, verify them, and drop machine-specific files."""

from __future__ import annotations

import csv
import functools
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stacks import atomic
from stacks.build.request import BuildRequest
from stacks.errors import BuildError

if TYPE_CHECKING:
    import subprocess


def pylock_packages(pylock: Path) -> list[dict[str, Any]]:
    """The `packages` entries of a pylock.toml (a BuildError if it is missing or unreadable).

    Parsed once per process while the file is unchanged: a build reads its own lock and
    every lock below it (a big framework's takes milliseconds to parse).
    """
    try:
        info = os.stat(pylock)
    except FileNotFoundError:
        raise BuildError(f"no lock file at {pylock}", hint="run `stacks lock SPEC`") from None
    except OSError as exc:
        raise BuildError(
            f"cannot read lock file {pylock}: {exc}", hint="run `stacks lock SPEC` to regenerate it"
        ) from None
    identity = (info.st_ino, info.st_size, info.st_mtime_ns)
    memo = _PYLOCKS.get(pylock)
    if memo is None or memo[0] != identity:
        memo = (identity, _parse_pylock(pylock))
        _PYLOCKS[pylock] = memo
    return list(memo[1])


_PYLOCKS: dict[Path, tuple[tuple[int, int, int], list[dict[str, Any]]]] = {}


def _parse_pylock(pylock: Path) -> list[dict[str, Any]]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(pylock.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BuildError(f"no lock file at {pylock}", hint="run `stacks lock SPEC`") from None
    except (OSError, ValueError) as exc:
        raise BuildError(
            f"cannot read lock file {pylock}: {exc}", hint="run `stacks lock SPEC` to regenerate it"
        ) from None
    return list(data.get("packages", []))


def pylock_has_packages(pylock: Path) -> bool:
    """Whether a lock lists any package (an empty runtime lock installs nothing)."""
    return bool(pylock_packages(pylock))


@functools.cache
def uv_version() -> str | None:
    """The version of the uv that installs packages (the `uv` package's, which ships the binary)."""
    import uv

    # The dist-info folder beside the package names the version: importing
    # importlib.metadata (and the email package it loads) cost a build ~20 ms.
    site = os.path.dirname(os.path.dirname(os.path.abspath(uv.__file__)))
    try:
        found = [
            name[3 : -len(".dist-info")]
            for name in os.listdir(site)
            if name.startswith("uv-") and name.endswith(".dist-info")
        ]
    except OSError:
        found = []
    if len(found) == 1:
        return found[0]
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("uv")
    except PackageNotFoundError:
        return None


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A clean environment for build subprocesses (no user site, no stray virtualenv)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    }
    env.update({"PYTHONNOUSERSITE": "1", "PYTHONSAFEPATH": "1", "PYTHONUTF8": "1"})
    env.update(extra or {})
    return env


def uv_install(request: BuildRequest, environment: Path, python: Path) -> None:
    """Install the layer's locked packages into `environment` with uv (hard links from its cache).

    `python` is the environment's own interpreter, used when the request names no installer.
    What was installed is checked against its wheels afterwards (`stacks.build.survey`).
    """
    from stacks.streaming import run_captured

    command, env = uv_install_command(request, environment, python)
    result = run_captured(command, label=f"uv pip install: {request.layer.env_name}", env=env)
    check_uv_install(request, result)


def uv_install_command(
    request: BuildRequest, environment: Path, python: Path
) -> tuple[list[str], dict[str, str]]:
    """The uv command that installs a layer's locked packages, and its environment variables."""
    from uv import find_uv_bin

    from stacks.platforms import target_platform

    layer = request.layer
    platform = target_platform(request.platform)
    installer = request.installer_python
    # With the runtime's own interpreter and `--prefix`, uv lays the files out exactly as in
    # the environment (the same scheme below the prefix) but answers its interpreter query
    # from its cache: the environment's launcher is a new file in every build, so querying
    # it would start an interpreter each time (~50 ms).
    target = (
        ["--python", os.fspath(installer), "--prefix", os.fspath(environment)]
        if installer is not None
        else ["--python", os.fspath(python)]
    )
    command = [
        find_uv_bin(),
        "pip",
        "install",
        *target,
        "--no-config",
        "--no-managed-python",
        "--no-python-downloads",
        "--no-color",
        "--quiet",
        "--link-mode",
        os.environ.get("STACKS_LINK_MODE", "hardlink"),
        "--python-platform",
        platform.uv_python_platform(layer.linux_target, layer.macosx_target),
        "--break-system-packages",
        "--preview-features",
        "pylock",
        "-r",
        os.fspath(request.pylock),
    ]
    macos = f"{layer.macosx_target[0]}.{layer.macosx_target[1]}"
    return command, subprocess_env({"MACOSX_DEPLOYMENT_TARGET": macos})


def check_uv_install(request: BuildRequest, result: subprocess.CompletedProcess[str]) -> None:
    """A BuildError saying why uv's install failed, if it did."""
    if result.returncode == 0:
        return
    name = request.layer.env_name
    detail = (result.stderr or result.stdout).strip()
    _raise_if_unwritable(detail, f"layer '{name}': installing its locked packages failed")
    raise BuildError(
        f"layer '{name}': installing its locked packages failed:\n{indent(detail)}",
        hint=f"if the lock is stale, run `stacks lock SPEC --reset-lock {name}`",
    )


def forget_damaged_packages(request: BuildRequest, names: Sequence[str]) -> None:
    """Remove packages from uv's cache, so that their next install fetches them again.

    uv hard-links installed files from its cache: a file edited in place in a build or
    export folder is edited in the cache too, and would be linked into every later build.
    """
    _run_uv(
        request, ["cache", "clean", *sorted(names)], "cleaning damaged packages from uv's cache"
    )


def _run_uv(request: BuildRequest, arguments: list[str], what: str) -> None:
    from uv import find_uv_bin

    from stacks.children import run_child

    result = run_child([find_uv_bin(), *arguments], text=True, env=subprocess_env())
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        _raise_if_unwritable(detail, f"layer '{request.layer.env_name}': {what} failed")
        raise BuildError(f"layer '{request.layer.env_name}': {what} failed:\n{indent(detail)}")


def _raise_if_unwritable(output: str, doing: str) -> None:
    """Fail with the path and cause when uv could not write a file (not a lock problem)."""
    from stacks.lock.uv_project import uv_write_failure

    unwritable = uv_write_failure(output, doing=doing, environ=subprocess_env())
    if unwritable is not None:
        raise unwritable


def indent(text: str, prefix: str = "    ") -> str:
    """The last 40 lines of `text`, each indented by `prefix`."""
    lines = text.splitlines()[-40:]
    return "\n".join(prefix + line for line in lines)


def remove_scripts(stage: Path, request: BuildRequest) -> None:
    """Drop entry-point scripts (absolute shebangs) and machine-specific install records."""
    bin_dir = stage / "bin"
    scripts: set[str] = set()
    from stacks.deploy.postinstall import BASE_LINK

    keep = {"python", "python3", f"python{request.python_xy}", BASE_LINK}
    if bin_dir.is_dir():
        for entry in bin_dir.iterdir():
            if entry.name not in keep:
                atomic.remove_tree(entry)
                scripts.add(entry.name)
    site = os.fspath(stage / request.site_dir)
    try:
        folders = [name for name in os.listdir(site) if name.endswith(".dist-info")]
    except OSError:
        return
    for name in folders:
        dist_info = Path(site, name)
        direct_url = dist_info / "direct_url.json"
        try:
            url = direct_url.read_text(encoding="utf-8", errors="replace")
        except OSError:  # none (the usual case), or a folder
            url = ""
        url_removed = "file:" in url
        if url_removed:
            direct_url.unlink()
        _rewrite_record(dist_info, scripts, url_removed)


def _rewrite_record(dist_info: Path, scripts: set[str], url_removed: bool) -> None:
    """Remove RECORD rows of files we deleted (bin scripts, a local direct_url.json)."""
    record = dist_info / "RECORD"
    try:
        text = record.read_text(encoding="utf-8")
    except OSError:
        return
    # Most RECORDs list no script (uv's rows for them are `../../../bin/NAME`): no parse.
    if not (url_removed or (scripts and "/bin/" in text)):
        return
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    url_row = f"{dist_info.name}/direct_url.json"
    kept = [
        row
        for row in rows
        if not (
            ("/bin/" in row[0] and row[0].rsplit("/", 1)[-1] in scripts)
            or (url_removed and row[0].endswith(url_row))
        )
    ]
    if len(kept) != len(rows):
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(kept)
        # Replace (new inode): RECORD may be a hard link into uv's cache.
        atomic.write_text(record, out.getvalue(), durable=False)
