"""The six target platforms: names, environment markers, uv platform strings, wheel tags."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass

PLATFORMS: tuple[str, ...] = (
    "linux_x86_64",
    "linux_aarch64",
    "macosx_arm64",
    "macosx_x86_64",
    "win_amd64",
    "win_arm64",
)

DEFAULT_GLIBC: tuple[int, int] = (2, 28)
DEFAULT_MACOSX: tuple[int, int] = (13, 0)


@dataclass(frozen=True)
class TargetPlatform:
    """What a target platform looks like to markers, uv and wheel tags."""

    name: str
    os_family: str  # "linux", "macosx" or "win"
    machine: str  # platform_machine as that OS reports it
    sys_platform: str
    platform_system: str
    os_name: str
    wheel_arch: str  # architecture as it appears in wheel platform tags

    def marker(self) -> str:
        """An environment marker true exactly on this platform."""
        return f"sys_platform == '{self.sys_platform}' and platform_machine == '{self.machine}'"

    def marker_environment(self, python_version: str) -> dict[str, str]:
        """A PEP 508 marker environment for CPython `python_version` on this platform."""
        parts = python_version.split(".")
        short = ".".join(parts[:2])
        full = python_version if len(parts) >= 3 else f"{short}.0"
        return {
            "implementation_name": "cpython",
            "implementation_version": full,
            "os_name": self.os_name,
            "platform_machine": self.machine,
            "platform_python_implementation": "CPython",
            "platform_release": "",
            "platform_system": self.platform_system,
            "platform_version": "",
            "python_full_version": full,
            "python_version": short,
            "sys_platform": self.sys_platform,
        }

    def uv_python_platform(
        self,
        linux_target: tuple[int, int] = DEFAULT_GLIBC,
        macosx_target: tuple[int, int] = DEFAULT_MACOSX,
    ) -> str:
        """The value of uv's `--python-platform` for this platform and these targets."""
        if self.os_family == "linux":
            return f"{self.wheel_arch}-manylinux_{linux_target[0]}_{linux_target[1]}"
        if self.os_family == "macosx":
            arch = "aarch64" if self.wheel_arch == "arm64" else "x86_64"
            return f"{arch}-apple-darwin"
        arch = "aarch64" if self.wheel_arch == "arm64" else "x86_64"
        return f"{arch}-pc-windows-msvc"


_TABLE = {
    "linux_x86_64": TargetPlatform(
        "linux_x86_64", "linux", "x86_64", "linux", "Linux", "posix", "x86_64"
    ),
    "linux_aarch64": TargetPlatform(
        "linux_aarch64", "linux", "aarch64", "linux", "Linux", "posix", "aarch64"
    ),
    "macosx_arm64": TargetPlatform(
        "macosx_arm64", "macosx", "arm64", "darwin", "Darwin", "posix", "arm64"
    ),
    "macosx_x86_64": TargetPlatform(
        "macosx_x86_64", "macosx", "x86_64", "darwin", "Darwin", "posix", "x86_64"
    ),
    "win_amd64": TargetPlatform("win_amd64", "win", "AMD64", "win32", "Windows", "nt", "amd64"),
    "win_arm64": TargetPlatform("win_arm64", "win", "ARM64", "win32", "Windows", "nt", "arm64"),
}


def target_platform(name: str) -> TargetPlatform:
    """The TargetPlatform called `name` (one of PLATFORMS)."""
    return _TABLE[name]


def host_machine() -> str:
    """`platform.machine()`: on POSIX that is uname's machine, without importing platform."""
    if hasattr(os, "uname"):
        return os.uname().machine
    import platform

    return platform.machine()


def build_platform() -> str | None:
    """The target platform name of the machine running this code, or None if unsupported."""
    machine = host_machine().lower()
    if sys.platform.startswith("linux"):
        return {
            "x86_64": "linux_x86_64",
            "amd64": "linux_x86_64",
            "aarch64": "linux_aarch64",
            "arm64": "linux_aarch64",
        }.get(machine)
    if sys.platform == "darwin":
        return {"arm64": "macosx_arm64", "x86_64": "macosx_x86_64"}.get(machine)
    if sys.platform == "win32":
        return {"amd64": "win_amd64", "x86_64": "win_amd64", "arm64": "win_arm64"}.get(machine)
    return None


