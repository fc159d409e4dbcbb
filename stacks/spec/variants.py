"""Hardware variants: a framework's `variants` table, and the expansion of every layer above it.

A framework with `variants = {cpu = {...}, cu128 = {...}}` becomes one layer per variant
(`framework-torch-cpu`, `framework-torch-cu128`), and every framework and application above
it is copied once per variant on top of that variant's layers (`app-chat-cpu`, ...). The
expansion happens on the drafts, before cross-layer resolution, so everything downstream
sees plain layers that only carry their `variant` and the env name they were made from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from stacks.spec.fields import FieldReader, LayerDraft, VariantFields
from stacks.spec.model import LayerKind
from stacks.spec.names import name_too_long
from stacks.spec.report import SpecReport, did_you_mean, show, type_name

VARIANT_FIELDS = (
    "requirements",
    "package_indexes",
    "priority_indexes",
    "index_overrides",
    "platforms",
    "dynlib_exclude",
)
# A variant name ends every expanded env name: no '@' (deployed names use `<env>@N`).
_VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,39}")
_EXAMPLE = '[frameworks.variants.cpu]\npackage_indexes = { torch = "pytorch-cpu" }'


class _VariantReport(SpecReport):
    """A report that names fields as `variants.<name>.<field>`, into its parent's lists."""

    def __init__(self, parent: SpecReport, prefix: str) -> None:
        super().__init__(parent.shown, parent.problems, parent.warnings)
        self.prefix = prefix

    def problem(
        self, layer: str | None, fld: str | None, message: str, hint: str | None = None
    ) -> None:
        """Record a problem with a field of one variant."""
        super().problem(layer, f"{self.prefix}.{fld}" if fld else self.prefix, message, hint)


def read_variants(reader: FieldReader, draft: LayerDraft, value: Any) -> None:
    """Check a framework's `variants` table into `draft.variants`, reporting every problem."""
    report, env = reader.report, draft.env_name
    if not isinstance(value, dict) or not value:
        what = "an empty table" if value == {} else type_name(value)
        report.problem(
            env,
            "variants",
            f"must be a table of variant names to their fields, not {what}",
            f"e.g.\n{_EXAMPLE}",
        )
        draft.broken = True
        return
    variants: dict[str, VariantFields] = {}
    for name, fields in value.items():
        if not isinstance(name, str) or not _VARIANT_NAME.fullmatch(name):
            report.problem(
                env,
                "variants",
                f"variant name {show(name)} cannot end a layer name",
                "use up to 40 letters, digits and '_', '.', '+', '-' (starting with a letter"
                " or digit), e.g. 'cpu' or 'cu128'",
            )
            draft.broken = True
            continue
        if not isinstance(fields, dict):
            report.problem(
                env,
                f"variants.{name}",
                f"must be a table of fields, not {type_name(fields)}",
                f"e.g. [frameworks.variants.{name}] with `requirements`, `package_indexes`, ..."
                " (an empty table adds nothing)",
            )
            draft.broken = True
            continue
        variants[name] = _variant_fields(reader, draft, name, fields)
    if variants:
        draft.variants = variants


def _variant_fields(
    reader: FieldReader, draft: LayerDraft, name: str, fields: dict[str, Any]
) -> VariantFields:
    """One variant's fields, checked like the layer's own (problems name `variants.<name>.<field>`)."""
    report = _VariantReport(reader.report, f"variants.{name}")
    sub = FieldReader(report, reader.index_names, reader.macosx_default)
    scratch = LayerDraft(kind=draft.kind, name=draft.name, env_name=draft.env_name)
    for key in fields:
        if key not in VARIANT_FIELDS:
            hint = did_you_mean(str(key), VARIANT_FIELDS) or (
                f"a variant may set {', '.join(VARIANT_FIELDS)}"
            )
            report.problem(draft.env_name, str(key), "unknown field", hint)
    requirements, _ = sub.string_list(scratch, fields, "requirements")
    if requirements is not None:
        scratch.requirements = sub.requirement_list(draft.env_name, requirements)
    sub.platform_list(scratch, fields)
    if scratch.platforms is not None and draft.platforms is not None:
        extra = [p for p in scratch.platforms if p not in draft.platforms]
        if extra:
            report.problem(
                draft.env_name,
                "platforms",
                f"lists platforms the framework does not target ({', '.join(extra)})",
                f"a variant's platforms are a subset of the framework's: {', '.join(draft.platforms) or 'none'}",
            )
    excludes, _ = sub.string_list(scratch, fields, "dynlib_exclude")
    sub.index_fields(scratch, fields)
    if scratch.broken:
        draft.broken = True
    return VariantFields(
        requirements=scratch.requirements,
        platforms=scratch.platforms,
        dynlib_exclude=excludes or (),
        package_indexes=scratch.package_indexes,
        priority_indexes=scratch.priority_indexes,
        index_overrides=scratch.index_overrides,
    )


@dataclass(frozen=True)
class _Axis:
    """The variants a framework comes in, where they were declared, and their platform limits."""

    names: tuple[str, ...]
    declared_by: str  # env name of the framework whose `variants` table names them
    platforms: dict[str, frozenset[str] | None]  # per variant: the platforms it is limited to


