"""The uv project that locks one layer: its generated files and the uv commands run on it.

uv reads `[tool.uv]` *settings* (no-build, exclude-newer, find-links …) from a
pyproject.toml only when config discovery is on, and stacks always runs uv with
`--no-config` so user-level uv config cannot change a lock. So the project is split:
`pyproject.toml` holds the project and its project-only tables (environments,
constraints, sources); `uv.toml` holds the settings and is passed explicitly with
`--config-file`. Indexes go in both: uv searches the ones in `uv.toml`, while
`sources` can only name those in `pyproject.toml`.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from stacks import atomic
from stacks.children import run_child
from stacks.errors import DiskError, LockError
from stacks.platforms import platforms_marker
from stacks.spec import LayerSpec, StackSpec, normalise_package

# [tool.uv] keys uv accepts only in a pyproject.toml (or that belong to the project).
_PROJECT_KEYS = (
    "constraint-dependencies",
    "override-dependencies",
    "build-constraint-dependencies",
    "exclude-dependencies",
    "required-environments",
    "conflicts",
)
# [tool.uv] keys stacks sets itself, or that make no sense for a generated project.
_IGNORED_KEYS = frozenset(
    {
        "environments",
        "no-build",
        "index",
        "sources",
        "find-links",
        "no-index",
        "managed",
        "package",
        "workspace",
        "dev-dependencies",
        "default-groups",
        "cache-keys",
        "exclude-newer",
    }
)
# UV_* variables that do not change what a lock contains (credentials, network, cache).
_KEPT_UV_VARIABLES = re.compile(
    r"^UV_(CACHE_DIR|NO_CACHE|NATIVE_TLS|SYSTEM_CERTS|OFFLINE|HTTP_TIMEOUT|HTTP_RETRIES"
    r"|REQUEST_TIMEOUT|CONCURRENT_\w+|KEYRING_PROVIDER|INSECURE_HOST|INDEX_\w+_(USERNAME|PASSWORD)"
    r"|LINK_MODE)$"
)
_STANDARD_FLAGS = ("--no-config", "--no-managed-python", "--no-python-downloads", "--quiet")
_STDERR_LINES = 40
# Export the pylock.toml of the project's uv.lock (locking first unless --frozen is added).
_EXPORT = ("export", "--format", "pylock.toml", "--no-header", "--no-emit-project", "--no-annotate")
# uv's words for "no wheel for some environment" (one version, or all versions of a package).
_MISSING_WHEELS = re.compile(
    r"ha(?:s|ve) no (?:`[^`]*`-compatible wheels|wheels with a matching "
    r"(?:platform|Python ABI|Python implementation) tag)"
)
# uv's words for an index it could not read (not a resolution failure).
_NETWORK_FAILURE = re.compile(
    r"^error: (Failed to fetch|Request failed|Failed to download)\b|error sending request|"
    r"HTTP status (server|client) error|error decoding response body|operation timed out",
    re.MULTILINE,
)
# uv's words for a file it could not write: `... (os error 30) at path "/x"` or
# ``failed to write to file `/x`: No space left on device (os error 28)``.
_OS_ERROR = re.compile(r"\(os error (?P<code>\d+)\)")
_OS_ERROR_PATH = re.compile(r'at path "(?P<quoted>[^"]+)"|`(?P<ticked>[^`]+)`')
# errno values that mean "cannot write here": EPERM, EACCES, ENOSPC, EROFS, EDQUOT.
_WRITE_ERRORS = {1: "denied", 13: "denied", 28: "full", 30: "denied", 122: "full"}


class MissingWheelsError(LockError):
    """uv found no wheels of some packages for some target platforms.

    `universal` is the pylock uv exports when the same project is locked without the
    layer's `environments` (so uv does not need every wheel), for naming each package and
    platform; None if that did not resolve either.
    """

    def __init__(self, message: str, *, hint: str, universal: str | None) -> None:
        super().__init__(message, hint=hint)
        self.universal = universal


class NoSolutionError(LockError):
    """uv found no set of versions that meets the layer's requirements and constraints."""


@dataclass(frozen=True)
class UvProject:
    """The generated files of a layer's uv project, and extra command-line options."""

    pyproject: Mapping[str, Any]
    config: Mapping[str, Any]
    options: tuple[str, ...] = ()
    lower_pins: tuple[str, ...] = ()  # the constraints that come from lower layers
    platforms: tuple[str, ...] = ()  # the layer's target platforms, one `environments` marker each

    def with_constraints(self, extra: Sequence[str]) -> UvProject:
        """The same project with more constraint dependencies."""
        uv = dict(self.pyproject["tool"]["uv"])
        uv["constraint-dependencies"] = [*uv.get("constraint-dependencies", ()), *extra]
        return replace(self, pyproject={**self.pyproject, "tool": {"uv": uv}})