def wheel_platform_tags(filename: str) -> list[str]:
    """The platform tags of a wheel file name (`a-1.0-py3-none-manylinux_2_17_x86_64.whl`)."""
    stem = filename[:-4] if filename.endswith(".whl") else filename
    parts = stem.split("-")
    if len(parts) < 5:
        return []
    return parts[-1].split(".")


def _version_tag(tag: str, prefix: str, arch: str) -> tuple[int, int] | None:
    """Parse `<prefix>X_Y_<arch>` into (X, Y), or None if the tag is another shape."""
    if not tag.startswith(prefix) or not tag.endswith("_" + arch):
        return None
    middle = tag[len(prefix) : -len(arch) - 1]
    pieces = middle.split("_")
    if len(pieces) != 2 or not all(p.isdigit() for p in pieces):
        return None
    return int(pieces[0]), int(pieces[1])


_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


def tag_supports(
    tag: str,
    target: TargetPlatform,
    linux_target: tuple[int, int] = DEFAULT_GLIBC,
    macosx_target: tuple[int, int] = DEFAULT_MACOSX,
) -> bool:
    """Whether one wheel platform tag runs on `target` with the given glibc/macOS targets."""
    if tag == "any":
        return True
    arch = target.wheel_arch
    if target.os_family == "linux":
        if tag == f"linux_{arch}":
            return True
        for legacy, version in _LEGACY_MANYLINUX.items():
            if tag == f"{legacy}_{arch}":
                return version <= linux_target
        version = _version_tag(tag, "manylinux_", arch)
        return version is not None and version <= linux_target
    if target.os_family == "macosx":
        for wheel_arch in (arch, "universal2", "universal"):
            version = _version_tag(tag, "macosx_", wheel_arch)
            if version is not None:
                if wheel_arch == "universal" and arch == "arm64":
                    return False
                return version <= macosx_target
        return False
    return tag == f"win_{arch}"


def wheel_supports(
    filename: str,
    target: TargetPlatform,
    linux_target: tuple[int, int] = DEFAULT_GLIBC,
    macosx_target: tuple[int, int] = DEFAULT_MACOSX,
    *,
    python: str | None = None,
) -> bool:
    """Whether a wheel (by file name) installs on `target` with the given glibc/macOS targets.

    With `python` (`X.Y`), its interpreter and ABI tags must also suit that CPython.
    """
    if python is not None and not wheel_python_supports(filename, python):
        return False
    return any(
        tag_supports(t, target, linux_target, macosx_target) for t in wheel_platform_tags(filename)
    )


def wheel_python_supports(filename: str, python: str) -> bool:
    """Whether a wheel's interpreter and ABI tags suit CPython `python` (`X.Y`, GIL build)."""
    stem = filename[:-4] if filename.endswith(".whl") else filename
    parts = stem.split("-")
    if len(parts) < 5:
        return False
    major, _, minor = python.partition(".")
    interpreters, abis = parts[-3].split("."), parts[-2].split(".")
    return any(
        _interpreter_abi_ok(i, a, int(major), int(minor.split(".")[0]))
        for i in interpreters
        for a in abis
    )


def _interpreter_abi_ok(interpreter: str, abi: str, major: int, minor: int) -> bool:
    exact = f"{major}{minor}"
    if abi == "none":
        if interpreter in (f"py{major}", f"py{exact}", f"cp{exact}"):
            return True
        # pyXW wheels for older minor versions still install (like pip's compatible tags)
        older = interpreter.removeprefix(f"py{major}")
        return interpreter.startswith("py") and older.isdigit() and int(older) <= minor
    if abi == "abi3":
        older = interpreter.removeprefix(f"cp{major}")
        return interpreter.startswith("cp") and older.isdigit() and int(older) <= minor
    return interpreter == f"cp{exact}" and abi == f"cp{exact}"


def platforms_marker(names: Iterable[str]) -> list[str]:
    """Environment markers, one per platform, in PLATFORMS order (uv's `environments`)."""
    wanted = set(names)
    return [_TABLE[n].marker() for n in PLATFORMS if n in wanted]
