"""Every spec file in tests/specs: what it must load to, or exactly which problems it reports.

`error_*` files must fail with the problems listed in EXPECTED_ERRORS (a meta-test
keeps the table and the files in step), `warning_*` files must load with the
warnings in EXPECTED_WARNINGS, `valid_*` files must load cleanly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from stacks.errors import Problem, SpecError
from stacks.spec import StackSpec, load_spec

SPECS = Path(__file__).parent / "specs"
SPEC_SUFFIXES = (".toml", ".yaml", ".yml")


@dataclass(frozen=True)
class Expected:
    """One problem a spec must report: its layer and field, regexes for message and hint."""

    layer: str | None
    field: str | None
    message: str
    hint: str | None = None
    line: int | str | None = None  # syntax errors name the line: `file:line` (TOML `line:col`)


def fixtures(prefix: str) -> list[str]:
    """Spec files under tests/specs whose name starts with `prefix`, relative to tests/specs."""
    return sorted(
        path.relative_to(SPECS).as_posix()
        for path in SPECS.rglob(f"{prefix}*")
        if path.suffix in SPEC_SUFFIXES
    )


def load(name: str, environ: dict[str, str] | None = None) -> StackSpec:
    """Load a fixture with a controlled environment (the test runner's must not leak in)."""
    return load_spec(SPECS / name, environ=environ or {})


def problems(name: str, environ: dict[str, str] | None = None) -> list[Problem]:
    """The problems a fixture reports (it must fail to load)."""
    with pytest.raises(SpecError) as caught:
        load(name, environ)
    return caught.value.problems


EXPECTED_ERRORS: dict[str, list[Expected]] = {
    "error_missing_layer_name.toml": [Expected("runtimes[0]", "name", r"missing 'name'")],
    "error_unknown_field.toml": [
        Expected("framework-fw", "requirement", r"unknown field", r"did you mean 'requirements'")
    ],
    "error_field_of_other_kind.toml": [
        Expected("framework-fw", "launch_module", r"unknown field", r"only allowed on application")
    ],
    "error_wrong_type_requirements.toml": [
        Expected("cpython-3.12", "requirements", r"must be an array of strings, not a string")
    ],
    "error_wrong_type_in_list.toml": [
        Expected("cpython-3.12", "requirements", r"only strings, found an integer \(3\)")
    ],
    "error_wrong_type_versioned.toml": [
        Expected(
            "cpython-3.12",
            "versioned",
            r"must be true or false, not a string \('yes'\)",
            r"`versioned = true` or `versioned = false`, without quotes",
        )
    ],
    "error_wrong_type_name.toml": [
        Expected("runtimes[0]", "name", r"^must be a string, not an integer$", r'name = "cpython')
    ],
    "error_wrong_type_package_indexes.toml": [
        Expected(
            "cpython-3.12",
            "package_indexes",
            r"must be a table of package names to index names, not an array",
            r'e.g. package_indexes = \{ torch = "pytorch-cpu" \}',
        )
    ],
    "error_messages_name_the_value.toml": [
        Expected(
            "cpython-3.12",
            "package_indexes",
            r"the value for 'torch' must be an index name \(a string\), not an integer \(1\)",
            r"e.g. package_indexes = ",
        ),
        Expected(
            "cpython-3.12",
            "index_overrides",
            r"must be a table of index names to index names, not an integer",
            r'e.g. index_overrides = \{ pytorch-cpu = "pytorch-cu128" \}',
        ),
        Expected(
            "cpython-3.12",
            "platforms",
            r"must be an array of strings, not a string",
            r'e.g. platforms = \["linux_x86_64"\]',
        ),
        Expected("cpython-3.12", "source", r"^missing field 'url'$", r"url = \"https://"),
    ],
    "error_wrong_type_dynlib_exclude.toml": [
        Expected(
            "cpython-3.12",
            "dynlib_exclude",
            r"must be an array of strings, not a string",
            r'e.g. dynlib_exclude = \["libfoo.so\*"\] \(`\["\*"\]` turns linking off\)',
        )
    ],
    "error_wrong_type_runtime.toml": [
        Expected("framework-fw", "runtime", r"must be a runtime name \(a string\), not a table")
    ],
    "error_layer_not_table.toml": [
        Expected("frameworks[0]", None, r"each layer must be a table, not a string")
    ],
    "error_layers_not_array.toml": [
        Expected(None, "runtimes", r"must be an array of tables \(\[\[runtimes\]\]\), not a table")
    ],
    "error_missing_requirements.toml": [
        Expected("cpython-3.12", "requirements", r"missing 'requirements'", r"requirements = \[\]")
    ],
    "error_invalid_requirement_syntax.toml": [
        Expected("framework-fw", "requirements", r"invalid requirement syntax 'name<>'")
    ],
    "error_unknown_runtime.toml": [
        Expected("framework-fw", "runtime", r"unknown runtime 'cpython-3.11'", r"'cpython-3.12'")
    ],
    "error_unknown_framework.toml": [
        Expected("app-app", "frameworks", r"unknown framework 'nowhere'", r"known frameworks: none")
    ],
    "error_layer_dep_forward_reference.toml": [
        Expected(
            "framework-upper",
            "frameworks",
            r"unknown framework 'lower': it is defined later",
            r"defined earlier",
        )
    ],
    "error_layer_dep_cycle.toml": [
        Expected("framework-b", "frameworks", r"unknown framework 'd': it is defined later")
    ],
    "error_framework_on_itself.toml": [
        Expected("framework-self", "frameworks", r"unknown framework 'self'.*depends on this layer")
    ],
    "error_runtime_and_frameworks.toml": [
        Expected(
            "app-app",
            "runtime",
            r"runtime or framework dependencies, not both "
            r"\(runtime: 'cpython-3.12'; frameworks: \['fw'\]\)",
        )
    ],
    "error_neither_runtime_nor_frameworks.toml": [
        Expected("framework-fw", "runtime", r"must specify a runtime or at least one framework")
    ],
    "error_empty_frameworks.toml": [
        Expected("app-app", "frameworks", r"must list at least one framework")
    ],
    "error_duplicate_framework_reference.toml": [
        Expected(
            "app-app",
            "frameworks",
            r"lists framework 'fw' more than once$",
            r"list each framework once",
        )
    ],
    "error_inconsistent_runtimes.toml": [
        Expected(
            "app-app",
            "frameworks",
            r"inconsistent frameworks: 'on-312' requires runtime 'cpython-3.12'; "
            r"'on-311' requires runtime 'cpython-3.11'",
        )
    ],
    "error_layer_dep_C3_conflict.toml": [
        Expected(
            "app-layer",
            "frameworks",
            r"^dependency linearization failed: the frameworks below cannot be put in one"
            r" sys.path order: 'layerC' puts 'layerA' before 'layerB' \(it lists frameworks ="
            r' \["layerA", "layerB"\]\); but \'layerD\' puts \'layerB\' before \'layerA\''
            r' \(it lists frameworks = \["layerB", "layerA"\]\)$',
            r"^make the frameworks below agree on one order, e.g. in 'layerD':"
            r' frameworks = \["layerA", "layerB"\]$',
        )
    ],
    "error_unknown_platform.toml": [
        Expected(
            "cpython-3.11",
            "platforms",
            r"invalid target platform 'win32_x86_64'",
            r"expected one of: linux_x86_64, linux_aarch64, macosx_arm64, macosx_x86_64, "
            r"win_amd64, win_arm64",
        )
    ],
    "error_inconsistent_platforms.toml": [
        Expected(
            "app-app",
            "platforms",
            r"not supported by lower layers \(win_amd64\)",
            r"lower layers support: linux_x86_64$",
        )
    ],
    "error_platform_above_disabled_layer.toml": [
        Expected(
            "framework-fw",
            "platforms",
            r"not supported by lower layers \(macosx_arm64\)",
            r"support: none",
        )
    ],
    "error_invalid_linux_target_variant.toml": [
        Expected("cpython-3.12", "linux_target", r"libc variant.*\['glibc'\].*not 'unknown'")
    ],
    "error_invalid_linux_target_version.toml": [
        Expected("cpython-3.12", "linux_target", r"libc version.*'X.Y'.*not '235'")
    ],
    "error_invalid_linux_target_empty_version.toml": [
        Expected("cpython-3.12", "linux_target", r"libc version.*'X.Y'.*not ''")
    ],
    "error_invalid_macosx_target.toml": [
        Expected(
            "cpython-3.12",
            "macosx_target",
            r"'X' or 'X.Y'.*not '13.0.1'",
            r'e.g. macosx_target = "13.0"',
        )
    ],
    "error_macosx_target_number.toml": [
        Expected("cpython-3.12", "macosx_target", r"not 10.1$", r'quote it: macosx_target = "13.0"')
    ],
    "error_unknown_package_index.toml": [
        Expected(
            "cpython-3.12",
            "package_indexes",
            r"unknown package index 'pytorch-cpu' for 'torch'",
            r"\[\[tool.uv.index\]\]",
        )
    ],
    "error_unknown_priority_index.toml": [
        Expected(
            "cpython-3.12",
            "priority_indexes",
            r"unknown package index 'pytorch-cu'$",
            r"did you mean 'pytorch-cpu'",
        )
    ],
    "error_unknown_override_index.toml": [
        Expected("cpython-3.12", "index_overrides", r"unknown package index 'pytorch-cu128'")
    ],
    "error_inconsistent_runtime_indexes.toml": [
        Expected(
            "app-empty",
            "package_indexes",
            r"inconsistent package index override\(s\) for torch$",
            r"^specify 'index_overrides = \{pytorch-cpu = \"pytorch-cu128\"\}' to accept$",
        )
    ],
    "error_inconsistent_framework_indexes.toml": [
        Expected(
            "app-empty",
            "index_overrides",
            r"inconsistent package index override\(s\) for torch$",
            r"^specify 'index_overrides = \{pytorch-cpu = \"pytorch-cu128\"\}' to accept$",
        )
    ],
    "error_reversed_index_overrides.toml": [
        Expected(
            "app-empty",
            "index_overrides",
            r"^inconsistent package index override\(s\) for torch \(\{pytorch-cu128 ="
            r' "pytorch-cpu"\} is the wrong way round: the key is the index replaced, the value'
            r" the index used\)$",
            r"^specify 'index_overrides = \{pytorch-cpu = \"pytorch-cu128\"\}' to accept$",
        ),
        Expected(
            "app-own-pin",
            "package_indexes",
            r"for torch \(\{pytorch-cu128 = \"pytorch-cpu\"\} is the wrong way round",
            r"^specify 'index_overrides = \{pytorch-cpu = \"pytorch-cu128\"\}' to accept$",
        ),
    ],
    "error_inconsistent_app_indexes.toml": [
        Expected(
            "app-empty",
            "package_indexes",
            r"inconsistent package index override\(s\) for torch$",
            r"^specify 'index_overrides = \{pytorch-cpu = \"pytorch-cu128\"\}' to accept$",
        )
    ],
    "error_inconsistent_indexes_reported_once.toml": [
        Expected(
            "framework-mixed",
            "index_overrides",
            r"for torch$",
            r"index_overrides = \{pytorch-cpu = \"pytorch-cu128\"\}",
        )
    ],
    "error_missing_launch_module.toml": [
        Expected(
            "app-app",
            "launch_module",
            r"launch module 'launch/no_such_module.py' does not exist",
            r"relative to .*specs$",
        )
    ],
    "error_missing_launch_module_field.toml": [
        Expected("app-app", "launch_module", r"missing 'launch_module'")
    ],
    "error_missing_support_modules.toml": [
        Expected(
            "app-app",
            "support_modules",
            r"support modules do not exist: 'launch/gone.py', 'launch/gone_too'$",
        )
    ],
    "error_launch_support_conflict.toml": [
        Expected(
            "app-layer",
            "launch_module",
            r"launch module 'empty' conflicts with support module 'launch/conflicting/empty'",
        )
    ],
    "error_support_modules_conflict.toml": [
        Expected(
            "app-layer",
            "support_modules",
            r"conflicting support module names: 'launch/conflicting/helper' and "
            r"'launch/helper.py' are both module 'helper'",
        )
    ],
    "error_launch_module_not_python.toml": [
        Expected("app-app", "launch_module", r"must be a .py file or a package folder")
    ],
    "error_duplicate_runtime_names.toml": [
        Expected("cpython-3.12", "name", r"duplicate runtime name 'cpython-3.12'")
    ],
    "error_duplicate_framework_names.toml": [
        Expected("framework-fw", "name", r"duplicate framework name 'fw'")
    ],
    "error_duplicate_application_names.toml": [
        Expected("app-app", "name", r"duplicate application name 'app'")
    ],
    "error_fully_versioned_and_python_implementation.toml": [
        Expected(
            "cpython-3.11",
            "fully_versioned_name",
            r"sets both 'fully_versioned_name' and 'python_implementation'",
        )
    ],
    "error_missing_python_implementation.toml": [
        Expected("cpython-3.12", "python_implementation", r"missing 'python_implementation'")
    ],
    "error_bad_python_implementation.toml": [
        Expected(
            "cpython-3.12",
            "python_implementation",
            r"'cpython@X.Y' or 'cpython@X.Y.Z', not 'cpython3.12'",
            r'e.g. python_implementation = "cpython@3.12"',
        )
    ],
    "error_python_too_old.toml": [
        Expected(
            "cpython-3.7",
            "python_implementation",
            r"CPython 3.7 is older than the oldest runtime stacks builds \(3.8\)",
            r"cpython@3.12",
        ),
        Expected("cpython-2.7", "python_implementation", r"CPython 2.7.18 is older"),
    ],
    "error_unsupported_implementation.toml": [
        Expected("pypy-3.10", "python_implementation", r"unsupported implementation 'pypy'")
    ],
    "error_runtime_source_unknown.toml": [
        Expected("cpython-3.12", "source", r"unknown runtime source 'conda'", r"url = ")
    ],
    "error_runtime_source_table.toml": [
        Expected("cpython-3.12", "source.sha", r"unknown field", r"did you mean 'sha256'"),
        Expected("cpython-3.12", "source.url", r"http\(s\):// or file:// URL, not 'ftp://"),
        Expected("cpython-3.12", "source", r"^missing field 'sha256'$", r"sha256 = \"<64 hex"),
    ],
    "error_runtime_source_zip.toml": [
        Expected(
            "cpython-3.12",
            "source.url",
            r"^a .zip archive cannot be unpacked as a runtime$",
            r"use a tar archive: .tar.gz, .tgz, .tar.xz, .*.tar.zst",
        ),
        Expected("cpython-3.12", "source.sha256", r"sha256 as 64 hex digits"),
    ],
    "error_runtime_source_type.toml": [
        Expected("cpython-3.12", "source", r"string or a table \{url, sha256\}, not an integer")
    ],
    "error_tool_stacks_runtime_source.toml": [
        Expected(None, "tool.stacks.runtime_source", r"unknown runtime source 'conda'")
    ],
    "error_tool_stacks_python_mirror.toml": [
        Expected(None, "tool.stacks.python_mirror", r"URL, not 'mirror.example/pbs'")
    ],
    "error_tool_stacks_unknown_setting.toml": [
        Expected(
            None,
            "tool.stacks.runtime_sources",
            r"unknown setting",
            r"did you mean 'runtime_source'",
        )
    ],
    "error_env_name_clash.toml": [
        Expected(
            "framework-x",
            "name",
            r"env name clashes with runtime 'framework-x'$",
            r"rename one of them: their build and deployed folders would be the same",
        )
    ],
    "error_windows_layer_names.toml": [
        Expected(
            "cpython:3.12",
            "name",
            r"'cpython:3.12' cannot be a folder name on Windows \(it contains ':'",
            r"rename the layer, or give it `platforms` without win_amd64 and win_arm64$",
        ),
        Expected("nul.rt", "name", r"on Windows \(it is a reserved device name\)", r"win_amd64$"),
        Expected("framework-trailing.", "name", r"on Windows \(it ends with a space or a dot\)"),
    ],
    "error_bad_layer_name.toml": [
        Expected("cpython/3.12", "name", r"'cpython/3.12' cannot be used as a folder name")
    ],
    "error_uv_source_not_index.toml": [
        Expected(None, "tool.uv.sources.torch", r"only named-index sources are supported")
    ],
    "error_uv_source_unknown_index.toml": [
        Expected(None, "tool.uv.sources.torch", r"unknown package index 'pytorch-cu'")
    ],
    "error_uv_duplicate_index_name.toml": [
        Expected(None, "tool.uv.index[1].name", r"'pytorch-cpu' is defined more than once")
    ],
    "error_uv_source_fields.toml": [
        Expected(
            None,
            "tool.uv.sources.torch.marker",
            r"invalid marker \"sys_platform = 'linux'\"",
            r"PEP 508 marker",
        ),
        Expected(None, "tool.uv.sources.torchvision.extra", r"layers have no extras", r"marker"),
        Expected(None, "tool.uv.sources.torchaudio.git", r"cannot be combined with 'index'"),
        Expected(
            None,
            "tool.uv.sources.numpy.markers",
            r"unknown field of an index source",
            r"did you mean 'marker'",
        ),
    ],
    "uv_sibling/error_inline_hides_sibling.toml": [
        Expected(
            "cpython-3.12", "package_indexes", r"unknown package index 'from-sibling' for 'torch'"
        )
    ],
    "error_bad_name_checks_the_rest.toml": [
        Expected("cpython/3.12", "name", r"'cpython/3.12' cannot be used as a folder name"),
        Expected("cpython/3.12", "platforms", r"invalid target platform 'linux_x86'"),
        Expected("cpython/3.12", "versoined", r"unknown field", r"did you mean 'versioned'"),
        Expected("cpython/3.12", "requirements", r"missing 'requirements'"),
        Expected("cpython/3.12", "python_implementation", r"missing 'python_implementation'"),
        Expected("runtimes[1]", "name", r"missing 'name'"),
        Expected("runtimes[1]", "requirements", r"invalid requirement syntax 'bad<>'"),
        Expected("frameworks[1]", "name", r"^must not be empty$", r'e.g. name = "scipy"'),
        Expected("frameworks[1]", "runtime", r"unknown runtime 'cpython-3.12'"),
        Expected("app-app/x", "name", r"'app/x' cannot be used as a folder name"),
        Expected("app-app/x", "launch_module", r"missing 'launch_module'"),
    ],
    "error_list_items_all_reported.toml": [
        Expected(
            "cpython-3.12",
            "requirements",
            r"only strings, found an integer \(1\)$",
            r'requirements = \["attrs>=23.1"\]',
        ),
        Expected("cpython-3.12", "requirements", r"invalid requirement syntax 'bad<>'"),
        Expected("cpython-3.12", "platforms", r"only strings, found a table \(\{\}\)$"),
        Expected("cpython-3.12", "platforms", r"invalid target platform 'linux_x86'"),
    ],
    "error_support_clash_and_missing.toml": [
        Expected("app-layer", "launch_module", r"launch module 'empty' conflicts with support"),
        Expected(
            "app-layer", "support_modules", r"support modules do not exist: 'launch/gone.py'$"
        ),
    ],
    "error_unknown_and_unsupported_platforms.toml": [
        Expected("framework-fw", "platforms", r"invalid target platform 'win32_x86_64'"),
        Expected(
            "framework-fw",
            "platforms",
            r"not supported by lower layers \(win_amd64\)",
            r"lower layers support: linux_x86_64$",
        ),
    ],
    "error_reference_to_invalid_layer.toml": [
        Expected("framework-bad/name", "name", r"'bad/name' cannot be used as a folder name"),
        Expected(
            "app-app", "frameworks", r"unknown framework 'nowhere'$", r"known frameworks: ok$"
        ),
    ],
    "error_toml_syntax.toml": [
        Expected(None, None, r"^TOML syntax error: Invalid value", line="10:11")
    ],
    "error_yaml_syntax.yaml": [
        Expected(None, None, r"^YAML syntax error: .*expected <block end>", line=9)
    ],
    "error_yaml_duplicate_key.yaml": [
        Expected(
            None,
            None,
            r"^YAML error: duplicate key 'name' \(first on line 4\)$",
            r"remove one of them",
            line=7,
        )
    ],
    "error_yaml_wrong_types.yaml": [
        Expected("runtimes[0]", "name", r"^must be a string, not a number$"),
        Expected("cpython-3.11", "requirements", r"must be an array of strings, not null"),
        Expected("cpython-3.11", "versioned", r"must be true or false, not a string"),
    ],
    "error_many_at_once.toml": [
        Expected(None, "tool.stacks.runtime_source", r"unknown runtime source 'conda'"),
        Expected("cpython-3.12", "requirements", r"invalid requirement syntax 'bad<>'"),
        Expected("cpython-3.12", "platforms", r"invalid target platform 'linux_x86'"),
        Expected("runtimes[1]", "name", r"missing 'name'"),
        Expected("framework-fw", "runtime", r"unknown runtime 'cpython-3.11'"),
        Expected("framework-fw", "versoined", r"unknown field", r"did you mean 'versioned'"),
        Expected("framework-fw2", "linux_target", r"not 'musl'"),
        Expected("framework-fw2", "macosx_target", r"not 'ventura'"),
        Expected("app-app", "frameworks", r"unknown framework 'later'"),
        Expected("app-app", "launch_module", r"'launch/missing.py' does not exist"),
        Expected("app-app", "name", r"duplicate application name 'app'"),
    ],
}

EXPECTED_WARNINGS: dict[str, list[str]] = {
    "warning_tool_near_miss.toml": [
        r"^\S+: \[tool.stack\] is ignored \(did you mean \[tool.stacks\]\?\)$"
    ],
    "warning_launch_package_without_main.toml": [
        r"layer 'app-app', field 'launch_module': launch package 'launch/nomain' has no "
        r"__main__.py, so `python -m nomain` cannot run it\n  hint: add launch/nomain/__main__.py$"
    ],
    "warning_module_names.toml": [
        r"layer 'app-app', field 'launch_module': `python -m dotted.app` cannot run "
        r"'launch/dotted.app.py' \(the dot makes it look for a package 'dotted'\)",
        r"layer 'app-app', field 'support_modules': support module 'launch/bad-name.py' is "
        r"copied, but `import bad-name` cannot name it\n  hint: rename it to a Python identifier",
    ],
    "warning_no_common_platform.toml": [
        r"layer 'app-both' is disabled: its lower layers have no platform in common "
        r"\(framework-linux: linux_x86_64; framework-windows: win_amd64; cpython-3.12: all\)"
        r"\n  hint: set `platforms` on the lower layers .* `platforms = \[\]` on this layer"
    ],
    "warning_fully_versioned.toml": [
        r"layer 'cpython-3.11': converting legacy field 'fully_versioned_name' "
        r"to 'python_implementation'"
    ],
    "warning_build_requirements.toml": [
        r"layer 'runtime': dropping legacy field 'build_requirements'",
        r"layer 'framework-fw': dropping legacy field 'build_requirements'",
        r"layer 'app-app': dropping legacy field 'build_requirements'",
    ],
    "warning_at_symbol.toml": [
        r"layer 'framework-torch@2' has the folder name versioned layer 'framework-torch'"
        r" deploys as at lock version 2: the two would overwrite each other in one deployment"
        r"\n  hint: rename one of them \(or make the other layer unversioned\)$"
    ],
}


def test_every_error_fixture_has_expected_problems() -> None:
    """Each error_* file has an EXPECTED_ERRORS entry, and each entry has a file."""
    assert set(fixtures("error_")) == set(EXPECTED_ERRORS)


def test_every_warning_fixture_has_expected_warnings() -> None:
    """Each warning_* file has an EXPECTED_WARNINGS entry, and each entry has a file."""
    assert set(fixtures("warning_")) == set(EXPECTED_WARNINGS)


def match_problems(reported: list[Problem], expected: list[Expected], path: Path) -> None:
    """Every expected problem is reported, and nothing else."""
    unmatched = list(reported)
    for want in expected:
        for problem in unmatched:
            if (
                (problem.layer, problem.field) == (want.layer, want.field)
                and re.search(want.message, problem.message)
                and (want.hint is None or re.search(want.hint, problem.hint or ""))
            ):
                where = f"{path}:{want.line}" if want.line else str(path)
                assert problem.file == where
                unmatched.remove(problem)
                break
        else:
            pytest.fail(f"{want} not among:\n" + "\n".join(map(repr, unmatched)))
    assert not unmatched, f"unexpected problems: {unmatched}"


@pytest.mark.parametrize("name", sorted(EXPECTED_ERRORS))
def test_error_fixture_reports_its_problems(name: str) -> None:
    """An error_* spec fails with exactly its expected problems, all in one SpecError."""
    match_problems(problems(name), EXPECTED_ERRORS[name], SPECS / name)


@pytest.mark.parametrize("name", sorted(EXPECTED_WARNINGS))
def test_warning_fixture_loads_with_its_warnings(name: str) -> None:
    """A warning_* spec loads, with exactly its expected warnings (each naming the file)."""
    spec = load(name)
    assert len(spec.warnings) == len(EXPECTED_WARNINGS[name])
    for warning, pattern in zip(spec.warnings, EXPECTED_WARNINGS[name], strict=True):
        assert warning.startswith(f"{SPECS / name}: ")
        assert re.search(pattern, warning), warning


VALID = [*fixtures("valid_"), "uv_sibling/sibling_used.toml", "uv_sibling/inline_wins.toml"]


@pytest.mark.parametrize("name", VALID)
def test_valid_fixture_loads_without_warnings(name: str) -> None:
    """valid_* specs load with no problem and no warning."""
    spec = load(name)
    assert spec.layers
    assert spec.warnings == ()


@pytest.mark.parametrize("name", ["demo.toml", "demo.yaml"])
def test_demo_specs_load(name: str) -> None:
    """The repository's demo stack loads, in both formats, to the same layers."""
    spec = load_spec(SPECS.parent.parent / "specs" / name, environ={})
    assert [layer.env_name for layer in spec.layers] == [
        "cpython-3.12",
        "framework-attrs",
        "app-demo",
    ]
    assert spec.settings.runtime_source == "local"


def test_many_problems_are_one_error_and_counted() -> None:
    """All problems of a spec come in one SpecError whose text counts and lists them."""
    with pytest.raises(SpecError) as caught:
        load("error_many_at_once.toml")
    error = caught.value
    assert len(error.problems) == 11
    text = str(error)
    assert text.startswith("invalid stack spec (11 problems):\n")
    assert text.count("\n  - ") == 11
    assert error.exit_code == 2
