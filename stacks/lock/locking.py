"""Lock one layer: uv resolves it against its lower layers' pins into a cross-platform pylock.

`lock_state` is the cheap up-to-date check (no uv, no network: small files and hashes);
`lock_layer` runs uv, post-processes its export (`stacks.lock.pylock`), checks that every
package has wheels for every target platform, and writes the lock files atomically.
The files and the inputs they record are in `stacks.lock.metadata`.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stacks import atomic
from stacks.errors import LockError
from stacks.hashing import hash_bytes, hash_file_or_none
from stacks.lock.metadata import (
    LockInputs,
    LockMeta,
    LockOptions,
    LockPaths,
    effective_exclude_newer,
    folders_in_the_way,
    folders_in_the_way_error,
    layer_options,
    lock_inputs,
    lock_paths,
    lock_time_of,
    read_lock_meta,
)
from stacks.lock.variants import resolve_alike, variant_differences, variant_reference
from stacks.spec import LayerSpec, StackSpec, normalise_package

if TYPE_CHECKING:
    from stacks.lock.pylock import LowerPin, PlatformScope, Pylock
    from stacks.lock.uv_project import MissingWheelsError

# ---------------------------------------------------------------- validity


@dataclass(frozen=True)
class LockState:
    """Whether a layer's committed lock is up to date, and in words why not."""

    valid: bool
    reasons: tuple[str, ...]
    meta: LockMeta | None


def lock_state(spec: StackSpec, layer: LayerSpec, options: LockOptions | None) -> LockState:
    """Check a layer's lock against its current inputs (no uv, no network)."""
    paths = lock_paths(spec, layer)
    meta = read_lock_meta(spec, layer)
    options = layer_options(spec, layer, options or LockOptions(), meta)
    in_the_way = folders_in_the_way(paths)
    if in_the_way:
        names = ", ".join(path.name for path in in_the_way)
        return LockState(False, (f"{names}: a folder where a lock file belongs",), None)
    if meta is None:
        return LockState(False, (f"not locked yet (no readable {paths.meta.name})",), None)
    if meta.written_by == "venvstacks":
        return _venvstacks_lock_state(spec, layer, options, meta)
    reasons: list[str] = []
    actual = hash_file_or_none(paths.pylock)
    if actual is None:
        reasons.append(f"{paths.pylock.name} is missing")
    elif actual != meta.lock_hash:
        reasons.append(
            f"{paths.pylock.name} was edited by hand (its hash differs from the metadata)"
        )
    current = lock_inputs(spec, layer, options)
    recorded = meta.inputs
    if current.lock_input_hash != meta.lock_input_hash:
        reasons.append(_requirement_change(recorded.get("requirements"), current.requirements))
    if current.other_inputs_hash != meta.other_inputs_hash:
        reasons.extend(_changes(recorded.get("other"), current.other, "lock inputs changed"))
    if layer.versioned and current.version_inputs_hash != meta.version_inputs_hash:
        reasons.extend(_changes(recorded.get("version"), current.version, "version inputs changed"))
    reference = variant_reference(spec, layer)
    for env, digest in current.lower_locks.items():
        if reference is not None and env == reference.env_name:
            reasons += _reference_change(spec, reference, meta, digest, options)
        elif digest is None:
            reasons.append(f"lower layer '{env}' is not locked")
        elif meta.lower_locks.get(env) != digest:
            reasons.append(f"the lock of lower layer '{env}' changed")
    return LockState(not reasons, tuple(reasons), meta)


def _reference_change(
    spec: StackSpec, reference: LayerSpec, meta: LockMeta, digest: str | None, options: LockOptions
) -> list[str]:
    """Why a variant layer is to be locked again for the first variant's sake (if it is)."""
    recorded = meta.lower_locks.get(reference.env_name)
    if digest is None or recorded == digest:
        return []
    if recorded is None and not lock_state(spec, reference, options).valid:
        return []  # locked without it, and it has no valid lock to follow yet
    return [
        f"the lock of '{reference.env_name}' (variant '{reference.variant}', which the other"
        " variants are locked alike with) changed"
    ]


