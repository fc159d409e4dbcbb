"""The publish metadata: the stack manifest and one metadata file per layer, under `__stacks__/`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stacks import atomic

METADATA_DIR = "__stacks__"


def write_stack_metadata(
    output_dir: Path, layers: Sequence[Mapping[str, Any]], *, platform: str | None = None
) -> Path:
    """Write `__stacks__/stack[-platform].json` and one `env_metadata/` file per layer."""
    categories: dict[str, list[Mapping[str, Any]]] = {
        "runtimes": [],
        "frameworks": [],
        "applications": [],
    }
    plural = {"runtime": "runtimes", "framework": "frameworks", "application": "applications"}
    suffix = f"-{platform}" if platform else ""
    folder = output_dir / METADATA_DIR
    for layer in layers:
        categories[plural[layer["kind"]]].append(layer)
        atomic.write_json(folder / "env_metadata" / f"{layer['layer_name']}{suffix}.json", layer)
    manifest = folder / f"stack{suffix}.json"
    atomic.write_json(manifest, {"layers": categories, **variant_groups(categories)})
    return manifest


def variant_groups(layers: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """The manifest's `variants` key: each variant's layer names (none without variants).

    A stacks addition beside venvstacks' `layers`; a layer in no group is shared by all.
    """
    groups: dict[str, list[str]] = {}
    for records in layers.values():
        for record in records:
            if isinstance(record.get("variant"), str):
                groups.setdefault(record["variant"], []).append(str(record["layer_name"]))
    return {"variants": groups} if groups else {}
