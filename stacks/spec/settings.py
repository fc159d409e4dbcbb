"""The spec's [tool] tables: uv's package indexes and sources, and stacks' own settings."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stacks.errors import SpecError
from stacks.spec.document import parse_toml, path_kind, read_spec_bytes
from stacks.spec.model import RUNTIME_SOURCES, StackSettings, normalise_package
from stacks.spec.report import SpecReport, did_you_mean, show, type_name

_TOOL_STACKS_FIELDS = ("runtime_source", "python_mirror", "runtime_any_patch")
_TRUE_WORDS = ("1", "true", "yes", "on")
_FALSE_WORDS = ("0", "false", "no", "off", "")
# The fields uv knows in a [tool.uv.sources] entry.
_UV_SOURCE_KEYS = frozenset(
    [
        "git",
        "subdirectory",
        "rev",
        "tag",
        "branch",
        "lfs",
        "url",
        "path",
        "editable",
        "package",
        "index",
        "workspace",
        "marker",
        "extra",
        "group",
    ]
)


def load_uv_config(
    report: SpecReport, spec_dir: Path, tool: dict[str, Any]
) -> tuple[dict[str, Any], set[str]]:
    """[tool.uv] (else a sibling venvstacks.uv.toml), checked, and the index names it defines."""
    index_names: set[str] = set()
    where = "tool.uv"
    if "uv" in tool:
        config = tool["uv"]
    else:
        sibling = spec_dir / "venvstacks.uv.toml"
        if path_kind(sibling) != "file":
            return {}, index_names
        where = str(sibling)
        try:
            raw = read_spec_bytes(sibling, str(sibling))
            config = parse_toml(str(sibling), raw.decode("utf-8-sig"))
        except SpecError as exc:
            report.problems.extend(exc.problems)
            return {}, index_names
        except (OSError, UnicodeDecodeError) as exc:
            report.problem(None, where, f"cannot read: {exc}")
            return {}, index_names
    if not isinstance(config, dict):
        report.problem(None, where, f"must be a table, not {type_name(config)}")
        return {}, index_names
    indexes = config.get("index", [])
    if not isinstance(indexes, list):
        report.problem(
            None, f"{where}.index", f"must be an array of tables, not {type_name(indexes)}"
        )
        indexes = []
    seen: set[str] = set()
    for position, entry in enumerate(indexes):
        label = f"{where}.index[{position}]"
        if not isinstance(entry, dict):
            report.problem(
                None, label, f"must be a table with 'name' and 'url', not {type_name(entry)}"
            )
            continue
        name, url = entry.get("name"), entry.get("url")
        if not isinstance(url, str) or not url:
            report.problem(None, f"{label}.url", "each index needs a 'url' string")
        if name is None:
            continue  # unnamed indexes are allowed; they just cannot be referenced
        if not isinstance(name, str) or not name:
            report.problem(
                None,
                f"{label}.name",
                "must not be empty" if name == "" else f"must be a string, not {type_name(name)}",
                "name the index, or leave 'name' out if no layer refers to it",
            )
            continue
        # uv matches index names exactly: 'PyTorch_CPU' and 'pytorch-cpu' are two indexes.
        if name in seen:
            report.problem(
                None,
                f"{label}.name",
                f"index name '{name}' is defined more than once",
                "give each [[tool.uv.index]] entry its own name",
            )
        seen.add(name)
        index_names.add(name)
    sources = config.get("sources", {})
    if not isinstance(sources, dict):
        report.problem(None, f"{where}.sources", f"must be a table, not {type_name(sources)}")
        sources = {}
    seen_sources: set[str] = set()
    for package, source in sources.items():
        label = f"{where}.sources.{package}"
        if normalise_package(str(package)) in seen_sources:
            report.problem(None, label, f"package '{package}' has more than one source")
        seen_sources.add(normalise_package(str(package)))
        if not isinstance(source, dict) or "index" not in source:
            report.problem(
                None,
                label,
                "only named-index sources are supported",
                'use `{ index = "<name>" }` pointing at a [[tool.uv.index]] entry',
            )
            continue
        _source_keys(report, label, source)
        index = source["index"]
        if not isinstance(index, str):
            report.problem(None, f"{label}.index", f"must be an index name, not {type_name(index)}")
        elif index not in index_names:
            report.problem(
                None, label, f"unknown package index {show(index)}", index_hint(index, index_names)
            )
    return config, index_names


def _source_keys(report: SpecReport, label: str, source: dict[str, Any]) -> None:
    """The keys of a named-index source besides `index`: a `marker` (as uv allows)."""
    from packaging.markers import InvalidMarker, Marker

    for key in sorted(set(source) - {"index"}, key=str):
        value = source[key]
        if key == "marker" and not isinstance(value, str):
            report.problem(None, f"{label}.marker", f"must be a string, not {type_name(value)}")
        elif key == "marker":
            try:
                Marker(value)
            except InvalidMarker as exc:
                report.problem(
                    None,
                    f"{label}.marker",
                    f"invalid marker {show(value)}: {str(exc).splitlines()[0]}",
                    "use PEP 508 marker syntax, e.g. \"sys_platform == 'linux'\"",
                )
        elif key in ("extra", "group"):
            report.problem(
                None,
                f"{label}.{key}",
                f"a source limited to an {key} cannot apply: layers have no extras or"
                " dependency groups",
                f"remove '{key}' (a `marker` can limit the source instead)",
            )
        elif key in _UV_SOURCE_KEYS:
            report.problem(
                None,
                f"{label}.{key}",
                "cannot be combined with 'index': only named-index sources are supported",
                f"remove '{key}'",
            )
        else:
            report.problem(
                None,
                f"{label}.{key}",
                "unknown field of an index source",
                did_you_mean(str(key), ("index", "marker"))
                or "an index source has 'index' and, optionally, 'marker'",
            )


def load_settings(
    report: SpecReport,
    tool: dict[str, Any],
    runtime_source: str | None,
    python_mirror: str | None,
    environ: Mapping[str, str],
    runtime_any_patch: bool | None = None,
) -> StackSettings:
    """[tool.stacks] settings, overridden by the environment and then by the command line."""
    table = tool.get("stacks", {})
    if not isinstance(table, dict):
        report.problem(None, "tool.stacks", f"must be a table, not {type_name(table)}")
        table = {}
    for key in table:
        if key not in _TOOL_STACKS_FIELDS:
            report.problem(
                None,
                f"tool.stacks.{key}",
                "unknown setting",
                did_you_mean(str(key), _TOOL_STACKS_FIELDS),
            )
    source, origin = _overridden(
        table.get("runtime_source", "python-build-standalone"),
        "runtime_source",
        environ.get("STACKS_RUNTIME_SOURCE"),
        runtime_source,
    )
    if source not in RUNTIME_SOURCES:
        report.problem(
            None,
            origin,
            f"unknown runtime source {show(source)}",
            f"use one of {', '.join(repr(s) for s in RUNTIME_SOURCES)}",
        )
        source = "python-build-standalone"
    mirror, origin = _overridden(
        table.get("python_mirror"),
        "python_mirror",
        environ.get("STACKS_PYTHON_MIRROR"),
        python_mirror,
    )
    if mirror is not None and (
        not isinstance(mirror, str) or not re.match(r"^(https?|file)://", mirror)
    ):
        report.problem(None, origin, f"must be an http(s):// or file:// URL, not {show(mirror)}")
        mirror = None
    any_patch = _any_patch(report, table, environ, runtime_any_patch)
    return StackSettings(runtime_source=source, python_mirror=mirror, runtime_any_patch=any_patch)


def _any_patch(
    report: SpecReport,
    table: Mapping[str, Any],
    environ: Mapping[str, str],
    from_command_line: bool | None,
) -> bool:
    """runtime_any_patch: the command line, else STACKS_RUNTIME_ANY_PATCH, else the spec."""
    if from_command_line:
        return True
    word = environ.get("STACKS_RUNTIME_ANY_PATCH")
    if word is not None:
        if word.strip().lower() in _TRUE_WORDS:
            return True
        if word.strip().lower() in _FALSE_WORDS:
            return False
        report.problem(
            None,
            "STACKS_RUNTIME_ANY_PATCH (environment)",
            f"must be 1 or 0 (true/false), not {show(word)}",
        )
        return False
    value = table.get("runtime_any_patch", False)
    if not isinstance(value, bool):
        report.problem(
            None, "tool.stacks.runtime_any_patch", f"must be true or false, not {show(value)}"
        )
        return False
    return value


def index_hint(name: str, index_names: set[str]) -> str:
    """How to fix a reference to an unknown package index."""
    if not index_names:
        return "define it as a [[tool.uv.index]] entry with this name"
    return did_you_mean(name, index_names) or f"known indexes: {', '.join(sorted(index_names))}"


def _overridden(
    value: Any, setting: str, from_environment: str | None, from_command_line: str | None
) -> tuple[Any, str]:
    """A `[tool.stacks]` setting after its overrides, with where it came from (for messages).

    The command line wins over `STACKS_<SETTING>` in the environment, which wins over the spec.
    """
    variable = f"STACKS_{setting.upper()}"
    option = "--" + setting.replace("_", "-")
    for override, origin in (
        (from_command_line, option),
        (from_environment, f"{variable} (environment)"),
    ):
        if override:
            return override, origin
    return value, f"tool.stacks.{setting}"
