"""What a loaded spec means: layer order (C3 = Python's MRO), platforms, names, settings."""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from mro import mro_orders
from tomlwriter import dumps

from stacks.errors import SpecError
from stacks.platforms import DEFAULT_GLIBC, DEFAULT_MACOSX, PLATFORMS
from stacks.spec import LayerKind, RuntimeSource, StackSpec, load_spec, select_layers

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SPECS = Path(__file__).parent / "specs"


def load(name: str, environ: dict[str, str] | None = None, **options: Any) -> StackSpec:
    """Load a fixture from tests/specs with a controlled environment."""
    return load_spec(SPECS / name, environ=environ or {}, **options)


def layer_names(spec: StackSpec) -> list[str]:
    """Env names of the enabled layers, in spec order."""
    return [layer.env_name for layer in spec.layers]


# ---------------------------------------------------------------- C3 = Python's MRO


@pytest.mark.parametrize(
    "name", ["valid_diamond.toml", "valid_platform_inference.toml", "valid_index_overrides.toml"]
)
def test_framework_order_is_python_mro(name: str) -> None:
    """Each layer's `linearised` frameworks are its Python MRO; the runtime comes last."""
    document = tomllib.loads((SPECS / name).read_text(encoding="utf-8"))
    expected = mro_orders(document)
    spec = load(name)
    for layer in spec.layers:
        if layer.kind is LayerKind.RUNTIME:
            assert layer.linearised == ()
            assert layer.dependencies == ()
            continue
        assert list(layer.linearised) == expected[layer.env_name], layer.env_name
        assert layer.dependencies == (*layer.linearised, layer.runtime)


def test_diamond_orders() -> None:
    """The diamond's orders, spelled out (what the MRO comparison above relies on)."""
    spec = load("valid_diamond.toml")
    assert spec.layer("framework-middle").linearised == (
        "framework-left",
        "framework-right",
        "framework-base",
    )
    assert spec.layer("framework-crossed").linearised == (
        "framework-right",
        "framework-left",
        "framework-base",
    )
    assert spec.layer("app-top").dependencies == (
        "framework-middle",
        "framework-left",
        "framework-right",
        "framework-extra2",
        "framework-extra",
        "framework-base",
        "cpython-3.12",
    )
    assert spec.layer("app-top").frameworks == ("framework-middle", "framework-extra2")


def test_c3_conflict_is_a_conflict_for_python_too() -> None:
    """The hierarchy the C3 fixture rejects is one Python cannot build classes for either."""
    a, b = type("layerA", (), {}), type("layerB", (), {})
    c, d = type("layerC", (a, b), {}), type("layerD", (b, a), {})
    with pytest.raises(TypeError, match="consistent method resolution"):
        type("layer", (c, d), {})
    with pytest.raises(SpecError):
        load("error_layer_dep_C3_conflict.toml")


def test_dependents_and_layer_lookup() -> None:
    """A spec finds layers by env name and what sits above each."""
    spec = load("valid_diamond.toml")
    assert spec.has_layer("framework-left") and not spec.has_layer("left")
    above_left = [layer.env_name for layer in spec.dependents("framework-left")]
    assert above_left == ["framework-middle", "framework-crossed", "app-top", "app-sides"]
    assert [layer.env_name for layer in spec.of_kind(LayerKind.APPLICATION)] == [
        "app-top",
        "app-sides",
    ]


# ---------------------------------------------------------------- layer fields


def test_layer_fields_of_each_kind() -> None:
    """Names get their kind's prefix; apps know their modules; the runtime's Python is shared."""
    spec = load("valid_diamond.toml")
    runtime, base, app = (spec.layer(n) for n in ("cpython-3.12", "framework-base", "app-sides"))
    assert (runtime.kind, runtime.name, runtime.runtime) == (
        LayerKind.RUNTIME,
        "cpython-3.12",
        "cpython-3.12",
    )
    assert (base.kind, base.name, base.env_name) == (
        LayerKind.FRAMEWORK,
        "base",
        "framework-base",
    )
    assert base.requirements == ("numpy>=2",)
    assert app.kind is LayerKind.APPLICATION
    assert app.python_implementation == "cpython@3.12"
    assert (app.python_version, app.python_xy) == ("3.12", "3.12")
    assert app.launch_module == SPECS / "launch" / "app_pkg"
    assert app.launch_module_name == "app_pkg"
    assert app.support_modules == (SPECS / "launch" / "helper.py",)
    assert app.platforms == PLATFORMS
    assert runtime.source == RuntimeSource("python-build-standalone")
    assert app.source is None


