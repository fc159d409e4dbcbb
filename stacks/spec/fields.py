"""The fields every layer has: requirements, platforms, targets, dynlib exclusions, indexes."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stacks.platforms import DEFAULT_GLIBC, DEFAULT_MACOSX, PLATFORMS
from stacks.spec.model import LayerKind, RuntimeSource, normalise_package
from stacks.spec.report import SpecReport, did_you_mean, show, type_name
from stacks.spec.settings import index_hint

_TABLE_FIELDS = {  # what the table maps, and an example
    "package_indexes": ("package names to index names", '{ torch = "pytorch-cpu" }'),
    "index_overrides": ("index names to index names", '{ pytorch-cpu = "pytorch-cu128" }'),
}
_LIST_EXAMPLES = {
    "requirements": "attrs>=23.1",
    "platforms": "linux_x86_64",
    "dynlib_exclude": "libfoo.so*",
    "priority_indexes": "<index name>",
    "frameworks": "<framework name>",
    "support_modules": "helpers/util.py",
}


@dataclass
class LayerDraft:
    """A layer's checked fields, before cross-layer resolution."""

    kind: LayerKind
    name: str
    env_name: str
    requirements: tuple[str, ...] = ()
    platforms: tuple[str, ...] | None = None
    versioned: bool = False
    linux_target: tuple[int, int] = DEFAULT_GLIBC
    macosx_target: tuple[int, int] = DEFAULT_MACOSX
    macosx_default: bool = True  # no macosx_target of its own: the environment's, else 13.0
    dynlib_exclude: tuple[str, ...] = ()
    package_indexes: dict[str, str] = field(default_factory=dict)
    priority_indexes: tuple[str, ...] = ()
    index_overrides: dict[str, str] = field(default_factory=dict)
    python_implementation: str | None = None
    source: RuntimeSource | None = None
    runtime_ref: str | None = None
    framework_refs: tuple[str, ...] | None = None
    launch_module: Path | None = None
    support_modules: tuple[Path, ...] = ()
    # False: left out after a problem of its own (unusable or duplicate name); its fields and
    # references are still checked, but no other layer can refer to it.
    kept: bool = True
    platforms_complete: bool = True  # False: some listed platforms were invalid (and dropped)
    broken: bool = False  # a problem makes cross-layer resolution pointless
    variants: dict[str, VariantFields] | None = None  # a framework's own `variants` table
    variant: str | None = None  # set on the layers a variant expansion made
    variant_of: str | None = None  # ... with the env name of the layer they were made from


@dataclass
class VariantFields:
    """The checked fields of one entry of a framework's `variants` table."""

    requirements: tuple[str, ...] = ()
    platforms: tuple[str, ...] | None = None
    dynlib_exclude: tuple[str, ...] = ()
    package_indexes: dict[str, str] = field(default_factory=dict)
    priority_indexes: tuple[str, ...] = ()
    index_overrides: dict[str, str] = field(default_factory=dict)