def expand_variants(
    report: SpecReport, drafts: list[LayerDraft], dropped: dict[LayerKind, set[str]]
) -> list[LayerDraft]:
    """The drafts with every variant framework, and each layer above one, copied per variant."""
    if not any(d.variants for d in drafts):
        return drafts
    taken = {d.env_name for d in drafts if d.kept}
    axes: dict[str, _Axis] = {}  # framework name -> its variants
    expanded: list[LayerDraft] = []
    for draft in drafts:
        if draft.kind is LayerKind.RUNTIME or not draft.kept:
            expanded.append(draft)
            continue
        axis = _axis_of(report, draft, axes)
        if axis is None:
            if _on_two_axes(draft, axes):
                dropped[draft.kind].add(draft.name)
                draft.kept, draft.broken, draft.framework_refs = False, True, ()
            expanded.append(draft)
            continue
        limits: dict[str, frozenset[str] | None] = {}
        for variant in axis.names:
            copy = _copy_for(draft, variant, axes)
            limit = axis.platforms.get(variant)
            own = (draft.variants or {}).get(variant)
            if own is not None and own.platforms is not None:
                limit = (
                    frozenset(own.platforms) & limit
                    if limit is not None
                    else frozenset(own.platforms)
                )
            limits[variant] = limit
            if own is None and limit is not None and copy.platforms is not None:
                # A layer that names its platforms gets only those its variant targets.
                copy.platforms = tuple(p for p in copy.platforms if p in limit)
            if copy.env_name in taken:
                report.problem(
                    copy.env_name,
                    "name",
                    f"variant '{variant}' of {draft.kind.value} '{draft.name}' is named"
                    f" '{copy.env_name}', which another {draft.kind.value} already is",
                    "rename the variant or the other layer",
                )
                copy.kept, copy.broken = False, True
                dropped[draft.kind].add(copy.name)
            elif name_too_long(report, draft.kind, copy.env_name, copy.name):
                copy.kept, copy.broken = False, True
                dropped[draft.kind].add(copy.name)
            taken.add(copy.env_name)
            expanded.append(copy)
        if draft.kind is LayerKind.FRAMEWORK:
            axes[draft.name] = _Axis(axis.names, axis.declared_by, limits)
    return expanded


def _axis_of(report: SpecReport, draft: LayerDraft, axes: dict[str, _Axis]) -> _Axis | None:
    """The variants a layer is expanded into (None: none, or a reported clash of two)."""
    sources: list[_Axis] = []
    for ref in draft.framework_refs or ():
        axis = axes.get(ref)
        if axis is not None and all(axis.declared_by != s.declared_by for s in sources):
            sources.append(axis)
    if draft.variants:
        sources.append(_Axis(tuple(draft.variants), draft.env_name, {}))
    if not sources:
        return None
    first = sources[0]
    clash = next((s for s in sources[1:] if set(s.names) != set(first.names)), None)
    if clash is not None:
        own = clash.declared_by == draft.env_name
        report.problem(
            draft.env_name,
            "variants" if own else "frameworks",
            f"is above two different variant frameworks: '{first.declared_by}' (variants"
            f" {', '.join(first.names)}) and '{clash.declared_by}' (variants"
            f" {', '.join(clash.names)})",
            "a stack has one variant axis: give both the same variant names (they then pair"
            " by name), or keep this layer above only one of them",
        )
        return None
    platforms: dict[str, frozenset[str] | None] = {}
    for name in first.names:
        limits = [s.platforms[name] for s in sources if s.platforms.get(name) is not None]
        platforms[name] = frozenset.intersection(*limits) if limits else None  # type: ignore[arg-type]
    return _Axis(first.names, first.declared_by, platforms)


def _on_two_axes(draft: LayerDraft, axes: dict[str, _Axis]) -> bool:
    """Whether a layer that was not expanded sits on variant frameworks (a reported clash)."""
    return bool(draft.variants) or any(ref in axes for ref in draft.framework_refs or ())


def _copy_for(draft: LayerDraft, variant: str, axes: dict[str, _Axis]) -> LayerDraft:
    """The layer as built in one variant: its name, its lower layers', and its variant's fields."""
    name = f"{draft.name}-{variant}"
    copy = replace(
        draft,
        name=name,
        env_name=draft.kind.prefix + name,
        framework_refs=tuple(
            f"{ref}-{variant}" if ref in axes else ref for ref in draft.framework_refs or ()
        )
        if draft.framework_refs is not None
        else None,
        package_indexes=dict(draft.package_indexes),
        index_overrides=dict(draft.index_overrides),
        variants=None,
        variant=variant,
        variant_of=draft.env_name,
    )
    own = (draft.variants or {}).get(variant)
    if own is not None:
        copy.requirements = (*draft.requirements, *own.requirements)
        if own.platforms is not None:
            copy.platforms = own.platforms
        copy.dynlib_exclude = (*draft.dynlib_exclude, *own.dynlib_exclude)
        copy.package_indexes.update(own.package_indexes)
        copy.priority_indexes = tuple(
            dict.fromkeys((*own.priority_indexes, *draft.priority_indexes))
        )
        copy.index_overrides.update(own.index_overrides)
    return copy
