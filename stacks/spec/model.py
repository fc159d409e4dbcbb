"""The stack spec model: the frozen, validated values every other part works on.

Parsing and validation live in `stacks.spec.loader` and the modules it drives; every
problem in a spec is collected and reported at once in one SpecError.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any


class LayerKind(str, Enum):
    """The three kinds of layer."""

    RUNTIME = "runtime"
    FRAMEWORK = "framework"
    APPLICATION = "application"

    @property
    def table(self) -> str:
        """The spec's top-level array holding layers of this kind."""
        return {"runtime": "runtimes", "framework": "frameworks", "application": "applications"}[
            self.value
        ]

    @property
    def prefix(self) -> str:
        """The prefix that turns a bare name into an env name."""
        return {"runtime": "", "framework": "framework-", "application": "app-"}[self.value]


RUNTIME_SOURCES = ("python-build-standalone", "local")
# What the runtime unpacker reads (it tells the compression by content, but an archive URL's
# extension lets a spec be checked before anything is downloaded).
ARCHIVE_SUFFIXES = (
    ".tar.gz",
    ".tgz",
    ".tar.xz",
    ".txz",
    ".tar.zst",
    ".tzst",
    ".tar.bz2",
    ".tbz2",
    ".tar",
)
# Archive and installer formats it cannot read.
UNSUPPORTED_SUFFIXES = (".zip", ".7z", ".rar", ".tar.lz", ".tar.lz4", ".tar.br", ".whl")
UNSUPPORTED_SUFFIXES += (".exe", ".msi", ".pkg", ".dmg", ".nupkg")


@dataclass(frozen=True)
class RuntimeSource:
    """Where a runtime comes from: python-build-standalone, a local interpreter, or an archive URL."""

    kind: str  # "python-build-standalone", "local" or "archive"
    url: str | None = None
    sha256: str | None = None

    def describe(self) -> str:
        """A short human-readable form."""
        return self.url if self.kind == "archive" and self.url else self.kind


@dataclass(frozen=True)
class LayerSpec:
    """One validated layer of a stack."""

    kind: LayerKind
    name: str
    env_name: str
    requirements: tuple[str, ...]
    platforms: tuple[str, ...]
    versioned: bool
    linux_target: tuple[int, int]
    macosx_target: tuple[int, int]
    dynlib_exclude: tuple[str, ...]
    package_indexes: tuple[tuple[str, str], ...]  # merged with inherited ones, sorted
    priority_indexes: tuple[str, ...]
    runtime: str  # env name of the runtime layer (itself for a runtime)
    frameworks: tuple[str, ...]  # declared framework env names
    linearised: tuple[str, ...]  # C3 order of all frameworks below, highest priority first
    python_implementation: str  # e.g. "cpython@3.12" (the runtime's)
    source: RuntimeSource | None = None  # runtimes only
    launch_module: Path | None = None  # applications only
    support_modules: tuple[Path, ...] = ()
    variant: str | None = None  # the hardware variant a `variants` expansion made it for
    variant_of: str | None = None  # ... and the env name of the layer it was made from

    @property
    def lock_name(self) -> str:
        """The env name as used in lock file names (no dots)."""
        return self.env_name.replace(".", "_")

    @property
    def python_version(self) -> str:
        """The requested Python version, `X.Y` or `X.Y.Z`."""
        return self.python_implementation.partition("@")[2]

    @property
    def python_xy(self) -> str:
        """The requested Python `X.Y`."""
        return ".".join(self.python_version.split(".")[:2])

    @property
    def dependencies(self) -> tuple[str, ...]:
        """Env names of the layers below this one in sys.path order (runtime last)."""
        if self.kind is LayerKind.RUNTIME:
            return ()
        return (*self.linearised, self.runtime)

    @property
    def launch_module_name(self) -> str | None:
        """The module name an application runs with `python -m`."""
        return module_name(self.launch_module) if self.launch_module else None

    def deployed_name(self, lock_version: int | None) -> str:
        """The deployed folder name: `<env>@N` for versioned layers (`@???` while unlocked)."""
        if not self.versioned:
            return self.env_name
        return f"{self.env_name}@{lock_version if lock_version is not None else '???'}"


@dataclass(frozen=True)
class StackSettings:
    """This tool's own settings from `[tool.stacks]`, after environment overrides."""

    runtime_source: str = "python-build-standalone"
    python_mirror: str | None = None
    # Opt-in: a local runtime pinned to X.Y.Z that is not installed uses the newest X.Y.*.
    runtime_any_patch: bool = False


@dataclass(frozen=True)
class StackSpec:
    """A whole validated stack: enabled layers in definition order."""

    path: Path
    layers: tuple[LayerSpec, ...]
    disabled: tuple[str, ...]
    uv_config: Mapping[str, Any]
    settings: StackSettings
    warnings: tuple[str, ...] = ()
    _by_name: Mapping[str, LayerSpec] = field(default_factory=dict, repr=False, compare=False)
    # variant_of -> env name of its first enabled variant (a lookup per layer keeps locks linear)
    _first_variants: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def spec_dir(self) -> Path:
        """The folder relative paths in the spec are resolved against."""
        return self.path.parent

    @property
    def name(self) -> str:
        """The spec file's name."""
        return self.path.name

    def first_variant(self, layer: LayerSpec) -> LayerSpec | None:
        """The first enabled variant of the layer `layer` is a variant of (None if it has none)."""
        if layer.variant_of is None:
            return None
        first = self._first_variants.get(layer.variant_of)
        return self._by_name[first] if first is not None else None

    def layer(self, env_name: str) -> LayerSpec:
        """The enabled layer with this env name."""
        return self._by_name[env_name]

    def has_layer(self, env_name: str) -> bool:
        """Whether an enabled layer has this env name."""
        return env_name in self._by_name

    def of_kind(self, kind: LayerKind) -> tuple[LayerSpec, ...]:
        """Enabled layers of one kind, in definition order."""
        return tuple(layer for layer in self.layers if layer.kind is kind)

    @property
    def variants(self) -> tuple[str, ...]:
        """The variant names of the enabled layers, in definition order."""
        return tuple(dict.fromkeys(layer.variant for layer in self.layers if layer.variant))

    def dependents(self, env_name: str) -> tuple[LayerSpec, ...]:
        """Enabled layers that have `env_name` below them."""
        return tuple(layer for layer in self.layers if env_name in layer.dependencies)


def module_name(path: Path) -> str:
    """The importable name of a module file or package folder."""
    return path.stem if path.suffix == ".py" else path.name


def normalise_package(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()
