"""Locking the variants of a layer alike: the first variant's pins steer the others.

`app-chat-cuda` resolves with `app-chat-cpu`'s versions of its own packages as constraints:
all at once if its lower layers allow that, else package by package (one more uv run per
package that came out different), so a package differs only where it has to. What still
differs is recorded with a reason in the lock metadata, and `stacks show` says it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stacks.spec import LayerSpec, StackSpec, normalise_package

if TYPE_CHECKING:
    from stacks.lock.pylock import LowerPin, Pylock


def variant_reference(spec: StackSpec, layer: LayerSpec) -> LayerSpec | None:
    """The layer the variants of `layer` are locked alike with: its first variant (None for it)."""
    first = spec.first_variant(layer)
    return None if first is None or first.env_name == layer.env_name else first


@dataclass(frozen=True)
class VariantDifference:
    """A package of a layer whose versions differ between two of its variants, and why."""

    package: str
    versions: Mapping[str, tuple[str, ...]]  # variant -> its versions (none: not installed)
    reason: str

    def to_json(self) -> dict[str, Any]:
        """The form recorded in the lock metadata."""
        return {
            "package": self.package,
            "versions": {variant: list(v) for variant, v in self.versions.items()},
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VariantDifference:
        """Inverse of to_json; raises KeyError/TypeError/AttributeError on a malformed entry."""
        versions = {str(k): tuple(map(str, v)) for k, v in dict(data["versions"]).items()}
        return cls(str(data["package"]), versions, str(data["reason"]))

    def describe(self) -> str:
        """One line: the package, each variant's versions, and why they differ."""
        shown = ", ".join(
            f"{', '.join(versions) or 'not installed'} in {variant}"
            for variant, versions in self.versions.items()
        )
        return f"{self.package}: {shown} ({self.reason})"


def own_requirements(pylock: Pylock) -> dict[str, list[str]]:
    """The layer's own packages: normalised name -> their `name==version ; marker` pins."""
    pins: dict[str, list[str]] = {}
    for package in pylock.packages:
        if not package.shared:
            pins.setdefault(normalise_package(package.name), []).append(package.requirement())
    return pins


def _versions(pylock: Pylock) -> dict[str, tuple[str, ...]]:
    """The layer's own packages: normalised name -> their versions."""
    found: dict[str, set[str]] = {}
    for package in pylock.packages:
        if not package.shared:
            found.setdefault(normalise_package(package.name), set()).add(package.version)
    return {name: tuple(sorted(v)) for name, v in found.items()}


def resolve_alike(
    resolve_with: Callable[[Sequence[str]], str], reference: Pylock, lower_names: set[str]
) -> str:
    """Resolve with the reference variant's versions wherever the lower layers allow them."""
    from stacks.lock.pylock import parse_pylock
    from stacks.lock.uv_project import MissingWheelsError, NoSolutionError

    # The reference's versions may be impossible here, or lack wheels for this variant's platforms.
    cannot = (NoSolutionError, MissingWheelsError)

    wanted = {n: pins for n, pins in own_requirements(reference).items() if n not in lower_names}
    if not wanted:
        return resolve_with([])
    try:
        return resolve_with([pin for pins in wanted.values() for pin in pins])
    except cannot:
        pass  # some must differ: find out which, one package at a time
    best = resolve_with([])
    free = _versions(parse_pylock(best))
    reference_versions = _versions(reference)
    kept = [name for name in wanted if free.get(name) == reference_versions.get(name)]
    constraints = [pin for name in kept for pin in wanted[name]]
    for name in sorted(n for n in wanted if n not in kept and n in free):
        try:
            best = resolve_with([*constraints, *wanted[name]])
        except cannot:
            continue
        constraints += wanted[name]
    return best


def variant_differences(
    layer: LayerSpec,
    reference: LayerSpec,
    result: Pylock,
    reference_lock: Pylock,
    lower: Sequence[LowerPin],
    reference_lower: Sequence[LowerPin],
) -> list[VariantDifference]:
    """The packages of `layer` whose versions differ from its reference variant's, with why."""
    mine, theirs = _versions(result), _versions(reference_lock)
    my_indexes, their_indexes = _indexes(result), _indexes(reference_lock)
    my_lower, their_lower = _lower_versions(lower), _lower_versions(reference_lower)
    variant, other = layer.variant or "", reference.variant or ""
    own_requirements_changed = _requirements_of(layer, reference)
    found = []
    for name in sorted(set(mine) | set(theirs)):
        if mine.get(name) == theirs.get(name):
            continue
        if name not in mine and name in my_lower:
            continue  # the lower layers install it: their own lock records the difference
        if name not in theirs and name in their_lower:
            continue
        if name not in mine or name not in theirs:
            reason = f"only the {variant if name in mine else other} variant needs it"
        elif my_indexes.get(name) != their_indexes.get(name):
            reason = f"the {variant} variant installs it from another package index"
        elif name in own_requirements_changed:
            reason = f"the {variant} variant requires {own_requirements_changed[name]}"
        else:
            reason = f"the {variant} variant's lower layers do not allow {other}'s version"
            changed = [
                f"{n} {', '.join(v)} ({other}: {', '.join(their_lower.get(n, ())) or 'none'})"
                for n, v in sorted(my_lower.items())
                if their_lower.get(n) != v
            ]
            if changed:
                more = f", +{len(changed) - 3} more" if len(changed) > 3 else ""
                reason += f"; they install {', '.join(changed[:3])}{more}"
        versions = {other: theirs.get(name, ()), variant: mine.get(name, ())}
        found.append(VariantDifference(name, versions, reason))
    return found


def _requirements_of(layer: LayerSpec, reference: LayerSpec) -> dict[str, str]:
    """The requirements `layer` has and its reference variant has not: normalised name -> it."""
    from packaging.requirements import Requirement

    return {
        normalise_package(Requirement(text).name): text
        for text in layer.requirements
        if text not in reference.requirements
    }


def _indexes(pylock: Pylock) -> dict[str, frozenset[str | None]]:
    found: dict[str, set[str | None]] = {}
    for package in pylock.packages:
        if not package.shared:
            found.setdefault(normalise_package(package.name), set()).add(package.index)
    return {name: frozenset(v) for name, v in found.items()}


def _lower_versions(pins: Sequence[LowerPin]) -> dict[str, tuple[str, ...]]:
    found: dict[str, set[str]] = {}
    for pin in pins:
        found.setdefault(normalise_package(pin.name), set()).add(pin.version)
    return {name: tuple(sorted(v)) for name, v in found.items()}