class FieldReader:
    """Checks the fields a layer table has whatever its kind, reporting every problem."""

    def __init__(
        self, report: SpecReport, index_names: set[str], macosx_default: tuple[int, int]
    ) -> None:
        self.report = report
        self.index_names = index_names
        self.macosx_default = macosx_default  # $MACOSX_DEPLOYMENT_TARGET, else 13.0

    def string_list(
        self, draft: LayerDraft, entry: dict[str, Any], key: str, *, required: bool = False
    ) -> tuple[tuple[str, ...] | None, bool]:
        """The strings of a list field (None if absent or not a list), and whether it was clean.

        Non-string items are reported and left out; the strings are still returned so that
        their own problems are reported at the same time.
        """
        if key not in entry:
            if required:
                self.report.problem(
                    draft.env_name,
                    key,
                    f"missing '{key}'",
                    f"add `{key} = []` if the layer needs none",
                )
            return None, not required
        value = entry[key]
        if not isinstance(value, list):
            self.report.problem(
                draft.env_name,
                key,
                f"must be an array of strings, not {type_name(value)}",
                f'e.g. {key} = ["{_LIST_EXAMPLES.get(key, "...")}"]'
                + (' (`["*"]` turns linking off)' if key == "dynlib_exclude" else ""),
            )
            return None, False
        wrong = [item for item in value if not isinstance(item, str)]
        if wrong:
            found = ", ".join(f"{type_name(item)} ({show(item)})" for item in wrong[:3])
            self.report.problem(
                draft.env_name,
                key,
                f"must contain only strings, found {found}{', ...' if len(wrong) > 3 else ''}",
                f'quote each entry, e.g. {key} = ["{_LIST_EXAMPLES.get(key, "...")}"]',
            )
        return tuple(item for item in value if isinstance(item, str)), not wrong

    def string_table(self, draft: LayerDraft, entry: dict[str, Any], key: str) -> dict[str, str]:
        """The string entries of a table field; each bad key or value is reported, by name."""
        what, example = _TABLE_FIELDS[key]
        value = entry.get(key, {})
        if not isinstance(value, dict):
            self.report.problem(
                draft.env_name,
                key,
                f"must be a table of {what}, not {type_name(value)}",
                f"e.g. {key} = {example}",
            )
            draft.broken = True
            return {}
        table = {}
        for name, index in value.items():
            if not isinstance(name, str):
                message = f"keys must be strings, found {type_name(name)} ({show(name)})"
            elif not isinstance(index, str):
                message = (
                    f"the value for {show(name)} must be an index name (a string),"
                    f" not {type_name(index)} ({show(index)})"
                )
            else:
                table[name] = index
                continue
            self.report.problem(draft.env_name, key, message, f"e.g. {key} = {example}")
            draft.broken = True
        return table

    def common_fields(self, draft: LayerDraft, entry: dict[str, Any]) -> None:
        """Check the fields every kind of layer has into `draft`."""
        env = draft.env_name
        requirements, _ = self.string_list(draft, entry, "requirements", required=True)
        if requirements is not None:
            draft.requirements = self.requirement_list(env, requirements)
        if "build_requirements" in entry:
            self.report.warn(
                f"layer '{env}': dropping legacy field 'build_requirements' (it is ignored)"
            )
        self.platform_list(draft, entry)
        versioned = entry.get("versioned", False)
        if not isinstance(versioned, bool):
            self.report.problem(
                env,
                "versioned",
                f"must be true or false, not {type_name(versioned)} ({show(versioned)})",
                "write `versioned = true` or `versioned = false`, without quotes",
            )
        else:
            draft.versioned = versioned
        if "linux_target" in entry:
            self._linux_target(draft, entry["linux_target"])
        draft.macosx_target = self.macosx_default
        if "macosx_target" in entry:
            draft.macosx_default = False
            target = entry["macosx_target"]
            ok_type = isinstance(target, str) or (
                isinstance(target, int) and not isinstance(target, bool) and 0 <= target < 10**6
            )
            parsed = parse_macosx(str(target)) if ok_type else None
            if parsed is None:
                # An unquoted 10.10 reads as the number 10.1: ask for a string instead.
                hint = (
                    'quote it: macosx_target = "13.0"'
                    if isinstance(target, float)
                    else 'use a macOS version, e.g. macosx_target = "13.0" or "14"'
                )
                self.report.problem(
                    env,
                    "macosx_target",
                    f"must be 'X' or 'X.Y' (e.g. '13.0'), not {show(target)}",
                    hint,
                )
            else:
                draft.macosx_target = parsed
        excludes, _ = self.string_list(draft, entry, "dynlib_exclude")
        if excludes is not None:
            draft.dynlib_exclude = excludes
        self.index_fields(draft, entry)

    def platform_list(self, draft: LayerDraft, entry: dict[str, Any]) -> None:
        """Check a `platforms` list into `draft` (absent: left as None, inherited)."""
        platforms, clean = self.string_list(draft, entry, "platforms")
        if not clean:
            draft.platforms_complete = False
        if platforms is None:
            return
        unknown = [p for p in platforms if p not in PLATFORMS]
        for p in unknown:
            hint = f"expected one of: {', '.join(PLATFORMS)}"
            close = did_you_mean(p, PLATFORMS)
            self.report.problem(
                draft.env_name,
                "platforms",
                f"invalid target platform {show(p)}",
                f"{close} ({hint})" if close else hint,
            )
        if unknown:
            draft.platforms_complete = False
        draft.platforms = tuple(p for p in PLATFORMS if p in platforms)

    def _linux_target(self, draft: LayerDraft, target: Any) -> None:
        parsed = _parse_linux_target(target) if isinstance(target, str) else None
        if parsed is not None:
            draft.linux_target = parsed
            return
        hint = 'use "glibc" or "glibc@X.Y", e.g. "glibc@2.28" (musl is not supported yet)'
        if isinstance(target, str) and target.partition("@")[0] != "glibc":
            message = (
                f"Linux libc variant must be one of ['glibc'], not {show(target.partition('@')[0])}"
            )
        elif isinstance(target, str):
            message = f"Linux libc version must be of the form 'X.Y', not {show(target.partition('@')[2])}"
        else:
            message = f"must be a string like 'glibc@2.28', not {type_name(target)}"
        self.report.problem(draft.env_name, "linux_target", message, hint)

    def index_fields(self, draft: LayerDraft, entry: dict[str, Any]) -> None:
        """Check `package_indexes`, `priority_indexes` and `index_overrides` into `draft`."""
        env = draft.env_name
        for package, index in self.string_table(draft, entry, "package_indexes").items():
            key = normalise_package(package)
            if key in draft.package_indexes:
                self.report.problem(
                    env,
                    "package_indexes",
                    f"package '{package}' is listed more than once (names are normalised)",
                )
            if index not in self.index_names:
                self.report.problem(
                    env,
                    "package_indexes",
                    f"references an unknown package index '{index}' for '{package}'",
                    index_hint(index, self.index_names),
                )
                draft.broken = True
            draft.package_indexes[key] = index
        priority, _ = self.string_list(draft, entry, "priority_indexes")
        if priority is not None:
            for index in priority:
                if index not in self.index_names:
                    self.report.problem(
                        env,
                        "priority_indexes",
                        f"unknown package index '{index}'",
                        index_hint(index, self.index_names),
                    )
            draft.priority_indexes = priority
        draft.index_overrides = self.string_table(draft, entry, "index_overrides")
        for original, replacement in draft.index_overrides.items():
            for index in (original, replacement):
                if index not in self.index_names:
                    self.report.problem(
                        env,
                        "index_overrides",
                        f"unknown package index '{index}'",
                        index_hint(index, self.index_names),
                    )

    def requirement_list(self, env: str, requirements: Sequence[str]) -> tuple[str, ...]:
        """The valid PEP 508 requirements of a list, normalised; each bad one is reported."""
        result = []
        for text in requirements:
            simple = simple_requirement(text)
            if simple is not None:
                result.append(simple)
                continue
            from packaging.requirements import InvalidRequirement, Requirement

            try:
                requirement = Requirement(text)
            except InvalidRequirement as exc:
                detail = str(exc).splitlines()[0]
                self.report.problem(
                    env,
                    "requirements",
                    f"invalid requirement syntax {show(text)}: {detail}",
                    "use PEP 508 form, e.g. 'attrs>=23.1'",
                )
                continue
            if any(len(run) > 18 for run in re.findall(r"[0-9]+", str(requirement.specifier))):
                # Version parsing turns each release number into an int; no release has these.
                self.report.problem(
                    env,
                    "requirements",
                    f"version in {show(text)} has a number of more than 18 digits",
                    "use a real release number, e.g. 'attrs>=23.1'",
                )
                continue
            result.append(str(requirement))
        return tuple(result)