def test_app_modules_and_priority_indexes() -> None:
    """Support modules are sorted by path; priority_indexes stay on their own layer."""
    spec = load("valid_app_modules.toml")
    package = spec.layer("app-package")
    assert package.support_modules == (SPECS / "launch/another.py", SPECS / "launch/helper.py")
    assert package.launch_module_name == "app_pkg"
    assert spec.layer("app-file").launch_module_name == "empty"
    assert spec.layer("app-file").launch_module is not None
    assert spec.layer("app-file").launch_module.resolve() == SPECS / "launch" / "empty.py"
    assert spec.layer("framework-fw").priority_indexes == ("internal",)
    assert package.priority_indexes == ()
    assert spec.layer("app-file").priority_indexes == ("internal",)


def test_lock_name_has_no_dots() -> None:
    """pylock file names cannot contain dots, so the lock name replaces them."""
    spec = load("valid_runtime_only.toml")
    assert spec.layer("cpython-3.12").lock_name == "cpython-3_12"


def test_runtime_only_spec() -> None:
    """A spec with only runtimes is a stack."""
    spec = load("valid_runtime_only.toml")
    assert layer_names(spec) == ["cpython-3.11", "cpython-3.12"]
    assert spec.layer("cpython-3.11").python_implementation == "cpython@3.11.13"
    assert spec.layer("cpython-3.12").requirements == ("certifi",)
    assert spec.disabled == ()


def test_versioned_layers_deployed_name() -> None:
    """Versioned layers deploy as `<env>@<lock version>` (`@???` before a lock); others don't."""
    spec = load("valid_versioned.toml")
    assert spec.layer("cpython-3.12").deployed_name(4) == "cpython-3.12@4"
    assert spec.layer("framework-sci").deployed_name(None) == "framework-sci@???"
    assert spec.layer("framework-sci").deployed_name(1) == "framework-sci@1"
    assert spec.layer("framework-plain").deployed_name(7) == "framework-plain"
    assert spec.layer("app-tool").deployed_name(12) == "app-tool@12"
    assert spec.layer("app-tool").env_name == "app-tool"  # the build folder stays unversioned


# ---------------------------------------------------------------- platforms


def test_disabled_layer_and_layers_above_it() -> None:
    """`platforms = []` disables a layer, and layers that need it; others stay."""
    spec = load("valid_disabled_layers.toml")
    assert layer_names(spec) == ["cpython-3.12", "framework-on", "app-on-on"]
    assert spec.disabled == ("framework-off", "framework-above-off", "app-on-off")
    assert not spec.has_layer("framework-off")
    assert spec.dependents("cpython-3.12") == (spec.layer("framework-on"), spec.layer("app-on-on"))


def test_platforms_are_inferred_from_lower_layers() -> None:
    """Without `platforms`, a layer gets the intersection of its lower layers' platforms."""
    spec = load("valid_platform_inference.toml")
    platforms = {layer.env_name: layer.platforms for layer in spec.layers}
    assert platforms == {
        "cpython-3.12": ("linux_x86_64", "linux_aarch64", "macosx_arm64", "win_amd64"),
        "framework-no-arm-linux": ("linux_x86_64", "macosx_arm64", "win_amd64"),
        "framework-no-windows": ("linux_x86_64", "linux_aarch64", "macosx_arm64"),
        "framework-inherits": ("linux_x86_64", "macosx_arm64", "win_amd64"),
        "framework-both": ("linux_x86_64", "macosx_arm64"),
        "app-linux-only": ("linux_x86_64",),
        "app-inferred": ("linux_x86_64", "macosx_arm64"),
        "app-on-runtime": ("linux_x86_64", "linux_aarch64", "macosx_arm64", "win_amd64"),
    }


def test_runtime_defaults_to_all_six_platforms() -> None:
    """A runtime without `platforms` targets all six."""
    spec = load("valid_runtime_only.toml")
    assert spec.layer("cpython-3.11").platforms == PLATFORMS
    assert len(PLATFORMS) == 6


# ---------------------------------------------------------------- targets


def test_linux_and_macos_targets() -> None:
    """linux_target is glibc[@X.Y] (default 2.28); macosx_target is X[.Y] (default 13.0)."""
    spec = load("valid_targets.toml")
    targets = {x.env_name: (x.linux_target, x.macosx_target) for x in spec.layers}
    assert targets == {
        "defaults": (DEFAULT_GLIBC, DEFAULT_MACOSX),
        "glibc-plain": ((2, 28), (14, 0)),
        "glibc-new": ((2, 35), (13, 5)),
    }
    assert DEFAULT_GLIBC == (2, 28) and DEFAULT_MACOSX == (13, 0)
    assert spec.layer("glibc-new").dynlib_exclude == ("*",)