def project_name(env_name: str) -> str:
    """A valid project name for a layer's env name."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", env_name).strip("._-")
    return name or "layer"


def uv_project(
    spec: StackSpec,
    layer: LayerSpec,
    *,
    constraints: Sequence[str],
    exclude_newer: str | None,
    index_url: str | None,
    no_index: bool,
    local_wheels: Sequence[Path],
) -> UvProject:
    """The uv project that resolves `layer` for its platforms against lower-layer pins."""
    settings = spec.uv_config
    uv: dict[str, Any] = {
        "environments": platforms_marker(layer.platforms),
        "constraint-dependencies": [*constraints],
    }
    for key in _PROJECT_KEYS:
        if key in settings:
            value = settings[key]
            uv[key] = [*uv.get(key, ()), *(value if isinstance(value, list) else [value])]
    indexes = layer_indexes(spec, layer)
    if indexes:
        uv["index"] = indexes  # here only so that `sources` can name them
    sources = layer_sources(spec, layer)
    if sources:
        uv["sources"] = sources
    pyproject = {
        "project": {
            "name": project_name(layer.env_name),
            "version": "0",
            "requires-python": f"=={layer.python_xy}.*",
            "dependencies": list(layer.requirements),
        },
        "tool": {"uv": uv},
    }
    config: dict[str, Any] = {"no-build": True}
    if indexes:
        config["index"] = indexes  # the index list itself is a setting
    if exclude_newer is not None:
        config["exclude-newer"] = exclude_newer
    find_links = [_local_location(spec, str(p)) for p in settings.get("find-links", ())]
    find_links += [os.path.abspath(p) for p in local_wheels]
    if find_links:
        config["find-links"] = find_links
    if no_index or settings.get("no-index"):
        config["no-index"] = True
    for key, value in settings.items():
        if key not in _IGNORED_KEYS and key not in _PROJECT_KEYS:
            config[key] = value
    options = ("--default-index", index_url) if index_url else ()
    return UvProject(pyproject, config, options, tuple(constraints), tuple(layer.platforms))


def layer_indexes(spec: StackSpec, layer: LayerSpec) -> list[dict[str, Any]]:
    """`[[tool.uv.index]]` for a layer: its priority indexes first (not explicit), then the rest."""
    indexes = [dict(entry) for entry in spec.uv_config.get("index", ())]
    for entry in indexes:
        if isinstance(entry.get("url"), str):
            entry["url"] = _local_location(spec, entry["url"], as_url=True)
    by_name = {entry.get("name"): entry for entry in indexes}
    front = [{**by_name[name], "explicit": False} for name in layer.priority_indexes]
    rest = [entry for entry in indexes if entry.get("name") not in layer.priority_indexes]
    return front + rest


def layer_sources(spec: StackSpec, layer: LayerSpec) -> dict[str, dict[str, str]]:
    """`[tool.uv.sources]` for a layer: the common sources plus its (inherited) package_indexes."""
    sources = {
        normalise_package(name): dict(source)
        for name, source in spec.uv_config.get("sources", {}).items()
    }
    for name, index in layer.package_indexes:
        sources[normalise_package(name)] = {"index": index}
    return dict(sorted(sources.items()))


def _local_location(spec: StackSpec, location: str, *, as_url: bool = False) -> str:
    """A find-links or index location with a relative path made absolute (spec-relative)."""
    if "://" in location or location.startswith("file:"):
        return location
    path = Path(os.path.expanduser(location))
    if not path.is_absolute():
        path = spec.spec_dir / path
    path = Path(os.path.normpath(path))
    return path.as_uri() if as_url else os.fspath(path)


def write_project(project: UvProject, work_dir: Path) -> None:
    """Write the project's pyproject.toml and uv.toml into `work_dir` (only if changed)."""
    from stacks.tomlwriter import dumps

    note = "# Generated by stacks to lock one layer; regenerated on every lock.\n"
    atomic.write_if_changed(
        work_dir / "pyproject.toml", (note + dumps(project.pyproject)).encode("utf-8")
    )
    atomic.write_if_changed(work_dir / "uv.toml", (note + dumps(project.config)).encode("utf-8"))


