"""A layer's lock files and metadata, and the inputs its lock depends on (no uv, no network).

`lock_paths` says where the files are, `LockMeta` reads and writes the metadata, and
`lock_inputs` gathers what a lock depends on now, for `stacks.lock.locking` to compare.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from stacks.errors import LockError
from stacks.hashing import hash_file_or_none, hash_json, scan_tree
from stacks.lock.variants import variant_reference
from stacks.spec import LayerSpec, StackSpec, module_name

# Bump when post-processing changes what a lock contains, so older locks are redone.
LOCK_FORMAT = 1


@dataclass(frozen=True)
class LockOptions:
    """Command-line settings that change how layers resolve."""

    index_url: str | None = None  # replaces the default index
    no_index: bool = False
    local_wheels: tuple[Path, ...] = ()  # absolute folders of wheels (find-links)
    exclude_newer: str | None = None  # if None: UV_EXCLUDE_NEWER, else [tool.uv] exclude-newer
    # Whether the index settings above were chosen (the command line gave any of them). When
    # not, each layer keeps the ones its lock recorded: `stacks lock --local-wheels DIR` then
    # a plain `stacks build` neither relocks nor loses the wheel folder.
    given: bool = True


@dataclass(frozen=True)
class LockPaths:
    """Where a layer's lock files live: `<spec dir>/requirements/<env>/`."""

    folder: Path
    pylock: Path
    meta: Path
    summary: Path


def _is_venvstacks_meta(data: Mapping[str, Any]) -> bool:
    # Imported only for metadata without stacks' `lock_hash`: venvstacks_meta loads hashlib.
    from stacks.lock.venvstacks_meta import is_venvstacks_meta

    return is_venvstacks_meta(data)


def lock_paths(spec: StackSpec, layer: LayerSpec) -> LockPaths:
    """The lock files of a layer."""
    folder = spec.spec_dir / "requirements" / layer.env_name
    return LockPaths(
        folder=folder,
        pylock=folder / f"pylock.{layer.lock_name}.toml",
        meta=folder / f"pylock.{layer.lock_name}.meta.json",
        summary=folder / f"packages-{layer.env_name}.txt",
    )


def folders_in_the_way(paths: LockPaths) -> list[Path]:
    """The lock files of a layer that are folders (made by hand): nothing can be written there."""
    return [path for path in (paths.pylock, paths.meta, paths.summary) if path.is_dir()]


def folders_in_the_way_error(layer: LayerSpec, folders: list[Path]) -> LockError:
    """The error for lock files that are folders: it names the layer and how to remove them."""
    from shlex import quote

    listed = ", ".join(str(path) for path in folders)
    return LockError(
        f"cannot lock layer '{layer.env_name}': a folder is where its lock file must be "
        f"written: {listed}",
        hint=f"remove the folder (`rm -r {' '.join(quote(str(p)) for p in folders)}`) "
        "and run again",
    )