def _venvstacks_lock_state(
    spec: StackSpec, layer: LayerSpec, options: LockOptions, meta: LockMeta
) -> LockState:
    """Check a lock venvstacks wrote: its four hashes, recomputed from the spec and the pylock."""
    from stacks.lock import venvstacks_meta as vs

    paths = lock_paths(spec, layer)
    reasons: list[str] = []
    actual = vs.content_hash_of(paths.pylock)
    if actual is None:
        reasons.append(f"{paths.pylock.name} is missing or unreadable")
    elif actual != meta.requirements_hash:
        reasons.append(
            f"{paths.pylock.name} was edited by hand (its packages differ from the "
            "requirements_hash venvstacks recorded)"
        )
    if vs.lock_input_hash(layer) != meta.lock_input_hash:
        reasons.append("requirements changed since venvstacks locked the layer")
    if meta.other_inputs_hash not in vs.other_inputs_hashes(spec, layer):
        reasons.append(
            "lock inputs changed since venvstacks locked the layer (Python X.Y, runtime, "
            "frameworks, linux_target or macosx_target)"
        )
    if layer.versioned and meta.version_inputs_hash not in vs.version_inputs_hashes(layer):
        reasons.append(
            "version inputs changed since venvstacks locked the layer (name, versioned, "
            "launch or support modules)"
        )
    for env in layer.dependencies:
        lower = spec.layer(env)
        state = lock_state(spec, lower, options)
        if not state.valid:
            reasons.append(f"lower layer '{env}' has no valid lock")
        elif not _same_as_venvstacks_locked(spec, lower, state.meta):
            reasons.append(f"the lock of lower layer '{env}' changed")
    return LockState(not reasons, tuple(reasons), meta)


def _same_as_venvstacks_locked(spec: StackSpec, layer: LayerSpec, meta: LockMeta | None) -> bool:
    """Whether a (valid) lower lock still has the packages venvstacks locked the layers above on."""
    if meta is None or meta.written_by == "venvstacks":
        return meta is not None
    from stacks.lock.venvstacks_meta import content_hash_of

    kept = meta.venvstacks_requirements_hash
    return kept is not None and content_hash_of(lock_paths(spec, layer).pylock) == kept


_LABELS = {
    "format": "the lock format of stacks",
    "python": "Python version",
    "runtime": "runtime layer",
    "frameworks": "framework layers",
    "platforms": "platforms",
    "linux_target": "linux_target",
    "macosx_target": "macosx_target",
    "package_indexes": "package_indexes",
    "priority_indexes": "priority_indexes",
    "uv": "[tool.uv] settings",
    "exclude_newer": "exclude-newer",
    "index_url": "index URL",
    "no_index": "no-index",
    "local_wheels": "local wheel folders",
    "env_name": "env name",
    "versioned": "versioned",
    "launch_module": "launch module",
    "support_modules": "support modules",
    "lower_versions": "versions of versioned lower layers",
}


def _requirement_change(recorded: Any, current: tuple[str, ...]) -> str:
    if not isinstance(recorded, list):
        return "requirements changed"
    added = sorted(set(current) - set(recorded))
    removed = sorted(set(recorded) - set(current))
    parts = [f"added {', '.join(added)}"] if added else []
    parts += [f"removed {', '.join(removed)}"] if removed else []
    return f"requirements changed ({'; '.join(parts)})" if parts else "requirements changed"


def _changes(recorded: Any, current: Mapping[str, Any], fallback: str) -> list[str]:
    if not isinstance(recorded, Mapping):
        return [fallback]
    found = []
    for key in sorted(set(recorded) | set(current), key=_label_order):
        old, new = recorded.get(key), current.get(key)
        if old == new:
            continue
        label = _LABELS.get(key, key)
        if isinstance(old, dict | list) or isinstance(new, dict | list):
            if key in ("launch_module", "support_modules", "uv", "package_indexes"):
                found.append(f"{label} changed")
            else:
                found.append(f"{label} changed: {_short(old)} -> {_short(new)}")
        else:
            found.append(f"{label} changed: {_plain(old)} -> {_plain(new)}")
    return found or [fallback]


def _label_order(key: str) -> tuple[int, str]:
    order = list(_LABELS)
    return (order.index(key) if key in order else len(order), key)