def test_macosx_default_comes_from_the_environment() -> None:
    """$MACOSX_DEPLOYMENT_TARGET at load time replaces 13.0 for layers that do not set it."""
    spec = load("valid_targets.toml", environ={"MACOSX_DEPLOYMENT_TARGET": "12.3"})
    assert spec.layer("defaults").macosx_target == (12, 3)
    assert spec.layer("glibc-plain").macosx_target == (14, 0)
    assert load("valid_targets.toml", environ={"MACOSX_DEPLOYMENT_TARGET": "15"}).layer(
        "defaults"
    ).macosx_target == (15, 0)


def test_bad_macosx_environment_is_a_spec_error() -> None:
    """A malformed $MACOSX_DEPLOYMENT_TARGET is reported like a spec problem."""
    with pytest.raises(SpecError) as caught:
        load("valid_targets.toml", environ={"MACOSX_DEPLOYMENT_TARGET": "sonoma"})
    (problem,) = caught.value.problems
    assert problem.field == "MACOSX_DEPLOYMENT_TARGET (environment)"
    assert "'sonoma'" in problem.message
    assert problem.hint and "macosx_target of defaults:" in problem.hint


def test_bad_macosx_environment_is_ignored_where_unused(write_spec: Callable[..., Path]) -> None:
    """A malformed $MACOSX_DEPLOYMENT_TARGET matters only to macOS layers without their own."""
    path = write_spec(
        """
        [[runtimes]]
        name = "linux"
        python_implementation = "cpython@3.12"
        requirements = []
        platforms = ["linux_x86_64", "win_amd64"]

        [[runtimes]]
        name = "mac"
        python_implementation = "cpython@3.12"
        requirements = []
        macosx_target = "14"

        [[frameworks]]
        name = "on-linux"
        runtime = "linux"
        requirements = []
        """
    )
    spec = load_spec(path, environ={"MACOSX_DEPLOYMENT_TARGET": "sonoma"})
    assert spec.layer("mac").macosx_target == (14, 0)
    assert spec.layer("framework-on-linux").macosx_target == DEFAULT_MACOSX


# ---------------------------------------------------------------- runtime sources


def test_runtime_source_forms_and_tool_stacks_default() -> None:
    """[tool.stacks] sets the default source; a runtime's own string or table wins."""
    spec = load("valid_runtime_sources.toml")
    assert spec.settings.runtime_source == "local"
    assert spec.settings.python_mirror == "https://mirror.example/pbs"
    assert spec.layer("default").source == RuntimeSource("local")
    assert spec.layer("pbs").source == RuntimeSource("python-build-standalone")
    archive = spec.layer("archive").source
    assert archive == RuntimeSource(
        "archive",
        url="https://example.invalid/cpython-3.12.tar.gz",
        sha256="abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
    )
    assert archive.describe() == "https://example.invalid/cpython-3.12.tar.gz"
    assert spec.layer("pbs").source.describe() == "python-build-standalone"


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://example.invalid/cpython-3.12.tgz", True),
        ("https://example.invalid/cpython-3.12.tar.zst?x=1", True),
        ("https://example.invalid/download/cpython", True),  # no telling: accepted
        ("file:///srv/python.tar.bz2", True),
        ("https://example.invalid/python-3.12.7-macos11.pkg", False),
        ("https://example.invalid/python%2Ezip", False),
    ],
)
def test_runtime_archive_urls_by_extension(
    write_spec: Callable[..., Path], url: str, ok: bool
) -> None:
    """A runtime archive URL ending in a format the unpacker cannot read is a spec error."""
    path = write_spec(
        f"""
        [[runtimes]]
        name = "rt"
        python_implementation = "cpython@3.12"
        requirements = []
        source = {{ url = "{url}", sha256 = "{"a" * 64}" }}
        """
    )
    if ok:
        assert load_spec(path, environ={}).layer("rt").source == RuntimeSource(
            "archive", url=url, sha256="a" * 64
        )
        return
    with pytest.raises(SpecError) as caught:
        load_spec(path, environ={})
    (problem,) = caught.value.problems
    assert problem.field == "source.url" and "cannot be unpacked" in problem.message


def test_without_tool_stacks_runtimes_are_downloaded() -> None:
    """No [tool.stacks]: python-build-standalone, no mirror; other tables are ignored."""
    spec = load("valid_no_tool_stacks.toml")
    assert spec.settings.runtime_source == "python-build-standalone"
    assert spec.settings.python_mirror is None
    assert spec.layer("cpython-3.12").source == RuntimeSource("python-build-standalone")


