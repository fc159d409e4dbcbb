"""`stacks show`: the layers of a stack as a tree or as JSON, with their lock status."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from stacks.cli.context import context_from_args, load_stack, selected_layers

if TYPE_CHECKING:
    from stacks.lock.metadata import LockOptions
    from stacks.lock.variants import VariantDifference
    from stacks.spec import LayerSpec, StackSpec


def cmd_show(args: argparse.Namespace) -> int:
    """`stacks show`: print the selected layers as a tree, or as JSON."""
    from stacks.spec import LayerKind

    spec = load_stack(args)
    layers = selected_layers(args, spec, with_dependents=True)
    status = _lock_status(spec, layers, context_from_args(args, spec).lock_options)
    differences = _variant_differences(spec, layers, status)
    if args.json:
        document: dict[str, Any] = {"spec_name": spec.name}
        for kind in LayerKind:
            document[kind.table] = [
                _layer_json(spec, layer, status, differences)
                for layer in layers
                if layer.kind is kind
            ]
        if spec.variants:
            document["variants"] = list(spec.variants)
        print(json.dumps(document, indent=2))
        return 0
    for block in _render_tree(spec, layers, status, differences):
        sys.stdout.write(block + "\n")
    return 0


def _lock_status(
    spec: StackSpec, layers: Sequence[LayerSpec], options: LockOptions
) -> dict[str, tuple[bool, int | None]]:
    """For each layer and its dependencies: (has a valid lock, lock version if it is valid).

    A stale lock's version is not the one the layer will deploy as, so it is not shown:
    a versioned layer without a valid lock shows as `<env>@???`, as venvstacks does.
    """
    from stacks.lock.locking import lock_state

    names = {layer.env_name for layer in layers}
    for layer in layers:
        names.update(layer.dependencies)
    status = {}
    for name in names:
        state = lock_state(spec, spec.layer(name), options)
        version = state.meta.lock_version if state.valid and state.meta else None
        status[name] = (state.valid, version)
    return status


def _variant_differences(
    spec: StackSpec, layers: Sequence[LayerSpec], status: dict[str, tuple[bool, int | None]]
) -> dict[str, tuple[str, list[VariantDifference]]]:
    """For variant layers with a valid lock: the variant locked alike with, and what differs."""
    from stacks.lock.metadata import read_lock_meta
    from stacks.lock.variants import VariantDifference

    found = {}
    for layer in layers:
        meta = read_lock_meta(spec, layer) if layer.variant and status[layer.env_name][0] else None
        record = (meta.variants or {}) if meta else {}
        if "locked_alike_with" not in record:
            continue
        try:
            listed = [VariantDifference.from_json(d) for d in record.get("differences", ())]
        except (KeyError, TypeError, AttributeError, ValueError):
            continue  # a hand-edited record: nothing to say about it
        found[layer.env_name] = (str(record["locked_alike_with"]), listed)
    return found


def _layer_json(
    spec: StackSpec,
    layer: LayerSpec,
    status: dict[str, tuple[bool, int | None]],
    differences: dict[str, tuple[str, list[VariantDifference]]],
) -> dict[str, Any]:
    def ref(env_name: str) -> dict[str, Any]:
        valid, version = status[env_name]
        return {
            "name": env_name,
            "install_target": spec.layer(env_name).deployed_name(version),
            "has_valid_lock": valid,
        }

    entry = ref(layer.env_name)
    if layer.variant is not None:
        entry["variant"], entry["variant_of"] = layer.variant, layer.variant_of
    if layer.env_name in differences:
        alike, listed = differences[layer.env_name]
        entry["locked_alike_with"] = alike
        entry["variant_differences"] = [d.to_json() for d in listed]
    entry["platforms"] = list(layer.platforms)
    entry["dependencies"] = [ref(dep) for dep in layer.dependencies]
    return entry


def _render_tree(
    spec: StackSpec,
    layers: Sequence[LayerSpec],
    status: dict[str, tuple[bool, int | None]],
    differences: dict[str, tuple[str, list[VariantDifference]]],
) -> Iterator[str]:
    """The `show` tree, a layer at a time (a deep stack's tree is long: it is not built whole)."""
    from stacks.spec import LayerKind

    def label(env_name: str) -> str:
        valid, version = status[env_name]
        deployed = spec.layer(env_name).deployed_name(version)
        text = env_name if deployed == env_name else f"{env_name} -> {deployed}"
        return text if valid else f"*{text}"

    labels = {env_name: label(env_name) for env_name in status}

    tee, corner, pipe, blank = _tree_glyphs()
    yield spec.name
    groups = [(kind, [layer for layer in layers if layer.kind is kind]) for kind in LayerKind]
    groups = [(kind, members) for kind, members in groups if members]
    for group_index, (kind, members) in enumerate(groups):
        last_group = group_index == len(groups) - 1
        yield (corner if last_group else tee) + kind.table
        indent = blank if last_group else pipe
        for index, layer in enumerate(members):
            last = index == len(members) - 1
            head = indent + (corner if last else tee) + labels[layer.env_name]
            inner = indent + (blank if last else pipe)
            if layer.variant is not None:
                head += f"  [variant {layer.variant} of {layer.variant_of}]"
            if layer.env_name in differences:
                alike, listed = differences[layer.env_name]
                lines = [f"differs from {alike}: {d.describe()}" for d in listed]
                head += "".join(f"\n{inner}{pipe}{line}" for line in lines)
            dependencies = layer.dependencies
            if not dependencies:
                yield head
                continue
            # One join per layer: a deep layer has thousands of dependency lines.
            between = "\n" + inner + tee
            above = between.join(map(labels.__getitem__, dependencies[:-1]))
            yield (
                head
                + (between + above if above else "")
                + "\n"
                + inner
                + corner
                + labels[dependencies[-1]]
            )
    if any(not status[layer.env_name][0] for layer in layers):
        yield "(* = no valid lock: run `stacks lock`)"


def _tree_glyphs() -> tuple[str, str, str, str]:
    """Branch, last branch, pipe and blank prefixes, in ASCII when stdout cannot encode box lines."""
    try:
        "├└│".encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "|-- ", "`-- ", "|   ", "    "
    return "├── ", "└── ", "│   ", "    "