def _plain(value: Any) -> str:
    """A recorded setting in words: on/off for flags, 'none' when unset, else quoted."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return repr(value)


def _short(value: Any) -> str:
    return "[" + ", ".join(map(str, value)) + "]" if isinstance(value, list) else repr(value)


# ---------------------------------------------------------------- locking


def lock_layer(
    spec: StackSpec,
    layer: LayerSpec,
    options: LockOptions | None,
    *,
    python: Path,
    work_dir: Path,
    reset: bool = False,
) -> LockMeta:
    """Resolve a layer with uv and write its pylock, metadata and summary (only if changed)."""
    given = options or LockOptions()
    from stacks.lock import pylock as pl
    from stacks.lock.uv_project import MissingWheelsError, resolve, uv_project

    paths = lock_paths(spec, layer)
    in_the_way = folders_in_the_way(paths)
    if in_the_way:
        raise folders_in_the_way_error(layer, in_the_way)
    _require_lower_locks(spec, layer, given)
    options = layer_options(spec, layer, given)
    inputs = lock_inputs(spec, layer, options)
    exclude_newer = effective_exclude_newer(spec, options)
    # Lower layers in constraint priority: the runtime first, then frameworks in sys.path order.
    lower = (layer.runtime, *layer.linearised) if layer.dependencies else ()
    pins = [pin for env in lower for pin in pl.lower_pins(_read_pylock(spec, env), env)]
    project = uv_project(
        spec,
        layer,
        constraints=pl.constraints(pins),
        exclude_newer=exclude_newer,
        index_url=options.index_url,
        no_index=options.no_index,
        local_wheels=options.local_wheels,
    )
    previous = _previous_pins(paths.pylock)
    scope = pl.PlatformScope(layer.platforms, layer.python_version)

    def resolve_with(extra: Sequence[str]) -> str:
        return resolve(
            project.with_constraints(extra) if extra else project,
            work_dir=work_dir,
            python=python,
            env_name=layer.env_name,
            reset=reset,
            seed=previous,
        )

    reference = _locked_reference(spec, layer, given)
    try:
        if reference is None:
            exported = resolve_with(())
        else:
            lower_names = {normalise_package(pin.name) for pin in pins}
            exported = resolve_alike(
                resolve_with, _read_pylock(spec, reference.env_name), lower_names
            )
    except MissingWheelsError as failure:
        raise _wheels_per_platform(failure, layer, scope, pins, work_dir, paths) from None
    result = pl.layer_pylock(
        pl.parse_pylock(exported),
        scope=scope,
        lower=pins,
        source_dir=work_dir,
        pylock_dir=paths.folder,
    )
    missing = pl.missing_wheels(
        result, scope, linux_target=layer.linux_target, macosx_target=layer.macosx_target
    )
    if missing:
        message, hint = pl.describe_missing(layer.env_name, missing, layer.platforms)
        raise LockError(message, hint=hint)
    content = pl.render_pylock(result, layer.env_name)
    meta = _next_meta(read_lock_meta(spec, layer), content, inputs, layer, exclude_newer)
    if layer.variant is not None:
        record = _variant_record(spec, layer, reference, result, pins)
        recorded = dict(meta.lower_locks)
        first = variant_reference(spec, layer)
        if reference is None and first is not None:
            recorded.pop(first.env_name, None)  # not followed: it had no valid lock yet
        meta = replace(meta, variants=record, lower_locks=recorded)
    summary = pl.render_summary(result, layer.env_name, paths.pylock.name)
    atomic.write_if_changed(paths.pylock, content)
    atomic.write_if_changed(paths.summary, summary.encode("utf-8"))
    meta_text = json.dumps(meta.to_json(), indent=2, sort_keys=True) + "\n"
    atomic.write_if_changed(paths.meta, meta_text.encode("utf-8"))  # last: it validates the rest
    return meta


def _wheels_per_platform(
    failure: MissingWheelsError,
    layer: LayerSpec,
    scope: PlatformScope,
    pins: list[LowerPin],
    work_dir: Path,
    paths: LockPaths,
) -> LockError:
    """uv's missing-wheels failure, naming each package and the platforms it has no wheel for."""
    from stacks.lock import pylock as pl

    if failure.universal is None:
        return failure
    result = pl.layer_pylock(
        pl.parse_pylock(failure.universal),
        scope=scope,
        lower=pins,
        source_dir=work_dir / "probe" / "universal",
        pylock_dir=paths.folder,
    )
    missing = pl.missing_wheels(
        result, scope, linux_target=layer.linux_target, macosx_target=layer.macosx_target
    )
    if not missing:
        return failure
    message, hint = pl.describe_missing(layer.env_name, missing, layer.platforms)
    return LockError(message, hint=hint)


def _locked_reference(spec: StackSpec, layer: LayerSpec, options: LockOptions) -> LayerSpec | None:
    """The variant `layer` is locked alike with, if it has a valid lock to follow."""
    reference = variant_reference(spec, layer)
    if reference is None or not lock_state(spec, reference, options).valid:
        return None
    return reference


