"""Reading lock metadata that venvstacks 0.8 wrote (`pylock.<env>.meta.json`), so its locks stay valid.

venvstacks records four `sha256:` hashes of joined strings. stacks recomputes each from the
spec and the committed pylock as venvstacks defines them (README, "Locks written by
venvstacks"); where venvstacks' own releases differ in a detail (whether a layer above the
runtime lists its linux/macOS targets), every known form is accepted.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from stacks.spec import LayerSpec, StackSpec

# The keys venvstacks writes; stacks' own metadata has these plus `lock_hash` and `inputs`.
VENVSTACKS_KEYS = frozenset(
    {
        "lock_version",
        "locked_at",
        "requirements_hash",
        "lock_input_hash",
        "other_inputs_hash",
        "version_inputs_hash",
    }
)
SHARED_CLAUSE = "sys_platform == 'from_lower_layer'"


def is_venvstacks_meta(data: Mapping[str, Any]) -> bool:
    """Whether a metadata document is venvstacks' (its keys, without stacks' `lock_hash`)."""
    return set(data) >= VENVSTACKS_KEYS and "lock_hash" not in data


def hash_strings(items: Iterable[str]) -> str:
    """sha256 over the strings joined with no separator, as `sha256:<hex>`."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(item.encode("utf-8"))
    return "sha256:" + digest.hexdigest()


def content_hash(pylock_text: str) -> str:
    """venvstacks' `requirements_hash` of a pylock: its packages, markers, indexes and wheel hashes.

    Formatting, URLs, sizes and upload times do not count, so a pylock that stacks renders
    from the same resolution hashes the same as venvstacks' own file.
    """
    from stacks.lock.pylock import parse_pylock

    lines: list[str] = []
    for package in parse_pylock(pylock_text).packages:
        marker = _marker_text(package.marker)
        suffix = f" ; {marker}" if marker else ""
        index = package.index or "unspecified index"
        lines.append(f"{package.name}=={_version(package.version)}{suffix} from {index}")
        for wheel in package.wheels:
            lines.extend(f"{wheel.name}:{algo}:{value}" for algo, value in wheel.hashes.items())
    return hash_strings(sorted(lines))


def content_hash_of(path: Path) -> str | None:
    """`content_hash` of a pylock file, or None if it is missing or unreadable."""
    try:
        return content_hash(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def lock_input_hash(layer: LayerSpec) -> str:
    """venvstacks' `lock_input_hash`: the declared requirements, normalised and sorted."""
    from packaging.requirements import Requirement

    return hash_strings(sorted(str(Requirement(r)) for r in layer.requirements))


def other_inputs_hashes(spec: StackSpec, layer: LayerSpec) -> set[str]:
    """Every form venvstacks gives `other_inputs_hash` for the layer as the spec has it now."""
    families = {name.split("_", 1)[0] for name in layer.platforms}
    linux = ["linux_target=glibc@{}.{}".format(*layer.linux_target)] if "linux" in families else []
    macos = ["macosx_target={}.{}".format(*layer.macosx_target)] if "macosx" in families else []
    below: list[list[str]] = [[]]
    if layer.dependencies:
        names = [spec.layer(env).name for env in layer.linearised]
        declared = [spec.layer(env).name for env in layer.frameworks]
        below = [[layer.runtime, *names], [layer.runtime, *declared]]
    found = set()
    for targets in (linux + macos, linux, macos, []):
        for lower in below:
            found.add(hash_strings([f"py_version={layer.python_xy}", *targets, *lower]))
    return found


def version_inputs_hashes(layer: LayerSpec) -> set[str]:
    """Every form venvstacks gives `version_inputs_hash`: name, versioned flag, module hashes."""
    head = [f"env_name={layer.env_name}", f"is_versioned_layer={layer.versioned}"]
    if layer.launch_module is None:
        return {hash_strings(head)}
    launch = module_hash(layer.launch_module)
    orders = {tuple(layer.support_modules), tuple(sorted(layer.support_modules))}
    return {hash_strings([*head, launch, *map(module_hash, order)]) for order in orders}


def module_hash(path: Path) -> str:
    """venvstacks' hash of a launch or support module: a file with its name, or a package folder."""
    if path.is_file():
        named = hashlib.sha256(path.name.encode("utf-8"))
        named.update(_file_hash(path).encode("utf-8"))
        return "sha256:" + named.hexdigest()
    digest = hashlib.sha256()
    for folder, files in _walk_sources(path):
        digest.update(folder.name.encode("utf-8"))
        for name in files:
            digest.update(name.encode("utf-8"))
            digest.update(_file_hash(folder / name).encode("utf-8"))
    return "sha256/" + digest.hexdigest()  # the `/` marks a folder hash, as venvstacks writes it


def _walk_sources(root: Path) -> Iterator[tuple[Path, list[str]]]:
    """Top-down, sorted: folders holding files, without caches and git files."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith(".git"))
        kept = sorted(f for f in files if not f.endswith(".pyc") and not f.startswith(".git"))
        if kept:
            yield Path(folder), kept


def _file_hash(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _marker_text(marker: str | None) -> str:
    """A marker as venvstacks hashes it: normalised, single quotes, without the shared clause."""
    if not marker:
        return ""
    from packaging.markers import Marker

    text = str(Marker(marker)).replace('"', "'")
    if text == SHARED_CLAUSE:
        return ""
    if SHARED_CLAUSE in text:  # `(<own marker>) and <shared clause>`, unwrapped in that order
        text = text.removeprefix("(").removesuffix(f" and {SHARED_CLAUSE}").removesuffix(")")
    return text


def _version(text: str) -> str:
    from packaging.version import InvalidVersion, Version

    try:
        return str(Version(text))
    except InvalidVersion:
        return text