@dataclass(frozen=True)
class LockMeta:
    """The lock metadata file: versions, times and the hashes that make a lock valid."""

    lock_version: int
    locked_at: str
    requirements_hash: str
    lock_hash: str
    lock_input_hash: str
    other_inputs_hash: str
    version_inputs_hash: str
    lower_locks: Mapping[str, str]
    inputs: Mapping[str, Any] = field(default_factory=dict)  # readable form of the inputs
    written_by: str = "stacks"  # or "venvstacks": its format has only the four hashes
    # After stacks relocks a venvstacks lock to the same packages: venvstacks' content hash,
    # kept while the content stays, so venvstacks locks above it stay valid.
    venvstacks_requirements_hash: str | None = None
    # A variant layer's variant, the variant it was locked alike with, and what differs.
    variants: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form (the file's content)."""
        kept = self.venvstacks_requirements_hash
        variants = {"variants": dict(self.variants)} if self.variants else {}
        return (
            ({"venvstacks_requirements_hash": kept} if kept else {})
            | variants
            | {
                "lock_version": self.lock_version,
                "locked_at": self.locked_at,
                "requirements_hash": self.requirements_hash,
                "lock_hash": self.lock_hash,
                "lock_input_hash": self.lock_input_hash,
                "other_inputs_hash": self.other_inputs_hash,
                "version_inputs_hash": self.version_inputs_hash,
                "lower_locks": dict(sorted(self.lower_locks.items())),
                "inputs": dict(self.inputs),
            }
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LockMeta:
        """Inverse of to_json (or venvstacks' format); raises KeyError/TypeError/ValueError."""
        if "lock_hash" not in data and _is_venvstacks_meta(data):
            requirements_hash = str(data["requirements_hash"])
            return cls(
                lock_version=int(data["lock_version"]),
                locked_at=str(data["locked_at"]),
                requirements_hash=requirements_hash,
                lock_hash="venvstacks:" + requirements_hash,  # identifies the content
                lock_input_hash=str(data["lock_input_hash"]),
                other_inputs_hash=str(data["other_inputs_hash"]),
                version_inputs_hash=str(data["version_inputs_hash"]),
                lower_locks={},
                written_by="venvstacks",
            )
        kept = data.get("venvstacks_requirements_hash")
        return cls(
            lock_version=int(data["lock_version"]),
            locked_at=str(data["locked_at"]),
            requirements_hash=str(data["requirements_hash"]),
            lock_hash=str(data["lock_hash"]),
            lock_input_hash=str(data["lock_input_hash"]),
            other_inputs_hash=str(data["other_inputs_hash"]),
            version_inputs_hash=str(data["version_inputs_hash"]),
            lower_locks={str(k): str(v) for k, v in dict(data["lower_locks"]).items()},
            inputs=dict(data.get("inputs", {})),
            venvstacks_requirements_hash=str(kept) if kept else None,
            variants=dict(data["variants"]) if data.get("variants") else None,
        )


def read_lock_meta(spec: StackSpec, layer: LayerSpec) -> LockMeta | None:
    """The layer's lock metadata, or None if it is missing or unreadable."""
    try:
        data = json.loads(lock_paths(spec, layer).meta.read_text(encoding="utf-8"))
        return LockMeta.from_json(data)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def lock_meta_problem(spec: StackSpec, layer: LayerSpec) -> str | None:
    """Why the layer's lock metadata file is there but cannot be read (None: it reads, or is absent)."""
    path = lock_paths(spec, layer).meta
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # a folder, no permission, not UTF-8
        return f"unreadable: {path.name} ({exc})"
    try:
        data = json.loads(text)
    except ValueError as exc:
        return f"unreadable: {path.name} (not valid JSON: {exc})"
    try:
        LockMeta.from_json(data)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"unreadable: {path.name} (not lock metadata: {type(exc).__name__} {exc})"
    return None


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class LockInputs:
    """Everything a layer's lock depends on, as it is now."""

    requirements: tuple[str, ...]
    other: Mapping[str, Any]
    version: Mapping[str, Any]
    lower_locks: Mapping[str, str | None]

    @property
    def lock_input_hash(self) -> str:
        """Hash of the declared requirements (normalised, sorted)."""
        return hash_json(sorted(self.requirements))

    @property
    def other_inputs_hash(self) -> str:
        """Hash of every other input that changes the resolution."""
        return hash_json(self.other)

    @property
    def version_inputs_hash(self) -> str:
        """Hash of the inputs that only matter to versioned layers."""
        return hash_json(self.version)

    def readable(self) -> dict[str, Any]:
        """The inputs as recorded in the metadata, so a later check can say what changed."""
        return {
            "requirements": sorted(self.requirements),
            "other": dict(self.other),
            "version": dict(self.version),
        }


def effective_exclude_newer(
    spec: StackSpec, options: LockOptions, environ: Mapping[str, str] | None = None
) -> str | None:
    """exclude-newer from the options, else UV_EXCLUDE_NEWER, else `[tool.uv]`."""
    env = os.environ if environ is None else environ
    value: Any = options.exclude_newer or env.get("UV_EXCLUDE_NEWER") or None
    if value is None:
        value = spec.uv_config.get("exclude-newer")
    if isinstance(value, datetime.datetime | datetime.date):
        value = value.isoformat()
    return str(value) if value else None


def lock_time_of(exclude_newer: str | None) -> str | None:
    """exclude-newer as an ISO-8601 UTC time to the second, or None if it is not a fixed time."""
    if not exclude_newer:
        return None
    text = exclude_newer.strip()
    try:
        if len(text) == 10:
            day = datetime.date.fromisoformat(text)
            moment = datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.timezone.utc)
        else:
            text = re.sub(r"(\d\d:\d\d:\d\d)\.\d+", r"\1", text)  # 3.10 wants 3 or 6 digits
            moment = datetime.datetime.fromisoformat(re.sub(r"[Zz]$", "+00:00", text))
    except ValueError:
        return None  # a relative span ("1 week"): not a fixed point in time
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    moment = moment.astimezone(datetime.timezone.utc).replace(microsecond=0)
    return moment.isoformat()


def lock_inputs(spec: StackSpec, layer: LayerSpec, options: LockOptions) -> LockInputs:
    """The current inputs of a layer's lock (cheap: reads only small files)."""
    families = {name.split("_", 1)[0] for name in layer.platforms}
    uv_settings = {k: v for k, v in spec.uv_config.items() if k != "exclude-newer"}
    other = {
        "format": LOCK_FORMAT,
        "python": layer.python_xy,
        "runtime": layer.runtime,
        "frameworks": list(layer.linearised),
        "platforms": list(layer.platforms),
        "linux_target": "glibc@{}.{}".format(*layer.linux_target) if "linux" in families else None,
        "macosx_target": "{}.{}".format(*layer.macosx_target) if "macosx" in families else None,
        "package_indexes": dict(layer.package_indexes),
        "priority_indexes": list(layer.priority_indexes),
        "uv": json.loads(json.dumps(uv_settings, sort_keys=True, default=str)),
        "exclude_newer": effective_exclude_newer(spec, options),
        "index_url": _shown_index(spec, options.index_url),
        "no_index": options.no_index,
        "local_wheels": [_shown_path(spec, p) for p in options.local_wheels],
    }
    version = {
        "env_name": layer.env_name,
        "versioned": layer.versioned,
        "launch_module": _module_hash(layer.launch_module) if layer.launch_module else None,
        "support_modules": [_module_hash(p) for p in layer.support_modules],
    }
    if layer.versioned:
        # A versioned layer deployed as <env>@N must not change what it runs on under the same
        # N: a new deployed name of a lower layer gives it a new version too.
        lower_versions = {
            env: _lock_version_or_none(spec, env)
            for env in layer.dependencies
            if spec.layer(env).versioned
        }
        if lower_versions:
            version["lower_versions"] = lower_versions
    lower = {
        env: hash_file_or_none(lock_paths(spec, spec.layer(env)).pylock)
        for env in layer.dependencies
    }
    reference = variant_reference(spec, layer)
    if reference is not None:
        # Locked alike with its first variant: a new lock of that one is a reason to relock.
        lower[reference.env_name] = hash_file_or_none(lock_paths(spec, reference).pylock)
    return LockInputs(tuple(layer.requirements), other, version, lower)


def _lock_version_or_none(spec: StackSpec, env: str) -> int | None:
    meta = read_lock_meta(spec, spec.layer(env))
    return meta.lock_version if meta else None


def _redact(url: str | None) -> str | None:
    """A URL without credentials (they must not end up in committed metadata)."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def _shown_index(spec: StackSpec, url: str | None) -> str | None:
    """An index URL as recorded: a local `file://` index like a wheel folder (spec-relative).

    So a project with its own file index keeps valid locks when it is cloned elsewhere.
    """
    if url is None or not url.startswith("file:"):
        return _redact(url)
    from urllib.request import url2pathname

    return "file:" + _shown_path(spec, Path(url2pathname(urlsplit(url).path)))


def _shown_path(spec: StackSpec, path: Path) -> str:
    """A folder as recorded in metadata: relative to the spec folder, POSIX."""
    try:
        return Path(os.path.relpath(path, spec.spec_dir)).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _module_hash(path: Path) -> list[str]:
    """[module name, content hash] of a launch or support module (file or package folder)."""
    if path.is_dir():
        tree = scan_tree(path, skip=lambda rel: "__pycache__" in rel or rel.endswith(".pyc"))
        digest = tree.digest()
    else:
        digest = hash_file_or_none(path) or "missing"
    return [module_name(path), digest]


# ---------------------------------------------------------------- recorded options


def layer_options(
    spec: StackSpec, layer: LayerSpec, options: LockOptions, meta: LockMeta | None = None
) -> LockOptions:
    """The options a layer locks with: those given, or else those its lock (`meta`) recorded."""
    if options.given:
        return options
    meta = meta or read_lock_meta(spec, layer)
    other = meta.inputs.get("other") if meta else None
    if not isinstance(other, Mapping):
        return options
    wheels = other.get("local_wheels")
    return replace(
        options,
        index_url=_recorded_index(spec, other.get("index_url")),
        no_index=other.get("no_index") is True,
        local_wheels=tuple(
            spec.spec_dir / path for path in wheels or () if isinstance(path, str) and path
        )
        if isinstance(wheels, list)
        else (),
        given=True,
    )


def _recorded_index(spec: StackSpec, shown: Any) -> str | None:
    """An index URL from lock metadata (the inverse of `_shown_index`)."""
    if not isinstance(shown, str) or not shown:
        return None
    if shown.startswith("file:") and not shown.startswith("file://"):
        return (spec.spec_dir / shown.removeprefix("file:")).absolute().as_uri()
    return shown