def test_environment_overrides_tool_stacks() -> None:
    """STACKS_RUNTIME_SOURCE / STACKS_PYTHON_MIRROR override [tool.stacks] for one run."""
    environ = {
        "STACKS_RUNTIME_SOURCE": "python-build-standalone",
        "STACKS_PYTHON_MIRROR": "file:///srv/mirror",
    }
    spec = load("valid_runtime_sources.toml", environ=environ)
    assert spec.settings.runtime_source == "python-build-standalone"
    assert spec.settings.python_mirror == "file:///srv/mirror"
    assert spec.layer("default").source == RuntimeSource("python-build-standalone")
    # A runtime's own `source` is not a default, so the environment leaves it alone.
    assert spec.layer("archive").source.kind == "archive"
    pbs_default = load("valid_no_tool_stacks.toml", environ={"STACKS_RUNTIME_SOURCE": "local"})
    assert pbs_default.layer("cpython-3.12").source == RuntimeSource("local")


def test_options_override_the_environment() -> None:
    """Explicit options (the CLI's) beat the environment, which beats the file."""
    environ = {"STACKS_RUNTIME_SOURCE": "local", "STACKS_PYTHON_MIRROR": "https://env.example"}
    spec = load(
        "valid_no_tool_stacks.toml",
        environ=environ,
        runtime_source="python-build-standalone",
        python_mirror="https://option.example",
    )
    assert spec.settings.runtime_source == "python-build-standalone"
    assert spec.settings.python_mirror == "https://option.example"


def test_bad_environment_overrides_are_spec_errors() -> None:
    """Bad override values are reported naming the environment variable."""
    environ = {"STACKS_RUNTIME_SOURCE": "conda", "STACKS_PYTHON_MIRROR": "mirror"}
    with pytest.raises(SpecError) as caught:
        load("valid_no_tool_stacks.toml", environ=environ)
    fields = sorted(p.field or "" for p in caught.value.problems)
    assert fields == [
        "STACKS_PYTHON_MIRROR (environment)",
        "STACKS_RUNTIME_SOURCE (environment)",
    ]


def test_empty_environment_values_are_unset() -> None:
    """An empty override variable means "not set", not "the empty source"."""
    spec = load(
        "valid_runtime_sources.toml",
        environ={"STACKS_RUNTIME_SOURCE": "", "STACKS_PYTHON_MIRROR": ""},
    )
    assert spec.settings.runtime_source == "local"
    assert spec.settings.python_mirror == "https://mirror.example/pbs"


# ---------------------------------------------------------------- uv settings and indexes


def test_sibling_uv_config_is_used_without_inline_tool_uv() -> None:
    """Without [tool.uv], the sibling venvstacks.uv.toml holds the uv settings."""
    spec = load("uv_sibling/sibling_used.toml")
    assert [i["name"] for i in spec.uv_config["index"]] == ["from-sibling"]
    assert spec.layer("cpython-3.12").package_indexes == (("torch", "from-sibling"),)


def test_inline_tool_uv_wins_over_the_sibling_file() -> None:
    """An inline [tool.uv] wins; the sibling file is ignored entirely (not merged)."""
    spec = load("uv_sibling/inline_wins.toml")
    assert [i["name"] for i in spec.uv_config["index"]] == ["inline"]
    assert load("valid_diamond.toml").uv_config == {}


def test_index_overrides_accept_the_clash_and_choose_the_index() -> None:
    """With the override entry, the replacement index is the one used, also further up."""
    spec = load("valid_index_overrides.toml")
    chosen = {
        layer.env_name: dict(layer.package_indexes)
        for layer in spec.layers
        if layer.kind is not LayerKind.RUNTIME
    }
    assert chosen == {
        "framework-pytorch-cpu": {"torch": "pytorch-cpu"},
        "framework-pytorch-cu128": {"torch": "pytorch-cu128"},
        "framework-both": {"torch": "pytorch-cu128"},
        "app-on-frameworks": {"torch": "pytorch-cu128"},
        "app-on-app": {"torch": "pytorch-cu128"},
        "app-on-runtime": {"torch": "pytorch-cu128"},
        "app-above-both": {"torch": "pytorch-cu128"},
    }


INCONSISTENT_INDEXES = [
    "error_inconsistent_runtime_indexes.toml",
    "error_inconsistent_framework_indexes.toml",
    "error_inconsistent_app_indexes.toml",
    "error_inconsistent_indexes_reported_once.toml",
]


