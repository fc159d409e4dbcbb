# About 500 lines: parsing, post-processing and wheel checks share the pylock's one data model.
"""PEP 751 pylock files of one layer: parse uv's export, post-process it, check wheels, write it.

Post-processing turns uv's cross-platform export into the layer's lock: packages that
apply to none of the layer's platforms are dropped, markers true on all of them are
removed, packages provided by lower layers are marked *shared* (an unmatchable marker, so
installers skip them), source builds are removed and local wheel paths become relative.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from stacks.platforms import target_platform, wheel_platform_tags, wheel_supports

SHARED_MARKER = "sys_platform == 'from_lower_layer'"
_SOURCE_KEYS = ("sdist", "archive", "directory", "vcs")
_UNDECIDABLE = re.compile(r"\bplatform_(release|version)\b")


@dataclass(frozen=True)
class Wheel:
    """One wheel of a locked package: where it is and its hashes."""

    name: str  # file name
    url: str | None = None
    path: str | None = None  # POSIX, relative to the pylock's folder once localised
    size: int | None = None
    hashes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Package:
    """One `[[packages]]` entry."""

    name: str
    version: str
    marker: str | None = None
    index: str | None = None
    wheels: tuple[Wheel, ...] = ()
    shared_from: str | None = None  # env name of the lower layer providing it
    extra: Mapping[str, Any] = field(default_factory=dict)  # other keys, kept as they are

    @property
    def shared(self) -> bool:
        """Whether installers skip this entry because a lower layer provides it."""
        return self.shared_from is not None or SHARED_MARKER in (self.marker or "")

    @property
    def own_marker(self) -> str | None:
        """The marker without the shared-package sentinel."""
        marker = self.marker
        if marker == SHARED_MARKER:
            return None
        suffix = f") and {SHARED_MARKER}"
        if marker is not None and marker.startswith("(") and marker.endswith(suffix):
            return marker[1 : -len(suffix)]
        return marker

    def requirement(self) -> str:
        """`name==version ; marker` (the marker without the shared sentinel)."""
        marker = self.own_marker
        return f"{self.name}=={self.version}" + (f" ; {marker}" if marker else "")


@dataclass(frozen=True)
class Pylock:
    """A whole pylock: top-level fields and packages."""

    packages: tuple[Package, ...]
    requires_python: str | None = None
    environments: tuple[str, ...] = ()
    created_by: str = "uv"


@dataclass(frozen=True)
class LowerPin:
    """A package a lower layer installs itself (a constraint for the layers above)."""

    env: str
    name: str
    version: str
    marker: str | None

    def constraint(self) -> str:
        """The PEP 508 constraint pinning this package."""
        return f"{self.name}=={self.version}" + (f" ; {self.marker}" if self.marker else "")


@dataclass(frozen=True)
class MissingWheels:
    """A package without a usable wheel for some target platforms."""

    package: Package
    platforms: tuple[str, ...]


# ---------------------------------------------------------------- parsing


def parse_pylock(text: str) -> Pylock:
    """Parse pylock TOML text (uv's export or a file written by `render_pylock`)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    data = tomllib.loads(text)
    packages = tuple(_parse_package(entry) for entry in data.get("packages", []))
    return Pylock(
        packages=packages,
        requires_python=data.get("requires-python"),
        environments=tuple(data.get("environments", ())),
        created_by=str(data.get("created-by", "uv")),
    )


def _parse_package(entry: Mapping[str, Any]) -> Package:
    known = {"name", "version", "marker", "index", "wheels", "tool"}
    tool = entry.get("tool", {})
    shared_from = tool.get("stacks", {}).get("shared-from") if isinstance(tool, dict) else None
    return Package(
        name=str(entry["name"]),
        version=str(entry.get("version", "")),
        marker=entry.get("marker"),
        index=entry.get("index"),
        wheels=tuple(_parse_wheel(w) for w in entry.get("wheels", ())),
        shared_from=shared_from,
        extra={k: v for k, v in entry.items() if k not in known},
    )


def _parse_wheel(entry: Mapping[str, Any]) -> Wheel:
    url, path = entry.get("url"), entry.get("path")
    name = entry.get("name") or unquote((url or path or "").rstrip("/").rsplit("/", 1)[-1])
    return Wheel(
        name=name, url=url, path=path, size=entry.get("size"), hashes=dict(entry.get("hashes", {}))
    )


def lower_pins(pylock: Pylock, env: str) -> list[LowerPin]:
    """The packages a lower layer's pylock installs itself (not those it shares)."""
    return [LowerPin(env, p.name, p.version, p.marker) for p in pylock.packages if not p.shared]


def constraints(pins: Sequence[LowerPin]) -> list[str]:
    """Constraint lines from lower pins in priority order (runtime first).

    The first unconditional pin of a name shadows every later pin of that name;
    conditional pins before it are all kept (once per marker).
    """
    unconditional: set[str] = set()
    seen: set[tuple[str, str | None]] = set()
    chosen: list[LowerPin] = []
    for pin in pins:
        key = _normalise(pin.name)
        if key in unconditional or (key, pin.marker) in seen:
            continue
        seen.add((key, pin.marker))
        if pin.marker is None:
            unconditional.add(key)
        chosen.append(pin)
    chosen.sort(key=lambda pin: _normalise(pin.name))
    return [pin.constraint() for pin in chosen]


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# ---------------------------------------------------------------- markers


class PlatformScope:
    """Evaluates markers against the synthetic environments of a layer's target platforms."""

    def __init__(self, platforms: Sequence[str], python_version: str) -> None:
        self.platforms = tuple(platforms)
        parts = python_version.split(".")
        xy = ".".join(parts[:2])
        # Without a patch release, a marker on python_full_version may depend on it.
        self.full_versions = (python_version,) if len(parts) >= 3 else (f"{xy}.0", f"{xy}.99")
        self.python_xy = xy
        self._cache: dict[str | None, tuple[frozenset[str], bool]] = {}

    def applies(self, marker: str | None) -> tuple[frozenset[str], bool]:
        """The platforms where `marker` may be true, and whether that is exact everywhere."""
        if marker not in self._cache:
            self._cache[marker] = self._evaluate(marker)
        return self._cache[marker]

    def _evaluate(self, marker: str | None) -> tuple[frozenset[str], bool]:
        if marker is None:
            return frozenset(self.platforms), True
        if _UNDECIDABLE.search(marker):
            return frozenset(self.platforms), False
        from packaging.markers import Marker

        parsed = Marker(marker)
        found: set[str] = set()
        exact = True
        for name in self.platforms:
            platform = target_platform(name)
            results = set()
            for full in self.full_versions:
                environment = platform.marker_environment(full)
                environment["python_version"] = self.python_xy
                results.add(parsed.evaluate(environment))
            if True in results:
                found.add(name)
            exact = exact and len(results) == 1
        return frozenset(found), exact

    def marker_for(self, names: Iterable[str]) -> str:
        """A marker true exactly on these platforms of the layer."""
        wanted = set(names)
        return " or ".join(
            f"({target_platform(n).marker()})" for n in self.platforms if n in wanted
        )


def _and(left: str | None, right: str) -> str:
    return f"({left}) and {right}" if left else right


def _and_platforms(marker: str | None, scope: PlatformScope, names: Iterable[str]) -> str:
    platforms = scope.marker_for(names)
    return _and(marker, f"({platforms})") if marker else platforms


# ---------------------------------------------------------------- post-processing


def layer_pylock(
    exported: Pylock,
    *,
    scope: PlatformScope,
    lower: Sequence[LowerPin],
    source_dir: Path,
    pylock_dir: Path,
) -> Pylock:
    """Turn uv's export into the layer's pylock (see the module docstring)."""
    packages: list[Package] = []
    for package in exported.packages:
        applies, exact = scope.applies(package.marker)
        if not applies:
            continue
        marker = None if exact and applies == set(scope.platforms) else package.marker
        package = replace(
            package,
            marker=marker,
            extra={k: v for k, v in package.extra.items() if k not in _SOURCE_KEYS},
        )
        packages.extend(_split_shared(package, applies, scope, lower, source_dir, pylock_dir))
    packages.sort(key=_sort_key)
    return replace(exported, packages=tuple(packages))


def _split_shared(
    package: Package,
    applies: frozenset[str],
    scope: PlatformScope,
    lower: Sequence[LowerPin],
    source_dir: Path,
    pylock_dir: Path,
) -> list[Package]:
    """The package as the layer's own, shared, or both (each restricted to its platforms)."""
    providers: dict[str, str] = {}
    for platform in applies:
        pin = _provider(package.name, platform, scope, lower)
        if pin is not None and pin.version == package.version:
            providers[platform] = pin.env
    own_platforms = applies - set(providers)
    result: list[Package] = []
    if own_platforms:
        marker = package.marker
        if providers:
            marker = _and_platforms(marker, scope, own_platforms)
        result.append(
            replace(
                package,
                marker=marker,
                index=_remote_index(package.index),
                wheels=tuple(_localise(w, source_dir, pylock_dir) for w in package.wheels),
            )
        )
    if providers:
        marker = package.marker
        if own_platforms:
            marker = _and_platforms(marker, scope, providers)
        first = next(pin.env for pin in lower if pin.env in providers.values())
        result.append(
            Package(
                name=package.name,
                version=package.version,
                marker=_and(marker, SHARED_MARKER),
                shared_from=first,
            )
        )
    return result


def _provider(
    name: str, platform: str, scope: PlatformScope, lower: Sequence[LowerPin]
) -> LowerPin | None:
    """The lower pin that provides `name` on `platform` (first in priority order)."""
    key = _normalise(name)
    for pin in lower:
        if _normalise(pin.name) == key and platform in scope.applies(pin.marker)[0]:
            return pin
    return None


def _remote_index(index: str | None) -> str | None:
    """The index URL, unless it is a local folder (no absolute paths in a lock)."""
    return None if index is None or index.startswith("file:") else index


def _localise(wheel: Wheel, source_dir: Path, pylock_dir: Path) -> Wheel:
    """A local wheel's location as a POSIX path relative to the pylock's folder."""
    if wheel.url is not None and wheel.url.startswith("file:"):
        from urllib.request import url2pathname  # pulls in http.client: only when needed

        location = url2pathname(urlparse(wheel.url).path)
    elif wheel.path is not None:
        location = wheel.path
    else:
        return wheel
    absolute = os.path.normpath(os.path.join(source_dir, location))
    try:
        relative = os.path.relpath(absolute, pylock_dir)
    except ValueError:  # another drive on Windows: nothing relative exists
        relative = absolute
    return replace(wheel, url=None, path=Path(relative).as_posix())


def _sort_key(package: Package) -> tuple[str, Any, str, bool]:
    from packaging.version import InvalidVersion, Version

    try:
        version: Any = (0, Version(package.version))
    except InvalidVersion:
        version = (1, package.version)
    return (_normalise(package.name), version, package.marker or "", package.shared)


# ---------------------------------------------------------------- wheel coverage


def missing_wheels(
    pylock: Pylock,
    scope: PlatformScope,
    *,
    linux_target: tuple[int, int],
    macosx_target: tuple[int, int],
) -> list[MissingWheels]:
    """Every non-shared package lacking a usable wheel on a platform where it applies."""
    found: list[MissingWheels] = []
    for package in pylock.packages:
        if package.shared:
            continue
        applies, _ = scope.applies(package.marker)
        missing = tuple(
            name
            for name in scope.platforms
            if name in applies
            and not any(
                wheel_supports(
                    w.name,
                    target_platform(name),
                    linux_target,
                    macosx_target,
                    python=scope.python_xy,
                )
                for w in package.wheels
            )
        )
        if missing:
            found.append(MissingWheels(package, missing))
    return found


def describe_missing(
    env: str, missing: Sequence[MissingWheels], platforms: Sequence[str]
) -> tuple[str, str]:
    """The message and hint of a wheel-coverage failure."""
    lines = [f"cannot lock layer '{env}': some packages have no wheel for every target platform"]
    for item in missing:
        tags = sorted({t for w in item.package.wheels for t in wheel_platform_tags(w.name)})
        available = ", ".join(tags) if tags else "no wheels at all"
        lines.append(
            f"  {item.package.name} {item.package.version}: no wheel for "
            f"{', '.join(item.platforms)} (wheel platforms: {available})"
        )
    failing = {name for item in missing for name in item.platforms}
    hint = platforms_hint(env, [name for name in platforms if name not in failing])
    glibc = _glibc_needed(missing)
    if glibc is not None:
        hint += f"; or raise linux_target to 'glibc@{glibc[0]}.{glibc[1]}'"
    return "\n".join(lines), hint


def platforms_hint(env: str, working: Sequence[str]) -> str:
    """The hint for platforms without wheels: the `platforms` value that would work, if any."""
    if working:
        shown = ", ".join(f'"{name}"' for name in working)
        return f"set platforms = [{shown}] for layer '{env}', or provide the missing wheels"
    return "no target platform has wheels for every package: provide the missing wheels"


def _glibc_needed(missing: Sequence[MissingWheels]) -> tuple[int, int] | None:
    """The linux_target that would fix every Linux gap, if a newer glibc alone would."""
    from stacks.platforms import tag_supports

    needed: tuple[int, int] | None = None
    for item in missing:
        for name in item.platforms:
            target = target_platform(name)
            if target.os_family != "linux":
                return None
            versions = [
                v
                for w in item.package.wheels
                for t in wheel_platform_tags(w.name)
                for v in [_manylinux_version(t)]
                if v is not None and tag_supports(t, target, v)
            ]
            if not versions:
                return None
            best = min(versions)
            needed = best if needed is None else max(needed, best)
    return needed


def _manylinux_version(tag: str) -> tuple[int, int] | None:
    legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
    for prefix, version in legacy.items():
        if tag.startswith(prefix + "_"):
            return version
    match = re.match(r"^manylinux_(\d+)_(\d+)_", tag)
    return (int(match.group(1)), int(match.group(2))) if match else None


# ---------------------------------------------------------------- writing


def render_pylock(pylock: Pylock, env: str) -> bytes:
    """The pylock file's bytes: deterministic, a short header, LF line endings."""
    from stacks.tomlwriter import dumps

    document: dict[str, Any] = {
        "lock-version": "1.0",
        "created-by": pylock.created_by,
        "environments": list(pylock.environments) or None,
        "requires-python": pylock.requires_python,
        "packages": [_package_table(p) for p in pylock.packages],
    }
    header = f"# Locked requirements for {env} (DO NOT EDIT; run `stacks lock`)\n"
    return (header + dumps(document, inline_arrays={"wheels"})).encode("utf-8")


def _package_table(package: Package) -> dict[str, Any]:
    table: dict[str, Any] = {
        "name": package.name,
        "version": package.version,
        "marker": package.marker,
        "index": package.index,
    }
    for key in sorted(package.extra):
        table[key] = package.extra[key]
    if package.wheels:
        table["wheels"] = [_wheel_table(w) for w in package.wheels]
    if package.shared_from is not None:
        table["tool"] = {"stacks": {"shared-from": package.shared_from}}
    return table


def _wheel_table(wheel: Wheel) -> dict[str, Any]:
    return {
        "name": wheel.name,
        "url": wheel.url,
        "path": wheel.path,
        "size": wheel.size,
        "hashes": dict(sorted(wheel.hashes.items())) or None,
    }


def render_summary(pylock: Pylock, env: str, lock_file: str) -> str:
    """The human-readable `packages-<env>.txt`: own packages, then shared ones."""
    own = [p.requirement() for p in pylock.packages if not p.shared]
    shared = [
        f"{p.requirement()}  # from {p.shared_from or 'a lower layer'}"
        for p in pylock.packages
        if p.shared
    ]
    lines = [f"# Packages installed in {env} (from {lock_file}; DO NOT EDIT)", *own]
    if shared:
        lines += ["", "# Shared packages provided by lower layers", *shared]
    return "\n".join(lines) + "\n"