def resolve(
    project: UvProject,
    *,
    work_dir: Path,
    python: Path,
    env_name: str,
    reset: bool,
    seed: Sequence[str] = (),
) -> str:
    """Lock the project with uv and export it (one `uv export`); return the pylock text.

    The previous `uv.lock` in `work_dir` is kept, so unchanged requirements keep their
    pins; `reset` discards it and re-resolves everything. Without a `uv.lock` (a fresh
    cache), `seed` (the layer's previous pins) is tried as extra constraints first, so
    relocking a committed lock elsewhere does not silently upgrade it.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    lockfile = work_dir / "uv.lock"
    if reset:
        lockfile.unlink(missing_ok=True)
    elif seed and not lockfile.exists():
        write_project(project.with_constraints(seed), work_dir)
        if _run(["lock"], project, work_dir, python).returncode != 0:
            lockfile.unlink(missing_ok=True)
    write_project(project, work_dir)
    # One uv process locks and exports: `uv export` without --frozen updates uv.lock first,
    # exactly as `uv lock` does (same resolver, same files), saving a second uv start per layer.
    upgrade = ["--upgrade"] if reset else []
    exported = _run([*_EXPORT, *upgrade], project, work_dir, python, doing="lock")
    if exported.returncode != 0:
        unwritable = uv_write_failure(exported.stderr, doing=f"cannot lock layer '{env_name}'")
        if unwritable is not None:
            raise unwritable
        raise _resolution_error(project, work_dir, python, env_name, exported.stderr)
    return exported.stdout


def _resolution_error(
    project: UvProject, work_dir: Path, python: Path, env_name: str, stderr: str
) -> LockError:
    """The LockError for uv's failure to lock: missing wheels, an unreadable index or no solution."""
    if _MISSING_WHEELS.search(stderr):
        return _missing_wheels_error(project, work_dir, python, env_name, stderr)
    if _NETWORK_FAILURE.search(stderr):
        return LockError(
            f"cannot lock layer '{env_name}': the package index could not be read\n{_trim(stderr)}",
            hint="check the index URL (--index-url, package_indexes) and the network, then "
            "run again; UV_HTTP_TIMEOUT and UV_HTTP_RETRIES make uv more patient; the "
            "previous lock files were left as they were",
        )
    return NoSolutionError(
        f"cannot lock layer '{env_name}': uv found no solution\n{_trim(stderr)}",
        hint=_conflict_hint(stderr, project),
    )


def _missing_wheels_error(
    project: UvProject, work_dir: Path, python: Path, env_name: str, stderr: str
) -> MissingWheelsError:
    """uv found no wheels for some platform: lock without `environments` to name them all.

    If that fails too, probe each platform alone and suggest those that resolve.
    """
    from stacks.lock.pylock import platforms_hint

    universal = _universal_export(project, work_dir, python)
    if universal is not None:
        return MissingWheelsError(
            f"cannot lock layer '{env_name}': some packages have no wheels for some target "
            f"platforms\n{_trim(stderr)}",
            hint="set platforms to those with wheels, or provide the missing wheels",
            universal=universal,
        )
    working = [name for name in project.platforms if _resolves_on(project, name, work_dir, python)]
    failing = [name for name in project.platforms if name not in working]
    named = sorted(set(_WITHOUT_WHEELS.findall(stderr)), key=normalise_package)
    packages = f" ({', '.join(named)})" if named else ""
    return MissingWheelsError(
        f"cannot lock layer '{env_name}': some packages{packages} have no wheels for "
        f"{', '.join(failing) or 'every target platform together'}\n{_trim(stderr)}",
        hint=platforms_hint(env_name, working),
        universal=None,
    )


# The package in uv's "<pkg>==<v> has no ..." / "all versions of <pkg> have no ..." phrases.
_WITHOUT_WHEELS = re.compile(
    r"(?:all versions of |\b)([A-Za-z0-9][A-Za-z0-9._-]*)(?:==\S+)? ha(?:s|ve) no "
)


def _universal_export(project: UvProject, work_dir: Path, python: Path) -> str | None:
    """The pylock of the project locked for any platform (no `environments`), or None."""
    probe = work_dir / "probe" / "universal"
    probe.mkdir(parents=True, exist_ok=True)
    uv = {k: v for k, v in project.pyproject["tool"]["uv"].items() if k != "environments"}
    write_project(replace(project, pyproject={**project.pyproject, "tool": {"uv": uv}}), probe)
    exported = _run([*_EXPORT], project, probe, python)
    return exported.stdout if exported.returncode == 0 else None


def _resolves_on(project: UvProject, platform: str, work_dir: Path, python: Path) -> bool:
    """Whether the project resolves for this one platform (in a scratch folder)."""
    probe = work_dir / "probe" / platform
    probe.mkdir(parents=True, exist_ok=True)
    uv = {**project.pyproject["tool"]["uv"], "environments": platforms_marker([platform])}
    write_project(replace(project, pyproject={**project.pyproject, "tool": {"uv": uv}}), probe)
    return _run(["lock"], project, probe, python).returncode == 0