@pytest.mark.parametrize("name", INCONSISTENT_INDEXES)
def test_index_hint_is_the_entry_that_fixes_the_spec(name: str, tmp_path: Path) -> None:
    """Adding exactly the `index_overrides = {...}` the hint names makes the spec load."""
    with pytest.raises(SpecError) as caught:
        load(name)
    (problem,) = caught.value.problems
    match = re.fullmatch(r"specify '(index_overrides = \{.*\})' to accept", problem.hint or "")
    assert match, problem.hint
    entry = tomllib.loads(match.group(1))["index_overrides"]
    document = tomllib.loads((SPECS / name).read_text(encoding="utf-8"))
    prefixes = {"frameworks": "framework-", "applications": "app-"}
    (target,) = [
        table
        for kind, prefix in prefixes.items()
        for table in document.get(kind, [])
        if prefix + table["name"] == problem.layer
    ]
    assert "index_overrides" not in target
    target["index_overrides"] = entry
    shutil.copytree(SPECS / "launch", tmp_path / "launch")
    fixed = tmp_path / name
    fixed.write_text(dumps(document), encoding="utf-8")
    spec = load_spec(fixed, environ={})
    assert dict(spec.layer(problem.layer).package_indexes) == {"torch": "pytorch-cu128"}


def test_index_hint_keeps_the_layers_other_overrides(write_spec: Callable[..., Path]) -> None:
    """When a layer already has overrides, the hint is the whole table to write."""
    path = write_spec(
        """
        [[tool.uv.index]]
        name = "a"
        url = "https://a.example"
        [[tool.uv.index]]
        name = "b"
        url = "https://b.example"
        [[tool.uv.index]]
        name = "my.index"
        url = "https://c.example"

        [[runtimes]]
        name = "rt"
        python_implementation = "cpython@3.12"
        requirements = []
        package_indexes = { torch = "my.index" }

        [[frameworks]]
        name = "fw"
        runtime = "rt"
        requirements = []
        package_indexes = { torch = "a" }
        index_overrides = { b = "a" }
        """
    )
    with pytest.raises(SpecError) as caught:
        load_spec(path, environ={})
    (problem,) = caught.value.problems
    assert problem.hint == 'specify \'index_overrides = {b = "a", "my.index" = "a"}\' to accept'


# ---------------------------------------------------------------- TOML and YAML


@pytest.mark.parametrize("stem", ["valid_diamond", "valid_platform_inference"])
def test_yaml_twin_gives_identical_layers(stem: str) -> None:
    """A hand-written YAML spec and its TOML twin load to equal frozen layers."""
    toml_spec, yaml_spec = load(f"{stem}.toml"), load(f"{stem}.yaml")
    assert toml_spec.layers == yaml_spec.layers
    assert toml_spec.disabled == yaml_spec.disabled
    assert toml_spec.settings == yaml_spec.settings


@pytest.fixture(scope="module")
def yaml_twins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of tests/specs where every TOML spec also has a YAML twin (`<stem>.twin.yaml`)."""
    root = tmp_path_factory.mktemp("twins") / "specs"
    shutil.copytree(SPECS, root)
    for path in root.rglob("*.toml"):
        if path.name == "venvstacks.uv.toml" or path.name == "error_toml_syntax.toml":
            continue
        document = tomllib.loads(path.read_text(encoding="utf-8"))
        path.with_suffix(".twin.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    return root


def outcome(path: Path) -> tuple[Any, ...]:
    """What loading a spec gives, with the file's own name taken out."""
    try:
        spec = load_spec(path, environ={})
    except SpecError as exc:
        assert all(p.file == str(path) for p in exc.problems)
        return ("error", [(p.layer, p.field, p.message, p.hint) for p in exc.problems])
    warnings = [w.removeprefix(f"{path}: ") for w in spec.warnings]
    return ("spec", spec.layers, spec.disabled, spec.settings, dict(spec.uv_config), warnings)


def twin_names() -> list[str]:
    """Every TOML spec fixture that has a YAML twin."""
    return sorted(
        p.relative_to(SPECS).as_posix()
        for p in SPECS.rglob("*.toml")
        if p.name not in ("venvstacks.uv.toml", "error_toml_syntax.toml")
    )


@pytest.mark.parametrize("name", twin_names())
def test_toml_and_yaml_mean_the_same(yaml_twins: Path, name: str) -> None:
    """Every TOML fixture and its YAML twin give equal layers, or equal problems."""
    toml_path = yaml_twins / name
    assert outcome(toml_path) == outcome(toml_path.with_suffix(".twin.yaml"))


def test_toml_syntax_error_names_file_and_line(write_spec: Callable[..., Path]) -> None:
    """A TOML syntax error points at its line and column (`file:line:column`)."""
    path = write_spec('[[runtimes]]\nname = "a"\nname = "b"\nx = = 1\n')
    with pytest.raises(SpecError) as caught:
        load_spec(path, environ={})
    (problem,) = caught.value.problems
    assert problem.file == f"{path}:3:11"
    assert problem.message.startswith("TOML syntax error: ")
    assert f"{path}:3:11: TOML syntax error" in str(caught.value)
    path = write_spec('[[runtimes]]\nname = "a"\nx = = 1\n')
    with pytest.raises(SpecError) as caught:
        load_spec(path, environ={})
    assert caught.value.problems[0].file == f"{path}:3:5"


