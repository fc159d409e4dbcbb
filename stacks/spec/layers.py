"""Each layer table on its own: its name, the fields of its kind, and its clashes with the others."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from stacks.spec.document import path_kind
from stacks.spec.fields import FieldReader, LayerDraft
from stacks.spec.model import RUNTIME_SOURCES, LayerKind, RuntimeSource, StackSettings, module_name
from stacks.spec.names import name_too_long, warn_version_lookalikes
from stacks.spec.report import SpecReport, did_you_mean, show, type_name

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
    LayerKind.FRAMEWORK: ("runtime", "frameworks", "variants"),
    LayerKind.APPLICATION: ("runtime", "frameworks", "launch_module", "support_modules"),
}
# What no folder name can hold: path separators, control characters, and lone
# surrogates (which no file system encoding can write).
_NAME_BAD_CHARS = re.compile(r"[/\\\x00-\x1f\x7f\ud800-\udfff]")
# The oldest runtime Python: uv and the post-install step support nothing older.
MIN_PYTHON = (3, 8)
_IMPLEMENTATION = re.compile(
    r"(?P<impl>[A-Za-z]+)@(?P<version>[0-9]+\.[0-9]+(?:\.[0-9]+)?(?:(?:a|b|rc)[0-9]+)?)"
)
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


class LayerReader(FieldReader):
    """Checks each layer table of a spec on its own, reporting every problem."""

    def __init__(
        self,
        report: SpecReport,
        spec_dir: Path,
        index_names: set[str],
        macosx_default: tuple[int, int],
    ) -> None:
        super().__init__(report, index_names, macosx_default)
        self.spec_dir = spec_dir
        # Names of layers left out after a problem of their own (bad name, duplicate, env
        # name clash): references to them are not reported again as unknown.
        self.dropped: dict[LayerKind, set[str]] = {kind: set() for kind in LayerKind}

    def read_layers(self, document: dict[str, Any], settings: StackSettings) -> list[LayerDraft]:
        """Check every layer table of the document, in order: drafts, kept or not."""
        drafts: list[LayerDraft] = []
        seen_env: dict[str, str] = {}
        for kind in LayerKind:
            entries = document.get(kind.table, [])
            if not isinstance(entries, list):
                self.report.problem(
                    None,
                    kind.table,
                    f"must be an array of tables ([[{kind.table}]]), not {type_name(entries)}",
                )
                continue
            names_in_kind: set[str] = set()
            for position, entry in enumerate(entries):
                label = f"{kind.table}[{position}]"
                if not isinstance(entry, dict):
                    self.report.problem(
                        label, None, f"each layer must be a table, not {type_name(entry)}"
                    )
                    continue
                draft = self._load_layer(kind, label, entry, settings)
                drafts.append(draft)
                if not draft.kept:
                    if isinstance(entry.get("name"), str):
                        self.dropped[kind].add(entry["name"])
                    continue
                if draft.name in names_in_kind:
                    self.report.problem(
                        draft.env_name,
                        "name",
                        f"duplicate {kind.value} name '{draft.name}'",
                        "names must be unique within a kind",
                    )
                    draft.kept, draft.broken = False, True
                    continue
                names_in_kind.add(draft.name)
                if draft.env_name in seen_env:
                    self.report.problem(
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
        warn_version_lookalikes(self.report, drafts)
        return drafts

    def _load_layer(
        self, kind: LayerKind, label: str, entry: dict[str, Any], settings: StackSettings
    ) -> LayerDraft:
        """Check one layer table on its own (a draft with an unusable name is not `kept`)."""
        draft = self._layer_name(kind, label, entry.get("name"))
        allowed = (*_COMMON_FIELDS, *_KIND_FIELDS[kind])
        for key in entry:
            if key not in allowed:
                hint = did_you_mean(str(key), allowed)
                elsewhere = [k.value for k, f in _KIND_FIELDS.items() if key in f]
                if not hint and elsewhere:
                    hint = f"'{key}' is only allowed on {' and '.join(elsewhere)} layers"
                # Not `broken`: references can still be checked, so all problems show at once.
                self.report.problem(draft.env_name, str(key), "unknown field", hint)
        self.common_fields(draft, entry)
        if kind is LayerKind.RUNTIME:
            self._runtime_fields(draft, entry, settings)
        else:
            self._layered_fields(draft, entry)
        if kind is LayerKind.APPLICATION:
            self._app_fields(draft, entry)
        if kind is LayerKind.FRAMEWORK and "variants" in entry:
            from stacks.spec.variants import read_variants

            read_variants(self, draft, entry["variants"])
        return draft

    def _layer_name(self, kind: LayerKind, label: str, name: Any) -> LayerDraft:
        """A draft for a layer name; an unusable name is reported and labelled by position."""
        if name is None:
            self.report.problem(label, "name", "missing 'name'", "every layer needs a name")
            return LayerDraft(kind=kind, name="", env_name=label, kept=False, broken=True)
        if not isinstance(name, str) or not name.strip():
            if not isinstance(name, str):
                message = f"must be a string, not {type_name(name)}"
            else:
                message = "must not be empty" if not name else "must not be only spaces"
            example = {"runtime": "cpython-3.12", "framework": "scipy", "application": "demo"}
            self.report.problem(label, "name", message, f'e.g. name = "{example[kind.value]}"')
            return LayerDraft(kind=kind, name="", env_name=label, kept=False, broken=True)
        env_name = kind.prefix + name
        if name_too_long(self.report, kind, label, name):
            return LayerDraft(kind=kind, name=name, env_name=label, kept=False, broken=True)
        if _NAME_BAD_CHARS.search(name) or env_name in (".", ".."):
            self.report.problem(
                env_name,
                "name",
                f"{show(name)} cannot be used as a folder name",
                "leave out path separators ('/', '\\') and control characters"
                if _NAME_BAD_CHARS.search(name)
                else "'.' and '..' already name folders: choose another name",
            )
            return LayerDraft(kind=kind, name=name, env_name=env_name, kept=False, broken=True)
        return LayerDraft(kind=kind, name=name, env_name=env_name)

    def _runtime_fields(
        self, draft: LayerDraft, entry: dict[str, Any], settings: StackSettings
    ) -> None:
        env = draft.env_name
        implementation = entry.get("python_implementation")
        if "fully_versioned_name" in entry:
            if implementation is not None:
                self.report.problem(
                    env,
                    "fully_versioned_name",
                    "sets both 'fully_versioned_name' and 'python_implementation'",
                    "remove the legacy 'fully_versioned_name'",
                )
            else:
                self.report.warn(
                    f"layer '{env}': converting legacy field 'fully_versioned_name' to 'python_implementation'"
                )
                implementation = entry["fully_versioned_name"]
        match = (
            _IMPLEMENTATION.fullmatch(implementation) if isinstance(implementation, str) else None
        )
        if implementation is None:
            self.report.problem(
                env,
                "python_implementation",
                "missing 'python_implementation'",
                'add e.g. `python_implementation = "cpython@3.12"`',
            )
            draft.broken = True
        elif match is None:
            self.report.problem(
                env,
                "python_implementation",
                f"must look like 'cpython@X.Y' or 'cpython@X.Y.Z', not {show(implementation)}",
                'e.g. python_implementation = "cpython@3.12" (or "cpython@3.12.7" for an exact'
                " release)",
            )
            draft.broken = True
        elif match.group("impl").lower() != "cpython":
            self.report.problem(
                env,
                "python_implementation",
                f"unsupported implementation {show(match.group('impl'))}",
                "stacks builds CPython runtimes only: use 'cpython@X.Y'",
            )
            draft.broken = True
        elif any(len(part) > 6 for part in re.findall(r"[0-9]+", match.group("version"))):
            self.report.problem(
                env,
                "python_implementation",
                f"the version in {show(implementation)} has a number of more than 6 digits",
                'use a real CPython version, e.g. python_implementation = "cpython@3.12"',
            )
            draft.broken = True
        elif tuple(map(int, re.findall(r"[0-9]+", match.group("version"))[:2])) < MIN_PYTHON:
            self.report.problem(
                env,
                "python_implementation",
                f"CPython {match.group('version')} is older than the oldest runtime stacks "
                f"builds ({'.'.join(map(str, MIN_PYTHON))})",
                'use a supported CPython, e.g. python_implementation = "cpython@3.12"',
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
            self.report.problem(
                env,
                "source",
                f"unknown runtime source {show(value)}",
                f"use {RUNTIME_SOURCES[0]!r}, {RUNTIME_SOURCES[1]!r} or {{url = ..., sha256 = ...}}",
            )
            return RuntimeSource(settings.runtime_source)
        if isinstance(value, dict):
            for key in sorted(set(value) - {"url", "sha256"}, key=str):
                self.report.problem(
                    env,
                    f"source.{key}",
                    "unknown field",
                    did_you_mean(str(key), ("url", "sha256")),
                )
            return self._archive_source(env, value) or RuntimeSource(settings.runtime_source)
        self.report.problem(
            env, "source", f"must be a string or a table {{url, sha256}}, not {type_name(value)}"
        )
        return RuntimeSource(settings.runtime_source)

    def _archive_source(self, env: str, value: dict[str, Any]) -> RuntimeSource | None:
        """`source = {url, sha256}`: an explicit runtime archive (None if it has a problem)."""
        example = 'source = { url = "https://.../python.tar.gz", sha256 = "<64 hex digits>" }'
        ok = True
        for key in ("url", "sha256"):
            if key not in value:
                self.report.problem(env, "source", f"missing field '{key}'", f"e.g. {example}")
                ok = False
        url, sha = value.get("url"), value.get("sha256")
        if "url" in value and (not isinstance(url, str) or not re.match(r"^(https?|file)://", url)):
            self.report.problem(
                env, "source.url", f"must be an http(s):// or file:// URL, not {show(url)}"
            )
            ok = False
        elif "url" in value and not self._unpackable(env, str(url)):
            ok = False
        if "sha256" in value and (not isinstance(sha, str) or not _SHA256.match(sha)):
            self.report.problem(
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

        from stacks.spec.model import ARCHIVE_SUFFIXES, UNSUPPORTED_SUFFIXES

        path = unquote(urlsplit(url).path).lower()
        if path.endswith(ARCHIVE_SUFFIXES):
            return True
        suffix = next((s for s in UNSUPPORTED_SUFFIXES if path.endswith(s)), None)
        if suffix is None:
            return True  # no telling from the name: the archive's content decides
        self.report.problem(
            env,
            "source.url",
            f"a {suffix} archive cannot be unpacked as a runtime",
            f"use a tar archive: {', '.join(ARCHIVE_SUFFIXES)}",
        )
        return False

    def _layered_fields(self, draft: LayerDraft, entry: dict[str, Any]) -> None:
        env = draft.env_name
        runtime = entry.get("runtime")
        has_frameworks = "frameworks" in entry
        frameworks, clean = self.string_list(draft, entry, "frameworks")
        if not clean:
            draft.broken = True  # its references are still checked
        if runtime is not None and not isinstance(runtime, str):
            self.report.problem(
                env, "runtime", f"must be a runtime name (a string), not {type_name(runtime)}"
            )
            draft.broken = True
            return
        if runtime is not None and has_frameworks:
            self.report.problem(
                env,
                "runtime",
                f"must specify a runtime or framework dependencies, not both (runtime: {show(runtime)}; frameworks: {show(entry['frameworks'])})",
                "keep one: with frameworks, the runtime is theirs",
            )
            draft.broken = True
            return
        if runtime is None and not has_frameworks:
            self.report.problem(
                env,
                "runtime",
                "must specify a runtime or at least one framework dependency",
                'add `runtime = "<runtime name>"` or `frameworks = ["<name>"]`',
            )
            draft.broken = True
            return
        if frameworks is not None and not frameworks and clean:
            self.report.problem(
                env,
                "frameworks",
                "must list at least one framework",
                'use `runtime = "<runtime name>"` for a layer directly on a runtime',
            )
            draft.broken = True
            return
        if frameworks is not None and len(set(frameworks)) != len(frameworks):
            repeated = sorted({f for f in frameworks if frameworks.count(f) > 1})
            self.report.problem(
                env,
                "frameworks",
                "lists "
                + " and ".join(f"framework {show(f)}" for f in repeated)
                + " more than once",
                "list each framework once",
            )
            frameworks = tuple(dict.fromkeys(frameworks))  # the rest is still checked
        draft.runtime_ref = runtime
        draft.framework_refs = frameworks

    def _app_fields(self, draft: LayerDraft, entry: dict[str, Any]) -> None:
        env = draft.env_name
        launch = entry.get("launch_module")
        if launch is None:
            self.report.problem(
                env,
                "launch_module",
                "missing 'launch_module'",
                'add e.g. `launch_module = "launch/app.py"`',
            )
        elif not isinstance(launch, str) or not launch:
            self.report.problem(
                env,
                "launch_module",
                "must not be empty"
                if launch == ""
                else f"must be a path string, not {type_name(launch)}",
                'e.g. `launch_module = "launch/app.py"` (relative to the spec\'s folder)',
            )
            launch = None
        support = sorted(self.string_list(draft, entry, "support_modules")[0] or ())
        if "" in support:
            self.report.problem(
                env,
                "support_modules",
                "entries must not be empty",
                "remove the empty entry (it would name the spec's whole folder)",
            )
            support = [s for s in support if s]
        support_paths = [self.spec_dir / s for s in support]
        launch_path = self.spec_dir / launch if launch else None
        # Name clashes are reported first (as venvstacks does), then whether the modules exist.
        names: dict[str, str] = {}  # module name -> the support module path as written
        for shown, support_path in zip(support, support_paths, strict=True):
            stem = module_name(support_path)
            if stem in names:
                self.report.problem(
                    env,
                    "support_modules",
                    f"conflicting support module names: {show(names[stem])} and {show(shown)}"
                    f" are both module {show(stem)}",
                    "rename one of them",
                )
            names[stem] = shown
        launch_stem = module_name(launch_path) if launch_path is not None else None
        if launch_stem in names:
            self.report.problem(
                env,
                "launch_module",
                f"launch module {show(launch_stem)} conflicts with support module"
                f" {show(names[launch_stem])}",
                "rename the support module",
            )
        if launch_path is not None and self._check_module(
            env, "launch_module", launch_path, launch or "", launch=True
        ):
            draft.launch_module = launch_path
        kinds = [path_kind(p) for p in support_paths]
        missing = [s for s, kind in zip(support, kinds, strict=True) if kind == "missing"]
        if missing:
            self.report.problem(
                env,
                "support_modules",
                "support modules do not exist: " + ", ".join(show(m) for m in missing),
                f"paths are relative to {self.spec_dir}",
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
        kind = path_kind(path)
        if kind == "missing":
            self.report.problem(
                env,
                fld,
                f"launch module {show(shown)} does not exist",
                f"paths are relative to {self.spec_dir}",
            )
            return False
        if kind.startswith("unusable"):
            self.report.problem(
                env, fld, f"{show(shown)} cannot be used: {kind.partition(': ')[2]}"
            )
            return False
        if kind == "other":
            self.report.problem(
                env,
                fld,
                f"{show(shown)} is not a file or a folder",
                "point it at the module file or package folder to copy",
            )
            return False
        if launch and kind == "file" and path.suffix != ".py":
            self.report.problem(env, fld, f"{show(shown)} must be a .py file or a package folder")
            return False
        name = module_name(path)
        where = f"layer '{env}', field '{fld}'"
        if launch and "." in name:
            self.report.warn(
                f"{where}: `python -m {name}` cannot run {show(shown)} (the dot makes it look"
                f" for a package {show(name.partition('.')[0])})"
                "\n  hint: rename it without dots"
            )
        elif launch and kind == "dir" and path_kind(path / "__main__.py") != "file":
            self.report.warn(
                f"{where}: launch package {show(shown)} has no __main__.py, so"
                f" `python -m {name}` cannot run it\n  hint: add {shown}/__main__.py"
            )
        elif not launch and (kind == "dir" or path.suffix == ".py") and not name.isidentifier():
            self.report.warn(
                f"{where}: support module {show(shown)} is copied, but `import {name}` cannot"
                " name it\n  hint: rename it to a Python identifier (letters, digits, '_')"
                " if it is meant to be imported"
            )
        return True
