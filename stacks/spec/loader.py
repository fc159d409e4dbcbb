"""Loading a stack spec: read the file, check every part of it, freeze it into a StackSpec.

The checks live in `settings` ([tool] tables), `layers` and `fields` (each
layer on its own) and `graph` (across layers); every problem goes to one SpecReport.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stacks.errors import SpecError
from stacks.spec.document import read_document
from stacks.spec.fields import LayerDraft, macosx_default
from stacks.spec.graph import LayerGraph, ResolvedLayer
from stacks.spec.layers import LayerReader
from stacks.spec.model import LayerKind, LayerSpec, StackSpec
from stacks.spec.report import SpecReport, did_you_mean, show, type_name
from stacks.spec.settings import load_settings, load_uv_config
from stacks.spec.variants import expand_variants

_TOP_LEVEL_LAYERS = ("runtimes", "frameworks", "applications")
_TOP_LEVEL_KNOWN = (*_TOP_LEVEL_LAYERS, "tool")


def load_spec(
    path: str | os.PathLike[str],
    *,
    runtime_source: str | None = None,
    python_mirror: str | None = None,
    runtime_any_patch: bool | None = None,
    environ: Mapping[str, str] | None = None,
) -> StackSpec:
    """Load, validate and freeze the stack spec at `path`; raise SpecError listing every problem."""
    env = os.environ if environ is None else environ
    spec_path = Path(os.path.abspath(os.fspath(path)))
    document = read_document(spec_path)
    report = SpecReport(str(spec_path))
    tool = _top_level(report, document)
    uv_config, index_names = load_uv_config(report, spec_path.parent, tool)
    settings = load_settings(report, tool, runtime_source, python_mirror, env, runtime_any_patch)
    reader = LayerReader(report, spec_path.parent, index_names, macosx_default(env))
    drafts = expand_variants(report, reader.read_layers(document, settings), reader.dropped)
    graph = LayerGraph(report, reader.dropped)
    resolved = graph.resolve(drafts)
    graph.check_macosx_default(drafts, resolved, env)
    graph.check_windows_names(drafts, resolved)
    if report.problems:
        raise SpecError(report.problems)
    layers, disabled = _freeze_layers(drafts, resolved)
    return StackSpec(
        path=spec_path,
        layers=tuple(layers),
        disabled=tuple(disabled),
        uv_config=uv_config,
        settings=settings,
        warnings=tuple(report.warnings),
        _by_name={layer.env_name: layer for layer in layers},
        _first_variants=_first_variants(layers),
    )


def _first_variants(layers: list[LayerSpec]) -> dict[str, str]:
    """For each expanded layer: the env name of its first enabled variant."""
    first: dict[str, str] = {}
    for layer in layers:
        if layer.variant_of is not None:
            first.setdefault(layer.variant_of, layer.env_name)
    return first


def _top_level(report: SpecReport, document: dict[str, Any]) -> dict[str, Any]:
    """The document's [tool] table, after warning about keys that look like misspelt ones."""
    for key in document:
        if key in _TOP_LEVEL_KNOWN:
            continue
        layers = did_you_mean(str(key), _TOP_LEVEL_LAYERS)
        if layers:
            # A misspelt layer table would silently leave its layers out of the stack.
            report.problem(None, str(key), "unknown top-level table", layers)
            continue
        hint = did_you_mean(str(key), _TOP_LEVEL_KNOWN)
        if hint:
            report.warn(f"top-level key {show(key)} is ignored ({hint})")
    tool = document.get("tool", {})
    if not isinstance(tool, dict):
        report.problem(None, "tool", f"must be a table, not {type_name(tool)}")
        tool = {}
    for key in tool:
        # Other tools' tables are no business of ours; a near-miss of ours probably is.
        if key != "stacks" and difflib.get_close_matches(str(key).lower(), ["stacks"], 1, 0.8):
            report.warn(f"[tool.{key}] is ignored (did you mean [tool.stacks]?)")
    return tool


def _freeze_layers(
    drafts: list[LayerDraft], resolved: dict[str, ResolvedLayer]
) -> tuple[list[LayerSpec], list[str]]:
    """The enabled layers, frozen, and the env names of the layers left with no platform."""
    layers: list[LayerSpec] = []
    disabled: list[str] = []
    drafts = [d for d in drafts if d.kept]
    by_env = {d.env_name: d for d in drafts}
    for draft in drafts:
        info = resolved[draft.env_name]
        if not info.platforms:
            disabled.append(draft.env_name)
            continue
        layers.append(
            LayerSpec(
                kind=draft.kind,
                name=draft.name,
                env_name=draft.env_name,
                requirements=draft.requirements,
                platforms=info.platforms,
                versioned=draft.versioned,
                linux_target=draft.linux_target,
                macosx_target=draft.macosx_target,
                dynlib_exclude=draft.dynlib_exclude,
                package_indexes=tuple(sorted(info.package_indexes.items())),
                priority_indexes=draft.priority_indexes,
                runtime=info.runtime,
                frameworks=tuple(
                    LayerKind.FRAMEWORK.prefix + ref for ref in draft.framework_refs or ()
                ),
                linearised=info.linearised,
                python_implementation=by_env[info.runtime].python_implementation or "",
                source=draft.source,
                launch_module=draft.launch_module,
                support_modules=draft.support_modules,
                variant=draft.variant,
                variant_of=draft.variant_of,
            )
        )
    return layers, disabled
