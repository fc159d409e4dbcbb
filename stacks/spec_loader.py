"""Parse a stack spec file (TOML or YAML) and validate it into a StackSpec, collecting every problem."""

from __future__ import annotations

import difflib
import errno
import os
import re
import reprlib
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import Problem, SpecError
from .platforms import DEFAULT_GLIBC, DEFAULT_MACOSX, PLATFORMS
from .spec import (
    RUNTIME_SOURCES,
    LayerKind,
    LayerSpec,
    RuntimeSource,
    StackSettings,
    StackSpec,
    module_name,
    normalise_package,
)

_COMMON_FIELDS = (
    "name",
    "requirements",
    "platforms",
    "versioned",
    "linux_target",
    "macosx_target",
    "dynlib_exclude",
    "package_indexes",
    "priority_indexes",
    "index_overrides",
    "build_requirements",
)
_KIND_FIELDS = {
    LayerKind.RUNTIME: ("python_implementation", "fully_versioned_name", "source"),
    LayerKind.FRAMEWORK: ("runtime", "frameworks"),
    LayerKind.APPLICATION: ("runtime", "frameworks", "launch_module", "support_modules"),
}
_TOOL_STACKS_FIELDS = ("runtime_source", "python_mirror")
_TOP_LEVEL_KNOWN = ("runtimes", "frameworks", "applications", "tool")
# What no folder name can hold: path separators, control characters, and lone
# surrogates (which no file system encoding can write).
_NAME_BAD_CHARS = re.compile(r"[/\\\x00-\x1f\x7f\ud800-\udfff]")
# What only Windows forbids: these characters, a trailing space or dot, device names.
_WINDOWS_BAD_CHARS = re.compile(r'[:*?"<>|]')
_WINDOWS_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"{port}{n}" for port in ("COM", "LPT") for n in range(1, 10)]
)
_IMPLEMENTATION = re.compile(
    r"(?P<impl>[A-Za-z]+)@(?P<version>[0-9]+\.[0-9]+(?:\.[0-9]+)?(?:(?:a|b|rc)[0-9]+)?)"
)
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
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