def test_toml_error_at_end_of_document_names_last_line(write_spec: Callable[..., Path]) -> None:
    """An unfinished TOML document points at its last line."""
    path = write_spec('[[runtimes]]\nname = "a"\nrequirements = [\n')
    with pytest.raises(SpecError) as caught:
        load_spec(path, environ={})
    assert caught.value.problems[0].file == f"{path}:3"


@pytest.mark.parametrize(("name", "here"), [("stack.spec", "'.spec'"), ("stack", "no extension")])
def test_other_extensions_are_read_as_toml_and_say_so(
    write_spec: Callable[..., Path], name: str, here: str
) -> None:
    """A spec whose extension is neither TOML nor YAML is read as TOML; failing, it says why."""
    path = write_spec("runtimes:\n  - name: rt\n", name=name)
    with pytest.raises(SpecError) as caught:
        load_spec(path, environ={})
    (problem,) = caught.value.problems
    assert problem.message.startswith("TOML syntax error")
    assert problem.hint == (
        "the format is chosen by extension: .yaml or .yml is read as YAML, anything else"
        f" (here {here}) as TOML; rename a YAML spec to .yaml"
    )
    toml = write_spec("runtimes = [\n", name="stack.toml")
    with pytest.raises(SpecError) as caught:
        load_spec(toml, environ={})
    assert caught.value.problems[0].hint is None  # a .toml file is TOML: nothing to explain


def test_yaml_syntax_error_names_file_and_line(write_spec: Callable[..., Path]) -> None:
    """A YAML syntax error points at its line."""
    path = write_spec("runtimes:\n  - name: a\n    requirements: [\n", name="stack.yaml")
    with pytest.raises(SpecError) as caught:
        load_spec(path, environ={})
    (problem,) = caught.value.problems
    assert re.fullmatch(re.escape(str(path)) + r":[34]", problem.file)
    assert problem.message.startswith("YAML syntax error: ")


def test_yaml_value_error_names_file_and_line(write_spec: Callable[..., Path]) -> None:
    """A YAML value PyYAML cannot build (a 13th month) points at its line, no traceback."""
    path = write_spec("runtimes:\n  - name: a\n    when: 2021-13-45\n", name="stack.yml")
    with pytest.raises(SpecError) as caught:
        load_spec(path, environ={})
    (problem,) = caught.value.problems
    assert problem.file == f"{path}:3"
    assert "2021-13-45" in problem.message


def test_yaml_merge_keys_may_be_overridden(write_spec: Callable[..., Path]) -> None:
    """A key that overrides one merged in with `<<: *anchor` is no duplicate."""
    path = write_spec(
        "defaults: &defaults\n  python_implementation: cpython@3.11\n  requirements: []\n"
        "runtimes:\n  - <<: *defaults\n    name: rt\n    python_implementation: cpython@3.12\n",
        name="stack.yaml",
    )
    assert load_spec(path, environ={}).layer("rt").python_implementation == "cpython@3.12"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe not utf-8", r"not UTF-8 text"),
        (b"- a list\n- not a table\n", r"must be a table, not an array"),
    ],
)
def test_unreadable_documents(tmp_path: Path, content: bytes, message: str) -> None:
    """Files that are not UTF-8, or not a table at the top, are spec errors."""
    path = tmp_path / "stack.yaml"
    path.write_bytes(content)
    with pytest.raises(SpecError, match=message):
        load_spec(path, environ={})


def test_missing_spec_file(tmp_path: Path) -> None:
    """A spec path that does not exist, or is a folder, is a spec error."""
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "nope.toml", environ={})
    with pytest.raises(SpecError, match="is a folder"):
        load_spec(tmp_path, environ={})


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    """A spec saved with a UTF-8 byte order mark loads."""
    path = tmp_path / "stack.toml"
    text = (SPECS / "valid_runtime_only.toml").read_text(encoding="utf-8")
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert layer_names(load_spec(path, environ={})) == ["cpython-3.11", "cpython-3.12"]


def test_empty_spec_is_an_empty_stack(tmp_path: Path) -> None:
    """An empty file is a stack with no layers (not an error)."""
    for name in ("empty.toml", "empty.yaml"):
        (tmp_path / name).write_text("")
        spec = load_spec(tmp_path / name, environ={})
        assert spec.layers == () and spec.name == name and spec.spec_dir == tmp_path