# `name` or `name<op><release>[,<op><release>...]`: most requirements, normalised without
# importing packaging (its import is most of a no-op's spec load). Anything else goes to it.
_SIMPLE_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_SIMPLE_SPECIFIER = re.compile(
    r"[ \t]*(~=|==|!=|<=|>=|<|>)[ \t]*([0-9]{1,18}(?:\.[0-9]{1,18})*)[ \t]*"
)


def simple_requirement(text: str) -> str | None:
    """`str(packaging.requirements.Requirement(text))` for a plain name with release specifiers.

    None for anything else (extras, markers, URLs, pre-releases, wildcards, repeated operators):
    packaging parses those.
    """
    name = _SIMPLE_NAME.match(text)
    if name is None:
        return None
    rest = text[name.end() :]
    if not rest:
        return text
    specifiers: list[str] = []
    operators: set[str] = set()
    for part in rest.split(","):
        found = _SIMPLE_SPECIFIER.fullmatch(part)
        if found is None:
            return None
        operator, version = found.groups()
        if operator in operators or (operator == "~=" and "." not in version):
            return None  # packaging dedupes equal specifiers; `~=1` is invalid: let it say so
        operators.add(operator)
        specifiers.append(operator + version)
    return name.group() + ",".join(sorted(specifiers))


def _parse_linux_target(value: str) -> tuple[int, int] | None:
    variant, at, version = value.partition("@")
    if variant != "glibc":
        return None
    if not at:
        return DEFAULT_GLIBC
    match = re.fullmatch(r"([0-9]{1,6})\.([0-9]{1,6})", version)  # bounded: no huge ints
    return (int(match.group(1)), int(match.group(2))) if match else None


def parse_macosx(value: str) -> tuple[int, int] | None:
    """A macOS version 'X' or 'X.Y' as (X, Y); None if malformed."""
    match = re.fullmatch(r"([0-9]{1,6})(?:\.([0-9]{1,6}))?", value.strip())  # bounded
    if not match:
        return None
    return int(match.group(1)), int(match.group(2) or 0)


def macosx_default(environ: Mapping[str, str]) -> tuple[int, int]:
    """$MACOSX_DEPLOYMENT_TARGET, else 13.0 (a malformed value is checked where it is used)."""
    return parse_macosx(environ.get("MACOSX_DEPLOYMENT_TARGET") or "") or DEFAULT_MACOSX