def load(
    path: str | os.PathLike[str],
    *,
    runtime_source: str | None = None,
    python_mirror: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> StackSpec:
    """Load, validate and freeze the stack spec at `path`; raise SpecError listing every problem."""
    env = os.environ if environ is None else environ
    spec_path = Path(os.path.abspath(os.fspath(path)))
    document = _read_document(spec_path)
    loader = _SpecLoader(spec_path, document, env)
    return loader.load(runtime_source=runtime_source, python_mirror=python_mirror)


def _read_document(path: Path) -> dict[str, Any]:
    """Parse the spec file into a dict, turning syntax errors into a SpecError with the line."""
    shown = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(
            [Problem(shown, None, None, "spec file not found", "check the path")]
        ) from None
    except IsADirectoryError:
        raise SpecError([Problem(shown, None, None, "is a folder, not a spec file")]) from None
    except OSError as exc:
        raise SpecError(
            [Problem(shown, None, None, f"cannot read spec file: {exc.strerror}")]
        ) from None
    try:
        text = raw.decode("utf-8-sig")  # tolerate the BOM some Windows editors write
    except UnicodeDecodeError as exc:
        raise SpecError(
            [Problem(shown, None, None, f"not UTF-8 text (byte {exc.start})")]
        ) from None
    if path.suffix.lower() in (".yaml", ".yml"):
        document = _parse_yaml(shown, text)
    elif path.suffix.lower() == ".toml":
        document = _parse_toml(shown, text)
    else:
        try:
            document = _parse_toml(shown, text)
        except SpecError as exc:
            here = f"'{path.suffix}'" if path.suffix else "no extension"
            hint = (
                "the format is chosen by extension: .yaml or .yml is read as YAML, anything"
                f" else (here {here}) as TOML; rename a YAML spec to .yaml"
            )
            raise SpecError([replace(p, hint=p.hint or hint) for p in exc.problems]) from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise SpecError(
            [
                Problem(
                    shown, None, None, f"the document must be a table, not {_type_name(document)}"
                )
            ]
        )
    return document


def _parse_toml(shown: str, text: str) -> Any:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        line = getattr(exc, "lineno", None)
        match = re.search(r"\(at line (\d+), column (\d+)\)", message)
        if line is None and match:
            line = int(match.group(1))
        if line is None and "(at end of document)" in message:
            line = max(1, len(text.splitlines()))
        message = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", message)
        where = f"{shown}:{line}" if line else shown
        raise SpecError([Problem(where, None, None, f"TOML syntax error: {message}")]) from None
    except RecursionError:
        raise SpecError([Problem(shown, None, None, "TOML document nested too deeply")]) from None


def _parse_yaml(shown: str, text: str) -> Any:
    import yaml

    class DuplicateKey(yaml.MarkedYAMLError):
        """A key given twice in one mapping (YAML would keep the last; TOML rejects it)."""

    class ValueMarkingLoader(yaml.SafeLoader):
        """SafeLoader that blames bad tagged values (`!!int x`, `2021-13-45`) on their line,
        and rejects duplicate keys."""

        def construct_object(self, node: Any, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep)
            except (ValueError, KeyError, TypeError, OverflowError) as exc:
                raise yaml.constructor.ConstructorError(
                    None, None, f"cannot read {_show(node.value)}: {exc}", node.start_mark
                ) from None

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                first_line: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue  # `<<: *base` entries may be overridden: that is their point
                    key = self.construct_object(key_node, deep=True)
                    try:
                        seen = key in first_line
                    except TypeError:
                        continue  # an unhashable key: the base class reports it
                    if seen:
                        raise DuplicateKey(
                            problem=f"duplicate key {_show(key)} (first on line {first_line[key]})",
                            problem_mark=key_node.start_mark,
                        )
                    first_line[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep)

    try:
        return yaml.load(text, Loader=ValueMarkingLoader)  # a SafeLoader: plain data only
    except DuplicateKey as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        raise SpecError(
            [
                Problem(
                    f"{shown}:{line}",
                    None,
                    None,
                    f"YAML error: {exc.problem}",
                    "remove one of them (YAML would silently keep the last one)",
                )
            ]
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{shown}:{mark.line + 1}" if mark is not None else shown
        message = " ".join(p for p in (exc.context, exc.problem) if p)
        kind = "value" if isinstance(exc, yaml.constructor.ConstructorError) else "syntax"
        raise SpecError([Problem(where, None, None, f"YAML {kind} error: {message}")]) from None
    except yaml.YAMLError as exc:
        raise SpecError([Problem(shown, None, None, f"YAML error: {exc}")]) from None
    except RecursionError:
        raise SpecError([Problem(shown, None, None, "YAML document nested too deeply")]) from None


def _type_name(value: object) -> str:
    names = {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        list: "an array",
        dict: "a table",
    }
    if value is None:
        return "null"
    return names.get(type(value), f"a {type(value).__name__}")


def _path_kind(path: Path) -> str:
    """'file', 'dir', 'other', 'missing', or 'unusable: <why>' (too long, no permission ...)."""
    try:
        mode = path.stat().st_mode
    except ValueError:  # an embedded NUL or an unencodable character
        return "missing"
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return "missing"
        return f"unusable: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    return "other"


_SHOWN = reprlib.Repr()
_SHOWN.maxstring = 80
_SHOWN.maxother = 80
_SHOWN.maxlevel = 3


def _show(value: object) -> str:
    """A bounded repr of a spec value for messages (spec values can be huge or self-referential)."""
    return _SHOWN.repr(value)


def _did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


@dataclass
class _Draft:
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


@dataclass
class _Resolved:
    """Cross-layer facts about one draft."""

    runtime: str
    linearised: tuple[str, ...]
    platforms: tuple[str, ...]
    package_indexes: dict[str, str]
    overrides: dict[str, str]
    unresolved: frozenset[str] = frozenset()  # packages with an index clash reported here
    platforms_complete: bool = True  # False: platforms of this layer or below were invalid


class _SpecLoader:
    """Checks one parsed spec document, collecting every problem."""

    def __init__(self, path: Path, document: dict[str, Any], environ: Mapping[str, str]) -> None:
        self.path = path
        self.shown = str(path)
        self.doc = document
        self.environ = environ
        self.problems: list[Problem] = []
        self.warnings: list[str] = []
        self.index_names: set[str] = set()
        self.macosx_default = DEFAULT_MACOSX
        # Names of layers left out after a problem of their own (bad name, duplicate, env
        # name clash): references to them are not reported again as unknown.
        self.dropped: dict[LayerKind, set[str]] = {kind: set() for kind in LayerKind}

    def problem(
        self, layer: str | None, fld: str | None, message: str, hint: str | None = None
    ) -> None:
        self.problems.append(Problem(self.shown, layer, fld, message, hint))

    # -- top level

    def load(self, *, runtime_source: str | None, python_mirror: str | None) -> StackSpec:
        for key in self.doc:
            if key not in _TOP_LEVEL_KNOWN:
                hint = _did_you_mean(str(key), _TOP_LEVEL_KNOWN)
                if hint:
                    self.warnings.append(f"{self.shown}: top-level key '{key}' is ignored ({hint})")
        tool = self.doc.get("tool", {})
        if not isinstance(tool, dict):
            self.problem(None, "tool", f"must be a table, not {_type_name(tool)}")
            tool = {}
        for key in tool:
            # Other tools' tables are no business of ours; a near-miss of ours probably is.
            if key != "stacks" and difflib.get_close_matches(str(key).lower(), ["stacks"], 1, 0.8):
                self.warnings.append(
                    f"{self.shown}: [tool.{key}] is ignored (did you mean [tool.stacks]?)"
                )
        uv_config = self._load_uv_config(tool)
        settings = self._load_settings(tool, runtime_source, python_mirror)
        self.macosx_default = self._macosx_default()
        drafts = self._load_layers(settings)
        resolved = self._resolve(drafts)
        self._check_macosx_default(drafts, resolved)
        self._check_windows_names(drafts, resolved)
        if self.problems:
            raise SpecError(self.problems)
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
                )
            )
        return StackSpec(
            path=self.path,
            layers=tuple(layers),
            disabled=tuple(disabled),
            uv_config=uv_config,
            settings=settings,
            warnings=tuple(self.warnings),
            _by_name={layer.env_name: layer for layer in layers},
        )

    def _load_uv_config(self, tool: dict[str, Any]) -> dict[str, Any]:
        where = "tool.uv"
        if "uv" in tool:
            config = tool["uv"]
        else:
            sibling = self.path.parent / "venvstacks.uv.toml"
            if _path_kind(sibling) != "file":
                return {}
            where = str(sibling)
            try:
                config = _parse_toml(str(sibling), sibling.read_text(encoding="utf-8-sig"))
            except SpecError as exc:
                self.problems.extend(exc.problems)
                return {}
            except (OSError, UnicodeDecodeError) as exc:
                self.problem(None, where, f"cannot read: {exc}")
                return {}
        if not isinstance(config, dict):
            self.problem(None, where, f"must be a table, not {_type_name(config)}")
            return {}
        indexes = config.get("index", [])
        if not isinstance(indexes, list):
            self.problem(
                None, f"{where}.index", f"must be an array of tables, not {_type_name(indexes)}"
            )
            indexes = []
        seen: set[str] = set()
        for position, entry in enumerate(indexes):
            label = f"{where}.index[{position}]"
            if not isinstance(entry, dict):
                self.problem(
                    None, label, f"must be a table with 'name' and 'url', not {_type_name(entry)}"
                )
                continue
            name, url = entry.get("name"), entry.get("url")
            if not isinstance(url, str) or not url:
                self.problem(None, f"{label}.url", "each index needs a 'url' string")
            if name is None:
                continue  # unnamed indexes are allowed; they just cannot be referenced
            if not isinstance(name, str) or not name:
                self.problem(
                    None,
                    f"{label}.name",
                    "must not be empty"
                    if name == ""
                    else f"must be a string, not {_type_name(name)}",
                    "name the index, or leave 'name' out if no layer refers to it",
                )
                continue
            # uv matches index names exactly: 'PyTorch_CPU' and 'pytorch-cpu' are two indexes.
            if name in seen:
                self.problem(
                    None,
                    f"{label}.name",
                    f"index name '{name}' is defined more than once",
                    "give each [[tool.uv.index]] entry its own name",
                )
            seen.add(name)
            self.index_names.add(name)
        sources = config.get("sources", {})
        if not isinstance(sources, dict):
            self.problem(None, f"{where}.sources", f"must be a table, not {_type_name(sources)}")
            sources = {}
        seen_sources: set[str] = set()
        for package, source in sources.items():
            label = f"{where}.sources.{package}"
            if normalise_package(str(package)) in seen_sources:
                self.problem(None, label, f"package '{package}' has more than one source")
            seen_sources.add(normalise_package(str(package)))
            if not isinstance(source, dict) or "index" not in source:
                self.problem(
                    None,
                    label,
                    "only named-index sources are supported",
                    'use `{ index = "<name>" }` pointing at a [[tool.uv.index]] entry',
                )
                continue
            self._source_keys(label, source)
            index = source["index"]
            if not isinstance(index, str):
                self.problem(
                    None, f"{label}.index", f"must be an index name, not {_type_name(index)}"
                )
            elif index not in self.index_names:
                self.problem(
                    None, label, f"unknown package index {_show(index)}", self._index_hint(index)
                )
        return config

    def _source_keys(self, label: str, source: dict[str, Any]) -> None:
        """The keys of a named-index source besides `index`: a `marker` (as uv allows)."""
        from packaging.markers import InvalidMarker, Marker

        for key in sorted(set(source) - {"index"}, key=str):
            value = source[key]
            if key == "marker" and not isinstance(value, str):
                self.problem(None, f"{label}.marker", f"must be a string, not {_type_name(value)}")
            elif key == "marker":
                try:
                    Marker(value)
                except InvalidMarker as exc:
                    self.problem(
                        None,
                        f"{label}.marker",
                        f"invalid marker {_show(value)}: {str(exc).splitlines()[0]}",
                        "use PEP 508 marker syntax, e.g. \"sys_platform == 'linux'\"",
                    )
            elif key in ("extra", "group"):
                self.problem(
                    None,
                    f"{label}.{key}",
                    f"a source limited to an {key} cannot apply: layers have no extras or"
                    " dependency groups",
                    f"remove '{key}' (a `marker` can limit the source instead)",
                )
            elif key in _UV_SOURCE_KEYS:
                self.problem(
                    None,
                    f"{label}.{key}",
                    "cannot be combined with 'index': only named-index sources are supported",
                    f"remove '{key}'",
                )
            else:
                self.problem(
                    None,
                    f"{label}.{key}",
                    "unknown field of an index source",
                    _did_you_mean(str(key), ("index", "marker"))
                    or "an index source has 'index' and, optionally, 'marker'",
                )

    def _load_settings(
        self, tool: dict[str, Any], runtime_source: str | None, python_mirror: str | None
    ) -> StackSettings:
        table = tool.get("stacks", {})
        if not isinstance(table, dict):
            self.problem(None, "tool.stacks", f"must be a table, not {_type_name(table)}")
            table = {}
        for key in table:
            if key not in _TOOL_STACKS_FIELDS:
                self.problem(
                    None,
                    f"tool.stacks.{key}",
                    "unknown setting",
                    _did_you_mean(str(key), _TOOL_STACKS_FIELDS),
                )
        source = table.get("runtime_source", "python-build-standalone")
        origin = "tool.stacks.runtime_source"
        for override, label in (
            (self.environ.get("STACKS_RUNTIME_SOURCE"), "STACKS_RUNTIME_SOURCE (environment)"),
            (runtime_source, "--runtime-source"),
        ):
            if override:
                source, origin = override, label
        if source not in RUNTIME_SOURCES:
            self.problem(
                None,
                origin,
                f"unknown runtime source {_show(source)}",
                f"use one of {', '.join(repr(s) for s in RUNTIME_SOURCES)}",
            )
            source = "python-build-standalone"
        mirror = table.get("python_mirror")
        origin = "tool.stacks.python_mirror"
        for override, label in (
            (self.environ.get("STACKS_PYTHON_MIRROR"), "STACKS_PYTHON_MIRROR (environment)"),
            (python_mirror, "--python-mirror"),
        ):
            if override:
                mirror, origin = override, label
        if mirror is not None and (
            not isinstance(mirror, str) or not re.match(r"^(https?|file)://", mirror)
        ):
            self.problem(None, origin, f"must be an http(s):// or file:// URL, not {_show(mirror)}")
            mirror = None
        return StackSettings(runtime_source=source, python_mirror=mirror)

    def _macosx_default(self) -> tuple[int, int]:
        """$MACOSX_DEPLOYMENT_TARGET, else 13.0 (a malformed value is checked where it is used)."""
        return _parse_macosx(self.environ.get("MACOSX_DEPLOYMENT_TARGET") or "") or DEFAULT_MACOSX

    def _check_macosx_default(self, drafts: list[_Draft], resolved: dict[str, _Resolved]) -> None:
        """A malformed $MACOSX_DEPLOYMENT_TARGET is a problem only for the macOS layers it sets."""
        value = self.environ.get("MACOSX_DEPLOYMENT_TARGET")
        if not value or _parse_macosx(value) is not None:
            return
        users = [
            draft.env_name
            for draft in drafts
            if draft.macosx_default
            and any(p.startswith("macosx") for p in _targets(draft, resolved))
        ]
        if users:
            self.problem(
                None,
                "MACOSX_DEPLOYMENT_TARGET (environment)",
                f"must be 'X' or 'X.Y', not {_show(value)}",
                "it is the macosx_target of " + ", ".join(users) + ": fix or unset the"
                " environment variable, or set macosx_target on those layers",
            )

    def _check_windows_names(self, drafts: list[_Draft], resolved: dict[str, _Resolved]) -> None:
        """Layers built for Windows need env names Windows can use as folder names."""
        for draft in drafts:
            windows = [p for p in _targets(draft, resolved) if p.startswith("win")]
            reason = _windows_name_problem(draft.env_name) if draft.kept else None
            if windows and reason:
                self.problem(
                    draft.env_name,
                    "name",
                    f"{_show(draft.name)} cannot be a folder name on Windows ({reason})",
                    "rename the layer, or give it `platforms` without " + " and ".join(windows),
                )

    # -- single layers

    def _load_layers(self, settings: StackSettings) -> list[_Draft]:
        drafts: list[_Draft] = []
        seen_env: dict[str, str] = {}
        for kind in LayerKind:
            entries = self.doc.get(kind.table, [])
            if not isinstance(entries, list):
                self.problem(
                    None,
                    kind.table,
                    f"must be an array of tables ([[{kind.table}]]), not {_type_name(entries)}",
                )
                continue
            names_in_kind: set[str] = set()
            for position, entry in enumerate(entries):
                label = f"{kind.table}[{position}]"
                if not isinstance(entry, dict):
                    self.problem(
                        label, None, f"each layer must be a table, not {_type_name(entry)}"
                    )
                    continue
                draft = self._load_layer(kind, label, entry, settings)
                drafts.append(draft)
                if not draft.kept:
                    if isinstance(entry.get("name"), str):
                        self.dropped[kind].add(entry["name"])
                    continue
                if draft.name in names_in_kind:
                    self.problem(
                        draft.env_name,
                        "name",
                        f"duplicate {kind.value} name '{draft.name}'",
                        "names must be unique within a kind",
                    )
                    draft.kept, draft.broken = False, True
                    continue
                names_in_kind.add(draft.name)
                if draft.env_name in seen_env:
                    self.problem(
                        draft.env_name,
                        "name",
                        f"env name clashes with {seen_env[draft.env_name]}",
                        "rename one of them: their build and deployed folders would be the same"
                        " (a runtime's env name is its name, a framework's 'framework-<name>',"
                        " an application's 'app-<name>')",
                    )
                    draft.kept, draft.broken = False, True
                    self.dropped[kind].add(draft.name)
                    continue
                seen_env[draft.env_name] = f"{kind.value} '{draft.name}'"
        return drafts

    def _load_layer(
        self, kind: LayerKind, label: str, entry: dict[str, Any], settings: StackSettings
    ) -> _Draft:
        """Check one layer table on its own (a draft with an unusable name is not `kept`)."""
        draft = self._layer_name(kind, label, entry.get("name"))
        allowed = (*_COMMON_FIELDS, *_KIND_FIELDS[kind])
        for key in entry:
            if key not in allowed:
                hint = _did_you_mean(str(key), allowed)
                elsewhere = [k.value for k, f in _KIND_FIELDS.items() if key in f]
                if not hint and elsewhere:
                    hint = f"'{key}' is only allowed on {' and '.join(elsewhere)} layers"
                # Not `broken`: references can still be checked, so all problems show at once.
                self.problem(draft.env_name, str(key), "unknown field", hint)
        self._common_fields(draft, entry)
        if kind is LayerKind.RUNTIME:
            self._runtime_fields(draft, entry, settings)
        else:
            self._layered_fields(draft, entry)
        if kind is LayerKind.APPLICATION:
            self._app_fields(draft, entry)
        return draft

    def _layer_name(self, kind: LayerKind, label: str, name: Any) -> _Draft:
        """A draft for a layer name; an unusable name is reported and labelled by position."""
        if name is None:
            self.problem(label, "name", "missing 'name'", "every layer needs a name")
            return _Draft(kind=kind, name="", env_name=label, kept=False, broken=True)
        if not isinstance(name, str) or not name.strip():
            if not isinstance(name, str):
                message = f"must be a string, not {_type_name(name)}"
            else:
                message = "must not be empty" if not name else "must not be only spaces"
            example = {"runtime": "cpython-3.12", "framework": "scipy", "application": "demo"}
            self.problem(label, "name", message, f'e.g. name = "{example[kind.value]}"')
            return _Draft(kind=kind, name="", env_name=label, kept=False, broken=True)
        env_name = kind.prefix + name
        if _NAME_BAD_CHARS.search(name) or env_name in (".", ".."):
            self.problem(
                env_name,
                "name",
                f"{_show(name)} cannot be used as a folder name",
                "leave out path separators ('/', '\\') and control characters"
                if _NAME_BAD_CHARS.search(name)
                else "'.' and '..' already name folders: choose another name",
            )
            return _Draft(kind=kind, name=name, env_name=env_name, kept=False, broken=True)
        if "@" in name:
            self.warnings.append(
                f"{self.shown}: layer '{env_name}': '@' in names is discouraged ('@N' marks versions)"
            )
        return _Draft(kind=kind, name=name, env_name=env_name)

    def _string_list(
        self, draft: _Draft, entry: dict[str, Any], key: str, *, required: bool = False
    ) -> tuple[tuple[str, ...] | None, bool]:
        """The strings of a list field (None if absent or not a list), and whether it was clean.

        Non-string items are reported and left out; the strings are still returned so that
        their own problems are reported at the same time.
        """
        if key not in entry:
            if required:
                self.problem(
                    draft.env_name,
                    key,
                    f"missing '{key}'",
                    f"add `{key} = []` if the layer needs none",
                )
            return None, not required
        value = entry[key]
        if not isinstance(value, list):
            self.problem(
                draft.env_name,
                key,
                f"must be an array of strings, not {_type_name(value)}",
                f'e.g. {key} = ["{_LIST_EXAMPLES.get(key, "...")}"]'
                + (' (`["*"]` turns linking off)' if key == "dynlib_exclude" else ""),
            )
            return None, False
        wrong = [item for item in value if not isinstance(item, str)]
        if wrong:
            found = ", ".join(f"{_type_name(item)} ({_show(item)})" for item in wrong[:3])
            self.problem(
                draft.env_name,
                key,
                f"must contain only strings, found {found}{', ...' if len(wrong) > 3 else ''}",
                f'quote each entry, e.g. {key} = ["{_LIST_EXAMPLES.get(key, "...")}"]',
            )
        return tuple(item for item in value if isinstance(item, str)), not wrong

    def _string_table(self, draft: _Draft, entry: dict[str, Any], key: str) -> dict[str, str]:
        """The string entries of a table field; each bad key or value is reported, by name."""
        what, example = _TABLE_FIELDS[key]
        value = entry.get(key, {})
        if not isinstance(value, dict):
            self.problem(
                draft.env_name,
                key,
                f"must be a table of {what}, not {_type_name(value)}",
                f"e.g. {key} = {example}",
            )
            draft.broken = True
            return {}
        table = {}
        for name, index in value.items():
            if not isinstance(name, str):
                message = f"keys must be strings, found {_type_name(name)} ({_show(name)})"
            elif not isinstance(index, str):
                message = (
                    f"the value for {_show(name)} must be an index name (a string),"
                    f" not {_type_name(index)} ({_show(index)})"
                )
            else:
                table[name] = index
                continue
            self.problem(draft.env_name, key, message, f"e.g. {key} = {example}")
            draft.broken = True
        return table

    def _common_fields(self, draft: _Draft, entry: dict[str, Any]) -> None:
        env = draft.env_name
        requirements, _ = self._string_list(draft, entry, "requirements", required=True)
        if requirements is not None:
            draft.requirements = self._requirements(env, requirements)
        if "build_requirements" in entry:
            self.warnings.append(
                f"{self.shown}: layer '{env}': dropping legacy field 'build_requirements' (it is ignored)"
            )
        platforms, clean = self._string_list(draft, entry, "platforms")
        if not clean:
            draft.platforms_complete = False
        if platforms is not None:
            unknown = [p for p in platforms if p not in PLATFORMS]
            for p in unknown:
                hint = f"expected one of: {', '.join(PLATFORMS)}"
                close = _did_you_mean(p, PLATFORMS)
                self.problem(
                    env,
                    "platforms",
                    f"invalid target platform {_show(p)}",
                    f"{close} ({hint})" if close else hint,
                )
            if unknown:
                draft.platforms_complete = False
            draft.platforms = tuple(p for p in PLATFORMS if p in platforms)
        versioned = entry.get("versioned", False)
        if not isinstance(versioned, bool):
            self.problem(
                env,
                "versioned",
                f"must be true or false, not {_type_name(versioned)} ({_show(versioned)})",
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
            ok_type = isinstance(target, (str, int)) and not isinstance(target, bool)
            parsed = _parse_macosx(str(target)) if ok_type else None
            if parsed is None:
                # An unquoted 10.10 reads as the number 10.1: ask for a string instead.
                hint = (
                    'quote it: macosx_target = "13.0"'
                    if isinstance(target, float)
                    else 'use a macOS version, e.g. macosx_target = "13.0" or "14"'
                )
                self.problem(
                    env,
                    "macosx_target",
                    f"must be 'X' or 'X.Y' (e.g. '13.0'), not {_show(target)}",
                    hint,
                )
            else:
                draft.macosx_target = parsed
        excludes, _ = self._string_list(draft, entry, "dynlib_exclude")
        if excludes is not None:
            draft.dynlib_exclude = excludes
        self._index_fields(draft, entry)

    def _linux_target(self, draft: _Draft, target: Any) -> None:
        parsed = _parse_linux_target(target) if isinstance(target, str) else None
        if parsed is not None:
            draft.linux_target = parsed
            return
        hint = 'use "glibc" or "glibc@X.Y", e.g. "glibc@2.28" (musl is not supported yet)'
        if isinstance(target, str) and target.partition("@")[0] != "glibc":
            message = f"Linux libc variant must be one of ['glibc'], not {_show(target.partition('@')[0])}"
        elif isinstance(target, str):
            message = f"Linux libc version must be of the form 'X.Y', not {_show(target.partition('@')[2])}"
        else:
            message = f"must be a string like 'glibc@2.28', not {_type_name(target)}"
        self.problem(draft.env_name, "linux_target", message, hint)

    def _index_fields(self, draft: _Draft, entry: dict[str, Any]) -> None:
        env = draft.env_name
        for package, index in self._string_table(draft, entry, "package_indexes").items():
            key = normalise_package(package)
            if key in draft.package_indexes:
                self.problem(
                    env,
                    "package_indexes",
                    f"package '{package}' is listed more than once (names are normalised)",
                )
            if index not in self.index_names:
                self.problem(
                    env,
                    "package_indexes",
                    f"references an unknown package index '{index}' for '{package}'",
                    self._index_hint(index),
                )
                draft.broken = True
            draft.package_indexes[key] = index
        priority, _ = self._string_list(draft, entry, "priority_indexes")
        if priority is not None:
            for index in priority:
                if index not in self.index_names:
                    self.problem(
                        env,
                        "priority_indexes",
                        f"unknown package index '{index}'",
                        self._index_hint(index),
                    )
            draft.priority_indexes = priority
        draft.index_overrides = self._string_table(draft, entry, "index_overrides")
        for original, replacement in draft.index_overrides.items():
            for index in (original, replacement):
                if index not in self.index_names:
                    self.problem(
                        env,
                        "index_overrides",
                        f"unknown package index '{index}'",
                        self._index_hint(index),
                    )

    def _index_hint(self, name: str) -> str:
        if not self.index_names:
            return "define it as a [[tool.uv.index]] entry with this name"
        return (
            _did_you_mean(name, self.index_names)
            or f"known indexes: {', '.join(sorted(self.index_names))}"
        )

    def _requirements(self, env: str, requirements: Sequence[str]) -> tuple[str, ...]:
        from packaging.requirements import InvalidRequirement, Requirement

        result = []
        for text in requirements:
            try:
                result.append(str(Requirement(text)))
            except InvalidRequirement as exc:
                detail = str(exc).splitlines()[0]
                self.problem(
                    env,
                    "requirements",
                    f"invalid requirement syntax {_show(text)}: {detail}",
                    "use PEP 508 form, e.g. 'attrs>=23.1'",
                )
        return tuple(result)

    def _runtime_fields(
        self, draft: _Draft, entry: dict[str, Any], settings: StackSettings
    ) -> None:
        env = draft.env_name
        implementation = entry.get("python_implementation")
        if "fully_versioned_name" in entry:
            if implementation is not None:
                self.problem(
                    env,
                    "fully_versioned_name",
                    "sets both 'fully_versioned_name' and 'python_implementation'",
                    "remove the legacy 'fully_versioned_name'",
                )
            else:
                self.warnings.append(
                    f"{self.shown}: layer '{env}': converting legacy field 'fully_versioned_name' to 'python_implementation'"
                )
                implementation = entry["fully_versioned_name"]
        match = (
            _IMPLEMENTATION.fullmatch(implementation) if isinstance(implementation, str) else None
        )
        if implementation is None:
            self.problem(
                env,
                "python_implementation",
                "missing 'python_implementation'",
                'add e.g. `python_implementation = "cpython@3.12"`',
            )
            draft.broken = True
        elif match is None:
            self.problem(
                env,
                "python_implementation",
                f"must look like 'cpython@X.Y' or 'cpython@X.Y.Z', not {_show(implementation)}",
                'e.g. python_implementation = "cpython@3.12" (or "cpython@3.12.7" for an exact'
                " release)",
            )
            draft.broken = True
        elif match.group("impl").lower() != "cpython":
            self.problem(
                env,
                "python_implementation",
                f"unsupported implementation {_show(match.group('impl'))}",
                "stacks builds CPython runtimes only: use 'cpython@X.Y'",
            )
            draft.broken = True
        else:
            draft.python_implementation = f"cpython@{match.group('version')}"
        draft.source = self._runtime_source(env, entry.get("source"), settings)

    def _runtime_source(self, env: str, value: Any, settings: StackSettings) -> RuntimeSource:
        if value is None:
            return RuntimeSource(settings.runtime_source)
        if isinstance(value, str):
            if value in RUNTIME_SOURCES:
                return RuntimeSource(value)
            self.problem(
                env,
                "source",
                f"unknown runtime source {_show(value)}",
                f"use {RUNTIME_SOURCES[0]!r}, {RUNTIME_SOURCES[1]!r} or {{url = ..., sha256 = ...}}",
            )
            return RuntimeSource(settings.runtime_source)
        if isinstance(value, dict):
            for key in sorted(set(value) - {"url", "sha256"}, key=str):
                self.problem(
                    env,
                    f"source.{key}",
                    "unknown field",
                    _did_you_mean(str(key), ("url", "sha256")),
                )
            return self._archive_source(env, value) or RuntimeSource(settings.runtime_source)
        self.problem(
            env, "source", f"must be a string or a table {{url, sha256}}, not {_type_name(value)}"
        )
        return RuntimeSource(settings.runtime_source)

    def _archive_source(self, env: str, value: dict[str, Any]) -> RuntimeSource | None:
        """`source = {url, sha256}`: an explicit runtime archive (None if it has a problem)."""
        example = 'source = { url = "https://.../python.tar.gz", sha256 = "<64 hex digits>" }'
        ok = True
        for key in ("url", "sha256"):
            if key not in value:
                self.problem(env, "source", f"missing field '{key}'", f"e.g. {example}")
                ok = False
        url, sha = value.get("url"), value.get("sha256")
        if "url" in value and (not isinstance(url, str) or not re.match(r"^(https?|file)://", url)):
            self.problem(
                env, "source.url", f"must be an http(s):// or file:// URL, not {_show(url)}"
            )
            ok = False
        elif "url" in value and not self._unpackable(env, str(url)):
            ok = False
        if "sha256" in value and (not isinstance(sha, str) or not _SHA256.match(sha)):
            self.problem(
                env,
                "source.sha256",
                "must be the archive's sha256 as 64 hex digits",
                "compute it with `sha256sum <archive>`",
            )
            ok = False
        if not ok:
            return None
        return RuntimeSource("archive", url=url, sha256=str(sha).lower())

    def _unpackable(self, env: str, url: str) -> bool:
        """Whether a runtime archive URL names a format stacks can unpack (unknown names pass)."""
        from urllib.parse import unquote, urlsplit

        from .runtimes import ARCHIVE_SUFFIXES, UNSUPPORTED_SUFFIXES

        path = unquote(urlsplit(url).path).lower()
        if path.endswith(ARCHIVE_SUFFIXES):
            return True
        suffix = next((s for s in UNSUPPORTED_SUFFIXES if path.endswith(s)), None)
        if suffix is None:
            return True  # no telling from the name: the archive's content decides
        self.problem(
            env,
            "source.url",
            f"a {suffix} archive cannot be unpacked as a runtime",
            f"use a tar archive: {', '.join(ARCHIVE_SUFFIXES)}",
        )
        return False

    def _layered_fields(self, draft: _Draft, entry: dict[str, Any]) -> None:
        env = draft.env_name
        runtime = entry.get("runtime")
        has_frameworks = "frameworks" in entry
        frameworks, clean = self._string_list(draft, entry, "frameworks")
        if not clean:
            draft.broken = True  # its references are still checked
        if runtime is not None and not isinstance(runtime, str):
            self.problem(
                env, "runtime", f"must be a runtime name (a string), not {_type_name(runtime)}"
            )
            draft.broken = True
            return
        if runtime is not None and has_frameworks:
            self.problem(
                env,
                "runtime",
                f"must specify a runtime or framework dependencies, not both (runtime: {_show(runtime)}; frameworks: {_show(entry['frameworks'])})",
                "keep one: with frameworks, the runtime is theirs",
            )
            draft.broken = True
            return
        if runtime is None and not has_frameworks:
            self.problem(
                env,
                "runtime",
                "must specify a runtime or at least one framework dependency",
                'add `runtime = "<runtime name>"` or `frameworks = ["<name>"]`',
            )
            draft.broken = True
            return
        if frameworks is not None and not frameworks and clean:
            self.problem(
                env,
                "frameworks",
                "must list at least one framework",
                'use `runtime = "<runtime name>"` for a layer directly on a runtime',
            )
            draft.broken = True
            return
        if frameworks is not None and len(set(frameworks)) != len(frameworks):
            repeated = sorted({f for f in frameworks if frameworks.count(f) > 1})
            self.problem(
                env,
                "frameworks",
                "lists "
                + " and ".join(f"framework {_show(f)}" for f in repeated)
                + " more than once",
                "list each framework once",
            )
            frameworks = tuple(dict.fromkeys(frameworks))  # the rest is still checked
        draft.runtime_ref = runtime
        draft.framework_refs = frameworks

    def _app_fields(self, draft: _Draft, entry: dict[str, Any]) -> None:
        env = draft.env_name
        launch = entry.get("launch_module")
        if launch is None:
            self.problem(
                env,
                "launch_module",
                "missing 'launch_module'",
                'add e.g. `launch_module = "launch/app.py"`',
            )
        elif not isinstance(launch, str) or not launch:
            self.problem(
                env,
                "launch_module",
                "must not be empty"
                if launch == ""
                else f"must be a path string, not {_type_name(launch)}",
                'e.g. `launch_module = "launch/app.py"` (relative to the spec\'s folder)',
            )
            launch = None
        support = sorted(self._string_list(draft, entry, "support_modules")[0] or ())
        if "" in support:
            self.problem(
                env,
                "support_modules",
                "entries must not be empty",
                "remove the empty entry (it would name the spec's whole folder)",
            )
            support = [s for s in support if s]
        support_paths = [self.path.parent / s for s in support]
        launch_path = self.path.parent / launch if launch else None
        # Name clashes are reported first (as venvstacks does), then whether the modules exist.
        names: dict[str, str] = {}  # module name -> the support module path as written
        for shown, support_path in zip(support, support_paths, strict=True):
            stem = module_name(support_path)
            if stem in names:
                self.problem(
                    env,
                    "support_modules",
                    f"conflicting support module names: {_show(names[stem])} and {_show(shown)}"
                    f" are both module {_show(stem)}",
                    "rename one of them",
                )
            names[stem] = shown
        launch_stem = module_name(launch_path) if launch_path is not None else None
        if launch_stem in names:
            self.problem(
                env,
                "launch_module",
                f"launch module {_show(launch_stem)} conflicts with support module"
                f" {_show(names[launch_stem])}",
                "rename the support module",
            )
        if launch_path is not None and self._check_module(
            env, "launch_module", launch_path, launch or "", launch=True
        ):
            draft.launch_module = launch_path
        kinds = [_path_kind(p) for p in support_paths]
        missing = [s for s, kind in zip(support, kinds, strict=True) if kind == "missing"]
        if missing:
            self.problem(
                env,
                "support_modules",
                "support modules do not exist: " + ", ".join(_show(m) for m in missing),
                f"paths are relative to {self.path.parent}",
            )
        kept = []
        for shown, support_path, kind in zip(support, support_paths, kinds, strict=True):
            if kind != "missing" and self._check_module(
                env, "support_modules", support_path, shown, launch=False
            ):
                kept.append(support_path)
        draft.support_modules = tuple(kept)

    def _check_module(self, env: str, fld: str, path: Path, shown: str, *, launch: bool) -> bool:
        """Whether a launch or support module can be copied into the app; warn if it cannot run.

        Like venvstacks, any file or folder is copied as is: the launch module must be a .py
        file or a package folder, a support module may be anything (data files too).
        """
        kind = _path_kind(path)
        if kind == "missing":
            self.problem(
                env,
                fld,
                f"launch module {_show(shown)} does not exist",
                f"paths are relative to {self.path.parent}",
            )
            return False
        if kind.startswith("unusable"):
            self.problem(env, fld, f"{_show(shown)} cannot be used: {kind.partition(': ')[2]}")
            return False
        if kind == "other":
            self.problem(
                env,
                fld,
                f"{_show(shown)} is not a file or a folder",
                "point it at the module file or package folder to copy",
            )
            return False
        if launch and kind == "file" and path.suffix != ".py":
            self.problem(env, fld, f"{_show(shown)} must be a .py file or a package folder")
            return False
        name = module_name(path)
        where = f"{self.shown}: layer '{env}', field '{fld}'"
        if launch and "." in name:
            self.warnings.append(
                f"{where}: `python -m {name}` cannot run {_show(shown)} (the dot makes it look"
                f" for a package {_show(name.partition('.')[0])})"
                "\n  hint: rename it without dots"
            )
        elif launch and kind == "dir" and _path_kind(path / "__main__.py") != "file":
            self.warnings.append(
                f"{where}: launch package {_show(shown)} has no __main__.py, so"
                f" `python -m {name}` cannot run it\n  hint: add {shown}/__main__.py"
            )
        elif not launch and (kind == "dir" or path.suffix == ".py") and not name.isidentifier():
            self.warnings.append(
                f"{where}: support module {_show(shown)} is copied, but `import {name}` cannot"
                " name it\n  hint: rename it to a Python identifier (letters, digits, '_')"
                " if it is meant to be imported"
            )
        return True

    # -- across layers

    def _resolve(self, drafts: list[_Draft]) -> dict[str, _Resolved]:
        resolved: dict[str, _Resolved] = {}
        kept = [d for d in drafts if d.kept]
        runtimes = {d.name: d for d in kept if d.kind is LayerKind.RUNTIME}
        frameworks_seen: dict[str, _Draft] = {}
        all_frameworks = {d.name for d in kept if d.kind is LayerKind.FRAMEWORK}
        for draft in drafts:
            if draft.kind is LayerKind.RUNTIME:
                platforms = draft.platforms if draft.platforms is not None else PLATFORMS
                if not draft.broken:
                    resolved[draft.env_name] = _Resolved(
                        draft.env_name,
                        (),
                        platforms,
                        dict(draft.package_indexes),
                        dict(draft.index_overrides),
                        platforms_complete=draft.platforms_complete,
                    )
                continue
            info = self._resolve_layered(draft, runtimes, frameworks_seen, all_frameworks, resolved)
            if info is not None:
                resolved[draft.env_name] = info
            if draft.kind is LayerKind.FRAMEWORK and draft.kept:
                frameworks_seen[draft.name] = draft
        return resolved

    def _resolve_layered(
        self,
        draft: _Draft,
        runtimes: dict[str, _Draft],
        frameworks_seen: dict[str, _Draft],
        all_frameworks: set[str],
        resolved: dict[str, _Resolved],
    ) -> _Resolved | None:
        env = draft.env_name
        if draft.runtime_ref is not None:
            runtime = runtimes.get(draft.runtime_ref)
            if runtime is None:
                if draft.runtime_ref in self.dropped[LayerKind.RUNTIME]:
                    return None  # that runtime's own problem is reported already
                hint = (
                    _did_you_mean(draft.runtime_ref, runtimes)
                    or f"known runtimes: {', '.join(runtimes) or 'none'}"
                )
                self.problem(env, "runtime", f"unknown runtime '{draft.runtime_ref}'", hint)
                return None
            if draft.broken or runtime.env_name not in resolved:
                return None
            runtime_env, linearised = runtime.env_name, ()
        else:
            lower: list[_Draft] = []
            ok = not draft.broken
            for ref in draft.framework_refs or ():
                if ref in frameworks_seen:
                    lower.append(frameworks_seen[ref])
                    continue
                ok = False
                if ref in self.dropped[LayerKind.FRAMEWORK]:
                    continue  # that framework's own problem is reported already
                if ref in all_frameworks:
                    reason = f"unknown framework '{ref}': it is defined later in the file (or depends on this layer)"
                    hint = "a layer may only refer to layers defined earlier in the file"
                else:
                    reason = f"unknown framework '{ref}'"
                    hint = (
                        _did_you_mean(ref, all_frameworks)
                        or f"known frameworks: {', '.join(sorted(all_frameworks)) or 'none'}"
                    )
                self.problem(env, "frameworks", reason, hint)
            if not ok or any(f.env_name not in resolved for f in lower):
                return None
            runtime_envs = {resolved[f.env_name].runtime for f in lower}
            if len(runtime_envs) > 1:
                detail = "; ".join(
                    f"'{f.name}' requires runtime '{resolved[f.env_name].runtime}'" for f in lower
                )
                self.problem(
                    env,
                    "frameworks",
                    f"references inconsistent frameworks: {detail}",
                    "all frameworks of a layer must share one runtime",
                )
                return None
            runtime_env = runtime_envs.pop()
            merged = _c3_merge(
                [[f.env_name, *resolved[f.env_name].linearised] for f in lower]
                + [[f.env_name for f in lower]]
            )
            if isinstance(merged, _C3Conflict):
                bare = len(LayerKind.FRAMEWORK.prefix)
                remaining = ", ".join(str([n[bare:] for n in seq]) for seq in merged.remaining)
                self.problem(
                    env,
                    "frameworks",
                    f"dependency linearization failed (remaining sequences: [{remaining}])",
                    "list the frameworks in an order consistent with how the layers below list them",
                )
                return None
            linearised = tuple(merged)
        below = [*linearised, runtime_env]
        available = set(PLATFORMS)
        for dep in below:
            available &= set(resolved[dep].platforms)
        # Below a layer with invalid platforms, what is available is not known.
        complete = all(resolved[dep].platforms_complete for dep in below)
        if draft.platforms is None:
            platforms = tuple(p for p in PLATFORMS if p in available)
            if not platforms and all(resolved[dep].platforms for dep in below):
                self._warn_no_common_platform(draft, below, resolved)
        else:
            extra = [p for p in draft.platforms if p not in available]
            if extra and complete:
                supported = ", ".join(p for p in PLATFORMS if p in available) or "none"
                self.problem(
                    env,
                    "platforms",
                    f"specifies target platforms not supported by lower layers ({', '.join(extra)})",
                    f"lower layers support: {supported}",
                )
            platforms = draft.platforms
        indexes, overrides, unresolved = self._merge_indexes(draft, below, resolved)
        return _Resolved(
            runtime_env,
            linearised,
            platforms,
            indexes,
            overrides,
            unresolved,
            platforms_complete=complete and draft.platforms_complete,
        )

    def _warn_no_common_platform(
        self, draft: _Draft, below: list[str], resolved: dict[str, _Resolved]
    ) -> None:
        """A layer whose enabled lower layers share no platform is disabled: say so."""
        listed = "; ".join(
            f"{dep}: {', '.join(resolved[dep].platforms)}"
            if set(resolved[dep].platforms) != set(PLATFORMS)
            else f"{dep}: all"
            for dep in below
        )
        self.warnings.append(
            f"{self.shown}: layer '{draft.env_name}' is disabled: its lower layers have no"
            f" platform in common ({listed})\n  hint: set `platforms` on the lower layers so"
            " they share one, or `platforms = []` on this layer to disable it on purpose"
        )

    def _merge_indexes(
        self, draft: _Draft, below: list[str], resolved: dict[str, _Resolved]
    ) -> tuple[dict[str, str], dict[str, str], frozenset[str]]:
        """Merge the package_indexes pinned below with this layer's own, checking clashes.

        The layer's own pin wins over inherited ones. Otherwise inherited pins that
        disagree need an `index_overrides` entry (`{replaced = "replacement"}`, from this
        layer or any layer below); the replacement is the index used. Clashes are looked
        for as venvstacks does (the runtime first, then the frameworks in sys.path order),
        so its specs and hints mean the same here. Returns the merged pins, the overrides
        in force and the packages whose clash is left unresolved.
        """
        overrides: dict[str, str] = {}
        for dep in below:
            overrides.update(resolved[dep].overrides)
        overrides.update(draft.index_overrides)
        inherited: dict[str, list[str]] = {}
        reported_below: set[str] = set()
        for dep in [below[-1], *below[:-1]]:
            reported_below.update(resolved[dep].unresolved)
            for package, index in resolved[dep].package_indexes.items():
                seen = inherited.setdefault(package, [])
                if index not in seen:
                    seen.append(index)
        merged = dict(draft.package_indexes)
        wanted: dict[str, str] = {}
        unresolved: set[str] = set()
        reported: list[str] = []
        own_pin_clashes = False  # a clash involving this layer's own package_indexes
        for package, indexes in inherited.items():
            own = merged.get(package)
            if own is None and len(indexes) == 1:
                merged[package] = indexes[0]
                continue
            if own is not None:
                winner = own
            else:
                accepted = [
                    w for w in indexes if all(overrides.get(i) == w for i in indexes if i != w)
                ]
                winner = accepted[0] if accepted else indexes[-1]
                merged[package] = winner
            missing = {i: winner for i in indexes if i != winner and overrides.get(i) != winner}
            if not missing:
                continue
            unresolved.add(package)
            if own is None and package in reported_below:
                continue  # the layer below that first mixed these indexes reports it
            wanted.update(missing)
            reported.append(package)
            own_pin_clashes = own_pin_clashes or own is not None
        if wanted:
            table = {**draft.index_overrides, **dict(sorted(wanted.items()))}
            entries = ", ".join(f"{_toml_key(k)} = {_toml_string(v)}" for k, v in table.items())
            # The fix goes in index_overrides; blame package_indexes only if the layer's own
            # pin is part of the clash (changing that pin is then another fix).
            self.problem(
                draft.env_name,
                "package_indexes" if own_pin_clashes else "index_overrides",
                f"inconsistent package index override(s) for {', '.join(sorted(reported))}",
                f"specify 'index_overrides = {{{entries}}}' to accept",
            )
        return merged, overrides, frozenset(unresolved)


def _targets(draft: _Draft, resolved: dict[str, _Resolved]) -> Sequence[str]:
    """The platforms a layer targets, as far as they are known (a broken layer: its own list)."""
    if draft.env_name in resolved:
        return resolved[draft.env_name].platforms
    if draft.kind is LayerKind.RUNTIME and draft.platforms is None:
        return PLATFORMS
    return draft.platforms or ()


def _windows_name_problem(env_name: str) -> str | None:
    """Why Windows cannot create a folder with this name, if it cannot."""
    bad = _WINDOWS_BAD_CHARS.search(env_name)
    if bad:
        return f'it contains {bad.group()!r}; Windows forbids any of : * ? " < > |'
    if env_name.endswith((" ", ".")):
        return "it ends with a space or a dot"
    if env_name.split(".")[0].rstrip(" ").upper() in _WINDOWS_DEVICES:
        return "it is a reserved device name"
    return None


def _toml_key(key: str) -> str:
    """`key` as written in a TOML table: bare if it can be, quoted otherwise."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


def _toml_string(text: str) -> str:
    """`text` as a TOML basic string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _parse_linux_target(value: str) -> tuple[int, int] | None:
    variant, at, version = value.partition("@")
    if variant != "glibc":
        return None
    if not at:
        return DEFAULT_GLIBC
    match = re.fullmatch(r"([0-9]+)\.([0-9]+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _parse_macosx(value: str) -> tuple[int, int] | None:
    match = re.fullmatch(r"([0-9]+)(?:\.([0-9]+))?", value.strip())
    if not match:
        return None
    return int(match.group(1)), int(match.group(2) or 0)


@dataclass
class _C3Conflict:
    remaining: list[list[str]]


def _c3_merge(sequences: list[list[str]]) -> list[str] | _C3Conflict:
    """Merge sequences with the C3 rule (Python's MRO algorithm)."""
    seqs = [list(s) for s in sequences if s]
    result: list[str] = []
    while seqs:
        for seq in seqs:
            head = seq[0]
            if not any(head in other[1:] for other in seqs):
                break
        else:
            return _C3Conflict(seqs)
        result.append(head)
        seqs = [[item for item in s if item != head] for s in seqs]
        seqs = [s for s in seqs if s]
    return result