@pytest.mark.parametrize(
    ("key", "meant"),
    [
        ("runtime", "runtimes"),
        ("framework", "frameworks"),
        ("application", "applications"),
        ("Applications", "applications"),
        ("aplications", "applications"),
    ],
)
def test_misspelt_layer_table_is_an_error(
    write_spec: Callable[..., Path], key: str, meant: str
) -> None:
    """A near-miss of a layer table would drop its layers silently: an error with did-you-mean."""
    path = write_spec(
        f"""
        [[runtimes]]
        name = "rt"
        python_implementation = "cpython@3.12"
        requirements = []

        [[{key}]]
        name = "a"
        runtime = "rt"
        requirements = []

        [[{key}]]
        name = "b"
        runtime = "rt"
        requirements = []
        """
    )
    with pytest.raises(SpecError) as caught:
        load_spec(path, environ={})
    (problem,) = caught.value.problems
    assert (problem.layer, problem.field) == (None, key)
    assert problem.message == "unknown top-level table"
    assert problem.hint == f"did you mean '{meant}'?"
    assert caught.value.exit_code == 2


def test_other_top_level_keys_are_ignored_or_warned(write_spec: Callable[..., Path]) -> None:
    """Other unknown top-level keys are ignored; a near-miss of [tool] gets a warning."""
    path = write_spec(
        """
        [tools.uv]
        x = 1

        [project]
        name = "ignored silently"
        """
    )
    spec = load_spec(path, environ={})
    assert spec.layers == ()
    assert spec.warnings == (f"{path}: top-level key 'tools' is ignored (did you mean 'tool'?)",)


# ---------------------------------------------------------------- odd values


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ('python_implementation = "cpython@3.12\\n"', "python_implementation", "cpython@X.Y"),
        ('python_implementation = "cpython@٣.١٢"', "python_implementation", "cpython@X.Y"),
        ('linux_target = "glibc@٢.٢٨"', "linux_target", "libc version"),
        ('launch_module = "x"', "launch_module", "unknown field"),
        ("platforms = [1]", "platforms", "only strings"),
        ('name = " spaced "', "name", "folder name on Windows"),
        ('name = "a\\\\b"', "name", "cannot be used as a folder name"),
        ('name = ".."', "name", "cannot be used as a folder name"),
        ('name = ""', "name", "^must not be empty$"),
        ('name = "  "', "name", "^must not be only spaces$"),
    ],
)
def test_odd_runtime_values(
    write_spec: Callable[..., Path], line: str, field: str, message: str
) -> None:
    """Near-miss values are rejected, not half-accepted."""
    body = {
        "name": '"rt"',
        "python_implementation": '"cpython@3.12"',
        "requirements": "[]",
    }
    key = line.split(" = ")[0]
    body[key] = line.split(" = ", 1)[1]
    text = "[[runtimes]]\n" + "".join(f"{k} = {v}\n" for k, v in body.items())
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(text), environ={})
    assert [(p.field, bool(re.search(message, p.message))) for p in caught.value.problems] == [
        (field, True)
    ]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (
            '[[runtimes]]\nname = ""\npython_implementation = "cpython@3.12"\nrequirements = []\n',
            "name",
        ),
        (
            '[[tool.uv.index]]\nname = ""\nurl = "https://example.invalid/simple"\n',
            "tool.uv.index[0].name",
        ),
        (
            '[[runtimes]]\nname = "rt"\npython_implementation = "cpython@3.12"\nrequirements = []\n'
            '[[applications]]\nname = "app"\nruntime = "rt"\nrequirements = []\nlaunch_module = ""\n',
            "launch_module",
        ),
        (
            '[[runtimes]]\nname = "rt"\npython_implementation = "cpython@3.12"\nrequirements = []\n'
            '[[applications]]\nname = "app"\nruntime = "rt"\nrequirements = []\n'
            'launch_module = "launch/app.py"\nsupport_modules = [""]\n',
            "support_modules",
        ),
    ],
)
def test_empty_strings_are_called_empty(
    write_spec: Callable[..., Path], text: str, field: str
) -> None:
    """An empty string is reported as empty (not as 'not a string'), with a hint."""
    path = write_spec(text)
    (path.parent / "launch").mkdir()
    (path.parent / "launch" / "app.py").write_text("")
    with pytest.raises(SpecError) as caught:
        load_spec(path, environ={})
    (problem,) = caught.value.problems
    assert problem.field == field
    assert re.fullmatch(r"(entries )?must not be empty", problem.message)
    assert problem.hint


