"""`stacks show`: the tree, the JSON, --include, exit codes; as a subprocess and in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stacks import __version__
from stacks.cli import main
from stacks.spec import LayerKind, load_spec

SPECS = Path(__file__).parent / "specs"
OVERRIDES = ("STACKS_RUNTIME_SOURCE", "STACKS_PYTHON_MIRROR", "MACOSX_DEPLOYMENT_TARGET")


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`python -m stacks ARGS` in a clean environment."""
    env = {k: v for k, v in os.environ.items() if k not in OVERRIDES}
    return subprocess.run(
        [sys.executable, "-m", "stacks", *map(str, args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No environment overrides for in-process runs."""
    for name in OVERRIDES:
        monkeypatch.delenv(name, raising=False)


def show(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """`stacks show ARGS` in-process: exit code, stdout, stderr."""
    code = main(["show", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def show_json(capsys: pytest.CaptureFixture[str], *args: str | Path) -> dict[str, Any]:
    """The JSON document `stacks show --json ARGS` prints (it must succeed)."""
    code, out, err = show(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def names(document: dict[str, Any]) -> dict[str, list[str]]:
    """Layer names per kind in a `show --json` document."""
    return {
        kind: [entry["name"] for entry in document[kind]]
        for kind in ("runtimes", "frameworks", "applications")
    }


VERSIONED_TREE = """\
valid_versioned.toml
├── runtimes
│   └── *cpython-3.12 -> cpython-3.12@???
├── frameworks
│   ├── *framework-sci -> framework-sci@???
│   │   └── *cpython-3.12 -> cpython-3.12@???
│   └── *framework-plain
│       └── *cpython-3.12 -> cpython-3.12@???
└── applications
    └── *app-tool -> app-tool@???
        ├── *framework-sci -> framework-sci@???
        ├── *framework-plain
        └── *cpython-3.12 -> cpython-3.12@???
(* = no valid lock: run `stacks lock`)
"""


# ---------------------------------------------------------------- as a subprocess


def test_tree_output() -> None:
    """The tree: kinds, layers, their dependencies in sys.path order, deployed names."""
    result = run("show", SPECS / "valid_versioned.toml")
    assert result.returncode == 0, result.stderr
    assert result.stdout == VERSIONED_TREE
    assert result.stderr == ""


def test_json_output_subprocess() -> None:
    """--json prints one JSON document and nothing else on stdout."""
    result = run("show", "--json", SPECS / "valid_diamond.toml")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert list(document) == ["spec_name", "runtimes", "frameworks", "applications"]
    assert document["spec_name"] == "valid_diamond.toml"


@pytest.mark.parametrize(
    "spec",
    [
        "error_many_at_once.toml",
        "error_yaml_syntax.yaml",
        "error_toml_syntax.toml",
        "does_not_exist.toml",
        ".",
    ],
)
def test_bad_specs_exit_2_without_traceback(spec: str) -> None:
    """A spec error is printed as `error: ...` on stderr, exit 2, never a traceback."""
    result = run("show", SPECS / spec)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr


def test_every_problem_is_printed() -> None:
    """All problems of a spec are printed, with their hints."""
    result = run("show", SPECS / "error_many_at_once.toml")
    assert "invalid stack spec (11 problems):" in result.stderr
    assert result.stderr.count("\n  - ") == 11
    assert "hint: did you mean 'versioned'?" in result.stderr


def test_syntax_errors_name_the_line() -> None:
    """Syntax errors show `file:line` (TOML's also the column: `file:line:column`)."""
    toml_result = run("show", SPECS / "error_toml_syntax.toml")
    assert f"{SPECS / 'error_toml_syntax.toml'}:10:11: TOML syntax error" in toml_result.stderr
    yaml_result = run("show", SPECS / "error_yaml_syntax.yaml")
    assert f"{SPECS / 'error_yaml_syntax.yaml'}:9: YAML syntax error" in yaml_result.stderr


def test_version() -> None:
    """--version prints the version and exits 0."""
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"stacks {__version__}"


def test_no_arguments_is_a_usage_error() -> None:
    """No command prints usage on stderr and exits 2."""
    result = run()
    assert result.returncode == 2
    assert result.stderr.startswith("usage: python -m stacks")
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args",
    [["show"], ["show", "a.toml", "--bogus"], ["frobnicate"], ["show", "a.toml", "--include"]],
)
def test_bad_usage_exits_2(args: list[str]) -> None:
    """Missing or unknown arguments exit 2 with a usage message."""
    result = run(*args)
    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert "Traceback" not in result.stderr


def test_warnings_go_to_stderr_and_quiet_hides_them() -> None:
    """Spec warnings are printed on stderr as `warning: ...`; -q hides them."""
    spec = SPECS / "warning_build_requirements.toml"
    loud = run("show", spec)
    assert loud.returncode == 0
    assert loud.stderr.count("warning: ") == 3
    assert "dropping legacy field 'build_requirements'" in loud.stderr
    quiet = run("-q", "show", spec)
    assert (quiet.returncode, quiet.stderr) == (0, "")
    assert quiet.stdout == loud.stdout


def test_verbose_is_accepted() -> None:
    """-v (repeatable) does not change what show prints."""
    result = run("-vv", "show", SPECS / "valid_versioned.toml")
    assert (result.returncode, result.stdout) == (0, VERSIONED_TREE)


# ---------------------------------------------------------------- in-process


@pytest.mark.usefixtures("clean_env")
def test_tree_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    """main() prints the same tree as the command."""
    assert show(capsys, SPECS / "valid_versioned.toml") == (0, VERSIONED_TREE, "")


@pytest.mark.usefixtures("clean_env")
def test_json_shape(capsys: pytest.CaptureFixture[str]) -> None:
    """Each layer: name, install_target, has_valid_lock, platforms, dependencies (sys.path order)."""
    path = SPECS / "valid_platform_inference.toml"
    document = show_json(capsys, path)
    spec = load_spec(path, environ={})
    assert document["spec_name"] == "valid_platform_inference.toml"
    for kind in LayerKind:
        entries = document[kind.table]
        assert [e["name"] for e in entries] == [layer.env_name for layer in spec.of_kind(kind)]
        for entry in entries:
            layer = spec.layer(entry["name"])
            assert set(entry) == {
                "name",
                "install_target",
                "has_valid_lock",
                "platforms",
                "dependencies",
            }
            assert entry["install_target"] == layer.env_name
            assert entry["has_valid_lock"] is False
            assert entry["platforms"] == list(layer.platforms)
            assert [d["name"] for d in entry["dependencies"]] == list(layer.dependencies)
            for dependency in entry["dependencies"]:
                assert set(dependency) == {"name", "install_target", "has_valid_lock"}
    app = document["applications"][1]
    assert app["name"] == "app-inferred"
    assert app["platforms"] == ["linux_x86_64", "macosx_arm64"]
    assert [d["name"] for d in app["dependencies"]] == [
        "framework-both",
        "framework-inherits",
        "framework-no-arm-linux",
        "framework-no-windows",
        "cpython-3.12",
    ]


@pytest.mark.usefixtures("clean_env")
def test_json_install_targets_of_versioned_layers(capsys: pytest.CaptureFixture[str]) -> None:
    """Versioned layers without a lock show `<env>@???` as install target, also as dependencies."""
    document = show_json(capsys, SPECS / "valid_versioned.toml")
    (app,) = document["applications"]
    assert app["install_target"] == "app-tool@???"
    assert app["dependencies"] == [
        {"name": "framework-sci", "install_target": "framework-sci@???", "has_valid_lock": False},
        {"name": "framework-plain", "install_target": "framework-plain", "has_valid_lock": False},
        {"name": "cpython-3.12", "install_target": "cpython-3.12@???", "has_valid_lock": False},
    ]
    assert document["runtimes"][0]["dependencies"] == []


def write_runtime_lock(spec_path: Path, version: int) -> Path:
    """Give the versioned runtime of a copy of valid_versioned.toml a valid lock at `version`."""
    from stacks.hashing import hash_file_or_none
    from stacks.lock.metadata import LockMeta, LockOptions, lock_inputs, lock_paths

    spec = load_spec(spec_path, environ={})
    runtime = spec.layer("cpython-3.12")
    paths = lock_paths(spec, runtime)
    paths.folder.mkdir(parents=True)
    paths.pylock.write_text('lock-version = "1.0"\n', encoding="utf-8")
    inputs = lock_inputs(spec, runtime, LockOptions())
    meta = LockMeta(
        lock_version=version,
        locked_at="2025-01-01T00:00:00+00:00",
        requirements_hash="sha256:unused",
        lock_hash=hash_file_or_none(paths.pylock) or "",
        lock_input_hash=inputs.lock_input_hash,
        other_inputs_hash=inputs.other_inputs_hash,
        version_inputs_hash=inputs.version_inputs_hash,
        lower_locks={},
        inputs=inputs.readable(),
    )
    paths.meta.write_text(json.dumps(meta.to_json()), encoding="utf-8")
    return paths.pylock


@pytest.mark.usefixtures("clean_env")
def test_stale_lock_shows_no_version(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A valid lock gives `<env>@N`; once it is stale the layer shows `<env>@???`, everywhere."""
    path = tmp_path / "valid_versioned.toml"
    path.write_text((SPECS / "valid_versioned.toml").read_text(encoding="utf-8"))
    (tmp_path / "launch").mkdir()
    (tmp_path / "launch" / "empty.py").write_text("")
    pylock = write_runtime_lock(path, version=3)
    document = show_json(capsys, path)
    runtime = {"name": "cpython-3.12", "install_target": "cpython-3.12@3", "has_valid_lock": True}
    assert document["runtimes"][0]["install_target"] == "cpython-3.12@3"
    assert document["applications"][0]["dependencies"][-1] == runtime
    code, out, _ = show(capsys, path)
    assert code == 0 and "\n│   └── cpython-3.12 -> cpython-3.12@3\n" in out

    pylock.write_text('lock-version = "1.0"\n# edited by hand\n', encoding="utf-8")
    document = show_json(capsys, path)
    stale = {"name": "cpython-3.12", "install_target": "cpython-3.12@???", "has_valid_lock": False}
    assert document["runtimes"][0]["install_target"] == "cpython-3.12@???"
    assert document["applications"][0]["dependencies"][-1] == stale
    assert [d["dependencies"][-1] for d in document["frameworks"]] == [stale, stale]
    code, out, _ = show(capsys, path)
    assert code == 0 and "@3" not in out
    assert "\n│   └── *cpython-3.12 -> cpython-3.12@???\n" in out


@pytest.mark.usefixtures("clean_env")
def test_include_selects_dependencies_and_dependents(capsys: pytest.CaptureFixture[str]) -> None:
    """--include shows matching layers, what they depend on, and what depends on them."""
    document = show_json(capsys, SPECS / "valid_diamond.toml", "--include", "framework-extra")
    assert names(document) == {
        "runtimes": ["cpython-3.12"],
        "frameworks": ["framework-base", "framework-extra", "framework-extra2"],
        "applications": ["app-top", "app-sides"],
    }


@pytest.mark.usefixtures("clean_env")
def test_include_patterns_and_repeats(capsys: pytest.CaptureFixture[str]) -> None:
    """Patterns are fnmatch globs over env names; several --include add up."""
    path = SPECS / "valid_diamond.toml"
    apps = show_json(capsys, path, "--include", "app-s*")
    assert names(apps) == {
        "runtimes": ["cpython-3.12"],
        "frameworks": ["framework-base", "framework-left", "framework-right", "framework-extra"],
        "applications": ["app-sides"],
    }
    both = show_json(capsys, path, "--include", "app-s*", "--include", "framework-crossed")
    assert names(both)["frameworks"] == [
        "framework-base",
        "framework-left",
        "framework-right",
        "framework-extra",
        "framework-crossed",
    ]
    runtime = show_json(capsys, path, "--include", "cpython-*")
    assert sum(len(v) for v in names(runtime).values()) == 10  # everything sits on it


@pytest.mark.usefixtures("clean_env")
def test_include_in_tree(capsys: pytest.CaptureFixture[str]) -> None:
    """The tree honours --include too."""
    code, out, _ = show(capsys, SPECS / "valid_versioned.toml", "--include", "framework-plain")
    assert code == 0
    assert "framework-sci" not in out.split("applications")[0]
    assert "*app-tool -> app-tool@???" in out


@pytest.mark.usefixtures("clean_env")
def test_pattern_matching_nothing_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A pattern that matches no layer exits 2, naming the layers there are."""
    code, out, err = show(capsys, SPECS / "valid_diamond.toml", "--include", "nope*")
    assert (code, out) == (2, "")
    assert err.startswith("error: no layers match: nope*")
    assert "framework-middle" in err and "--allow-missing" in err


@pytest.mark.usefixtures("clean_env")
def test_allow_missing_turns_it_into_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    """--allow-missing: unmatched patterns warn, matched ones still select."""
    code, out, err = show(
        capsys,
        SPECS / "valid_diamond.toml",
        "--include",
        "nope*",
        "--include",
        "app-top",
        "--allow-missing",
        "--json",
    )
    assert code == 0
    assert err == "warning: no layers match: nope*\n"
    assert names(json.loads(out))["applications"] == ["app-top"]
    code, out, err = show(capsys, SPECS / "valid_diamond.toml", "--include", "x", "--allow-missing")
    assert (code, out) == (0, "valid_diamond.toml\n")


@pytest.mark.usefixtures("clean_env")
def test_disabled_layers_are_not_shown(capsys: pytest.CaptureFixture[str]) -> None:
    """Layers off everywhere (platforms = []) and layers above them are not shown at all."""
    path = SPECS / "valid_disabled_layers.toml"
    code, out, _ = show(capsys, path)
    assert code == 0
    assert "off" not in out
    document = show_json(capsys, path)
    assert names(document) == {
        "runtimes": ["cpython-3.12"],
        "frameworks": ["framework-on"],
        "applications": ["app-on-on"],
    }
    code, _, err = show(capsys, path, "--include", "framework-off")
    assert code == 2 and "no layers match: framework-off" in err


@pytest.mark.usefixtures("clean_env")
def test_pattern_matching_only_disabled_layers_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """A pattern that matches only disabled layers names them as disabled, and says why."""
    path = SPECS / "valid_disabled_layers.toml"
    code, out, err = show(capsys, path, "--include", "*-off", "--include", "nope")
    assert (code, out) == (2, "")
    assert err.startswith(
        "error: no layers match: *-off (only disabled layers: framework-off, framework-above-off, app-on-off), nope\n"
    )
    assert "hint: a layer is disabled when it has no target platforms" in err
    code, _, err = show(capsys, path, "--include", "*-off", "--allow-missing")
    assert code == 0
    assert (
        err
        == "warning: no layers match: *-off (only disabled layers: framework-off, framework-above-off, app-on-off)\n"
    )


@pytest.mark.usefixtures("clean_env")
def test_spec_errors_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    """In-process too, a bad spec returns 2 and prints `error:` with no traceback."""
    code, out, err = show(capsys, SPECS / "error_inconsistent_framework_indexes.toml")
    assert (code, out) == (2, "")
    assert err.startswith("error: invalid stack spec (1 problem):")
    assert 'index_overrides = {pytorch-cpu = "pytorch-cu128"}' in err
    assert "Traceback" not in err


@pytest.mark.usefixtures("clean_env")
def test_yaml_and_toml_show_the_same(capsys: pytest.CaptureFixture[str]) -> None:
    """The YAML twin of a spec shows the same layers."""
    toml_doc = show_json(capsys, SPECS / "valid_diamond.toml")
    yaml_doc = show_json(capsys, SPECS / "valid_diamond.yaml")
    assert {k: v for k, v in toml_doc.items() if k != "spec_name"} == {
        k: v for k, v in yaml_doc.items() if k != "spec_name"
    }


def test_environment_reaches_the_spec(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """show loads the spec with the process environment (a bad override is a spec error)."""
    monkeypatch.setenv("STACKS_RUNTIME_SOURCE", "conda")
    code, _, err = show(capsys, SPECS / "valid_runtime_only.toml")
    assert code == 2
    assert "STACKS_RUNTIME_SOURCE (environment)" in err


@pytest.mark.usefixtures("clean_env")
def test_no_arguments_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    """main([]) prints usage and returns 2."""
    assert main([]) == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.usefixtures("clean_env")
def test_version_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    """--version exits 0 after printing the version."""
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"stacks {__version__}"


@pytest.mark.usefixtures("clean_env")
def test_every_valid_fixture_shows(capsys: pytest.CaptureFixture[str]) -> None:
    """Every valid fixture shows as a tree and as JSON listing all its enabled layers."""
    for path in sorted(SPECS.glob("valid_*")):
        spec = load_spec(path, environ={})
        code, out, _ = show(capsys, path)
        assert code == 0 and out.startswith(path.name + "\n")
        document = show_json(capsys, path)
        shown = [
            entry["name"]
            for kind in ("runtimes", "frameworks", "applications")
            for entry in document[kind]
        ]
        assert sorted(shown) == sorted(layer.env_name for layer in spec.layers)


# ---------------------------------------------------------------- known CLI bugs (cli.py is
# being extended elsewhere; these document the bugs and start failing once they are fixed)


def test_closed_stdout_is_not_a_traceback(tmp_path: Path) -> None:
    """`stacks show big.toml | head -1` must not end in a BrokenPipeError traceback."""
    spec = tmp_path / "big.toml"
    tree = "".join(
        f'[[runtimes]]\nname = "rt{i:04d}"\npython_implementation = "cpython@3.12"\n'
        "requirements = []\n"
        for i in range(3000)
    )
    spec.write_text(tree, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in OVERRIDES}
    with subprocess.Popen(
        [sys.executable, "-m", "stacks", "show", str(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.read(20)
        process.stdout.close()
        err = process.stderr.read().decode()
        process.wait(timeout=60)
    assert "Traceback" not in err


def test_non_utf8_stdout_is_not_a_traceback() -> None:
    """With an ASCII-only stdout (e.g. a legacy Windows console) show must not crash."""
    env = {k: v for k, v in os.environ.items() if k not in OVERRIDES}
    env["PYTHONIOENCODING"] = "ascii"
    result = subprocess.run(
        [sys.executable, "-m", "stacks", "show", str(SPECS / "valid_runtime_only.toml")],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert b"Traceback" not in result.stderr
    assert result.returncode == 0


# A real SIGINT sent by the process to itself at a chosen point: the only way to land a Ctrl-C
# exactly during argument parsing or right after the work is done, which the random kills of
# the interruption harness hit only now and then.
_SIGINT_AT = {
    "during argument parsing": (
        "parse = cli.build_parser\n"
        "def build_parser(**options):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    return parse(**options)\n"
        "cli.build_parser = build_parser\n"
    ),
    "as the work ends": (
        "run = cli.main\n"
        "def main(argv=None):\n"
        "    code = run(argv)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    return code\n"
        "cli.main = main\n"
    ),
}


@pytest.mark.parametrize("moment", sorted(_SIGINT_AT))
def test_ctrl_c_at_any_moment_is_no_traceback(moment: str) -> None:
    """A Ctrl-C during parsing or as the run ends: 'interrupted', exit 130, no traceback."""
    script = (
        "import os, signal, sys\n"
        "from stacks.cli import entry as cli\n"
        + _SIGINT_AT[moment]
        + f"sys.argv = ['stacks', 'show', {str(SPECS / 'valid_runtime_only.toml')!r}]\n"
        "cli.console_main()\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in OVERRIDES}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 130, done.stderr
    assert "stacks: interrupted" in done.stderr