def _run(
    command: list[str], project: UvProject, work_dir: Path, python: Path, *, doing: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run a uv command on the project; `doing` names it in streamed output (default: its name)."""
    args = [
        uv_bin(),
        *command,
        "--project",
        os.fspath(work_dir),
        "--config-file",
        os.fspath(work_dir / "uv.toml"),
        "--python",
        os.fspath(python),
        *_STANDARD_FLAGS,
        "--no-color",
        *project.options,
    ]
    from stacks.streaming import run_captured

    return run_captured(
        args,
        label=f"uv {doing or command[0]}: {work_dir.name}",
        cwd=work_dir,
        env=uv_environment(),
        encoding="utf-8",
        errors="replace",
    )


@functools.cache
def uv_bin() -> str:
    """The uv executable of this installation (looked up once per process)."""
    from uv import find_uv_bin

    return find_uv_bin()


def uv_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment uv runs in: no UV_* setting that could change the lock, no venv."""
    source = os.environ if environ is None else environ
    return {
        key: value
        for key, value in source.items()
        if (not key.startswith("UV_") or _KEPT_UV_VARIABLES.match(key))
        and key not in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH")
    }


def uv_write_failure(
    output: str, *, doing: str, environ: Mapping[str, str] | None = None
) -> DiskError | None:
    """uv's failure as a DiskError if it could not write a file (read-only, no permission, disk full)."""
    for line in output.splitlines():
        error = _OS_ERROR.search(line)
        if error is None or int(error.group("code")) not in _WRITE_ERRORS:
            continue
        code = int(error.group("code"))
        paths = [m.group("quoted") or m.group("ticked") for m in _OS_ERROR_PATH.finditer(line)]
        path = paths[-1] if paths else None
        env = uv_environment(environ)
        cache = uv_cache_dir(env)
        in_cache = cache is not None and path is not None and _is_within(path, cache)
        where = f"to {path}" if path else "a file"
        message = f"{doing}: uv could not write {where}: {os.strerror(code)} (os error {code})"
        if in_cache:
            chosen = "set by UV_CACHE_DIR" if env.get("UV_CACHE_DIR") else "UV_CACHE_DIR moves it"
            message += f"\n  that is uv's cache, {cache} ({chosen})"
        return DiskError(f"{message}\n{_trim(output)}", hint=_write_hint(code, in_cache))
    return None


def _write_hint(code: int, in_cache: bool) -> str:
    full = _WRITE_ERRORS[code] == "full"
    if in_cache and full:
        return (
            "free some space on that disk, or point UV_CACHE_DIR at a folder on a disk with "
            "room, and run again"
        )
    if in_cache:
        return "make uv's cache writable, or point UV_CACHE_DIR at a writable folder, and run again"
    if full:
        return "free some space on that disk and run again"
    return (
        "make that folder writable (or point --cache-dir or UV_CACHE_DIR elsewhere) and run again"
    )


def uv_cache_dir(environ: Mapping[str, str]) -> str | None:
    """The folder uv uses as its cache in this environment (UV_CACHE_DIR, or asked from uv)."""
    if environ.get("UV_CACHE_DIR"):
        return os.path.abspath(environ["UV_CACHE_DIR"])
    try:
        done = run_child(
            [uv_bin(), "cache", "dir", "--no-config"], env=dict(environ), text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    found = done.stdout.strip()
    return os.path.abspath(found) if done.returncode == 0 and found else None


def _is_within(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([os.path.abspath(path), folder]) == folder
    except ValueError:
        return False


def _trim(stderr: str) -> str:
    lines = [line.rstrip()[:300] for line in stderr.strip().splitlines() if line.strip()]
    if len(lines) > _STDERR_LINES:
        lines = [*lines[:_STDERR_LINES], f"... ({len(lines) - _STDERR_LINES} more lines)"]
    return "\n".join(f"  | {line}" for line in lines)


def _conflict_hint(stderr: str, project: UvProject) -> str:
    """Name the lower-layer pins uv's explanation mentions, if any."""
    text = normalise_package(stderr)
    named = [
        pin
        for pin in project.lower_pins
        if re.search(rf"\b{re.escape(normalise_package(_name(pin)))}\b", text)
    ]
    if named:
        return (
            "lower layers pin "
            + ", ".join(named)
            + "; relax this layer's requirements or change the lower layers"
        )
    if (
        "was not found in the package registry" in stderr
        or "not found in the provided package locations" in stderr
    ):
        return (
            "check the package names, and the index or wheel folders (--index-url, --local-wheels)"
        )
    return "relax the conflicting requirements of this layer"


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(@]", requirement, maxsplit=1)[0]
