"""Choosing layers by name pattern (`--include`), with what they need and what needs them."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from stacks.spec.model import LayerSpec, StackSpec


def select_layers(
    spec: StackSpec, patterns: Sequence[str], *, with_dependents: bool = True
) -> tuple[tuple[LayerSpec, ...], list[str]]:
    """Layers matching fnmatch `patterns`, plus what they need (and, optionally, what needs them).

    Returns the selection in definition order and the patterns that matched nothing.
    """
    if not patterns:
        return spec.layers, []
    matched = {
        layer.env_name
        for layer in spec.layers
        if any(fnmatchcase(layer.env_name, p) for p in patterns)
    }
    unmatched = [
        p for p in patterns if not any(fnmatchcase(layer.env_name, p) for layer in spec.layers)
    ]
    chosen = set(matched)
    for env_name in matched:
        chosen.update(spec.layer(env_name).dependencies)
    if with_dependents:
        # One pass over the layers, not one per match: a wide --include on a deep stack
        # would otherwise look at every layer's dependencies once per matched layer.
        chosen.update(
            layer.env_name for layer in spec.layers if not matched.isdisjoint(layer.dependencies)
        )
    return tuple(layer for layer in spec.layers if layer.env_name in chosen), unmatched