def _variant_record(
    spec: StackSpec,
    layer: LayerSpec,
    reference: LayerSpec | None,
    result: Pylock,
    pins: list[LowerPin],
) -> dict[str, Any]:
    """The lock metadata's `variants` entry: the variant, and how it differs from the first one."""
    from stacks.lock import pylock as pl

    record: dict[str, Any] = {"variant": layer.variant}
    if reference is None:
        return record
    lower = (reference.runtime, *reference.linearised)
    reference_pins = [p for env in lower for p in pl.lower_pins(_read_pylock(spec, env), env)]
    differences = variant_differences(
        layer, reference, result, _read_pylock(spec, reference.env_name), pins, reference_pins
    )
    record["locked_alike_with"] = reference.env_name
    record["differences"] = [d.to_json() for d in differences]
    return record


def _require_lower_locks(spec: StackSpec, layer: LayerSpec, options: LockOptions) -> None:
    """Refuse to lock above a lower layer whose lock is missing or out of date."""
    for env in layer.dependencies:
        state = lock_state(spec, spec.layer(env), options)
        if not state.valid:
            raise LockError(
                f"cannot lock layer '{layer.env_name}': lower layer '{env}' has no valid lock "
                f"({'; '.join(state.reasons)})",
                hint=f"lock it first: `stacks lock {spec.path} --include {env}`",
            )


def _read_pylock(spec: StackSpec, env: str) -> Any:
    from stacks.lock.pylock import parse_pylock

    return parse_pylock(lock_paths(spec, spec.layer(env)).pylock.read_text(encoding="utf-8"))


def _previous_pins(pylock: Path) -> list[str]:
    """The layer's own pins in its committed pylock (empty if there is none or it is unreadable)."""
    from stacks.lock.pylock import parse_pylock

    try:
        previous = parse_pylock(pylock.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [p.requirement() for p in previous.packages if not p.shared]


def _next_meta(
    previous: LockMeta | None,
    content: bytes,
    inputs: LockInputs,
    layer: LayerSpec,
    exclude_newer: str | None,
) -> LockMeta:
    """The metadata for new lock content: version and time kept when nothing changed."""
    import hashlib  # loading OpenSSL costs a no-op ~3 ms: only when a lock is written

    lock_hash = hash_bytes(content)
    fixed_time = lock_time_of(exclude_newer)
    kept_venvstacks_hash = None
    if previous is not None and previous.written_by == "venvstacks":
        # stacks renders another file for the same resolution: compare what venvstacks hashed.
        from stacks.lock import venvstacks_meta as vs

        same = vs.content_hash(content.decode("utf-8")) == previous.requirements_hash
        kept_venvstacks_hash = previous.requirements_hash if same else None
        version_changed = layer.versioned and (
            previous.version_inputs_hash not in vs.version_inputs_hashes(layer)
        )
    else:
        same = previous is not None and previous.lock_hash == lock_hash
        if same and previous is not None:
            kept_venvstacks_hash = previous.venvstacks_requirements_hash
        version_changed = previous is not None and (
            layer.versioned and previous.version_inputs_hash != inputs.version_inputs_hash
        )
    if previous is None:
        version, locked_at = 1, fixed_time or _now()
    elif not same:
        version, locked_at = previous.lock_version + 1, fixed_time or _now()
    else:
        version, locked_at = previous.lock_version, previous.locked_at
        if version_changed:
            version += 1  # its deployed name follows its modules and versioned lower layers
        if fixed_time is not None and _is_later(locked_at, fixed_time):
            locked_at = fixed_time  # nothing in the lock can be newer than exclude-newer
    return LockMeta(
        lock_version=version,
        locked_at=locked_at,
        requirements_hash="sha256:" + hashlib.sha256(content).hexdigest(),
        lock_hash=lock_hash,
        lock_input_hash=inputs.lock_input_hash,
        other_inputs_hash=inputs.other_inputs_hash,
        version_inputs_hash=inputs.version_inputs_hash,
        lower_locks={env: digest for env, digest in inputs.lower_locks.items() if digest},
        inputs=inputs.readable(),
        venvstacks_requirements_hash=kept_venvstacks_hash,
    )


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def _is_later(first: str, second: str) -> bool:
    try:
        return datetime.datetime.fromisoformat(first) > datetime.datetime.fromisoformat(second)
    except ValueError:
        return True