def test_python_versions_with_prereleases(write_spec: Callable[..., Path]) -> None:
    """Pre-release Pythons are valid runtime versions."""
    path = write_spec(
        """
        [[runtimes]]
        name = "next"
        python_implementation = "CPython@3.14.0b1"
        requirements = []
        """
    )
    runtime = load_spec(path, environ={}).layer("next")
    assert runtime.python_implementation == "cpython@3.14.0b1"
    assert (runtime.python_version, runtime.python_xy) == ("3.14.0b1", "3.14")


def test_long_module_path_is_a_problem_not_a_crash(write_spec: Callable[..., Path]) -> None:
    """A launch module path the OS refuses to look at is reported, not raised."""
    path = write_spec(
        f"""
        [[runtimes]]
        name = "rt"
        python_implementation = "cpython@3.12"
        requirements = []

        [[applications]]
        name = "app"
        runtime = "rt"
        requirements = []
        launch_module = "{"x" * 5000}.py"
        support_modules = ["{"y" * 5000}.py"]
        """
    )
    with pytest.raises(SpecError) as caught:
        load_spec(path, environ={})
    fields = sorted(p.field or "" for p in caught.value.problems)
    assert fields == ["launch_module", "support_modules"]
    assert all(len(p.message) < 300 for p in caught.value.problems)


def test_self_referencing_yaml_is_reported_briefly(write_spec: Callable[..., Path]) -> None:
    """YAML aliases can make a value contain itself; the message stays short."""
    path = write_spec(
        "runtimes:\n  - name: rt\n    python_implementation: cpython@3.12\n"
        "    requirements: &loop [*loop]\n",
        name="stack.yaml",
    )
    with pytest.raises(SpecError) as caught:
        load_spec(path, environ={})
    (problem,) = caught.value.problems
    assert problem.field == "requirements" and len(problem.message) < 200


# ---------------------------------------------------------------- selection


def test_select_layers_includes_what_matched_needs_and_what_needs_it() -> None:
    """A pattern selects matching layers, the layers below them and the layers above them."""
    spec = load("valid_diamond.toml")
    selected, unmatched = select_layers(spec, ["framework-extra"])
    assert [layer.env_name for layer in selected] == [
        "cpython-3.12",
        "framework-base",
        "framework-extra",
        "framework-extra2",
        "app-top",
        "app-sides",
    ]
    assert unmatched == []
    below_only, _ = select_layers(spec, ["framework-extra"], with_dependents=False)
    assert [layer.env_name for layer in below_only] == [
        "cpython-3.12",
        "framework-base",
        "framework-extra",
    ]


def test_select_layers_reports_unmatched_patterns() -> None:
    """Patterns that match nothing (disabled layers included) are returned."""
    spec = load("valid_disabled_layers.toml")
    selected, unmatched = select_layers(spec, ["app-on-*", "framework-off", "nope*"])
    assert [layer.env_name for layer in selected] == ["cpython-3.12", "framework-on", "app-on-on"]
    assert unmatched == ["framework-off", "nope*"]
    everything, none_unmatched = select_layers(spec, [])
    assert everything == spec.layers and none_unmatched == []


def test_runtime_any_patch_is_off_unless_asked_for(write_spec: Callable[..., Path]) -> None:
    """[tool.stacks] runtime_any_patch, STACKS_RUNTIME_ANY_PATCH and the option opt in."""
    assert load("valid_no_tool_stacks.toml").settings.runtime_any_patch is False
    on = {"STACKS_RUNTIME_ANY_PATCH": "1"}
    assert load("valid_no_tool_stacks.toml", environ=on).settings.runtime_any_patch is True
    assert load("valid_no_tool_stacks.toml", runtime_any_patch=True).settings.runtime_any_patch
    text = (SPECS / "valid_no_tool_stacks.toml").read_text(encoding="utf-8")
    in_spec = write_spec("[tool.stacks]\nruntime_any_patch = true\n" + text)
    assert load_spec(in_spec, environ={}).settings.runtime_any_patch is True
    # The environment can turn the spec's setting off for one run.
    off = load_spec(in_spec, environ={"STACKS_RUNTIME_ANY_PATCH": "0"})
    assert off.settings.runtime_any_patch is False
    with pytest.raises(SpecError) as caught:
        load("valid_no_tool_stacks.toml", environ={"STACKS_RUNTIME_ANY_PATCH": "maybe"})
    assert [p.field for p in caught.value.problems] == ["STACKS_RUNTIME_ANY_PATCH (environment)"]
    bad = write_spec("[tool.stacks]\nruntime_any_patch = 'yes'\n" + text, name="bad.toml")
    with pytest.raises(SpecError) as caught:
        load_spec(bad, environ={})
    assert [p.field for p in caught.value.problems] == ["tool.stacks.runtime_any_patch"]
