"""venvstacks 0.8 command lines run through `stacks`, each option with its effect; CLI conveniences."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from projects import SMALL_STACK, no_traceback, private_uv_cache, write_project
from stackrun import Outcome, stacks

APP = "import attrs, idna, six\nprint(idna.__name__)\n"
LAYERS = ("cpython-3.12", "framework-fw", "app-app")

uv_cache = pytest.fixture(scope="module", autouse=True)(private_uv_cache)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An unlocked three-layer project (runtime, framework, app) in a folder of its own."""
    return write_project(tmp_path / "proj", SMALL_STACK, {"app.py": APP})


def planned(outcome: Outcome, step: str | None = None) -> dict[str, list[str]]:
    """task -> reasons of a `--dry-run --json` plan, optionally of one step."""
    return {
        p["task"]: p["reasons"]
        for p in outcome.data["plan"]
        if step is None or p["task"].startswith(f"{step}:")
    }


def plan(*args: str | Path) -> Outcome:
    """A dry run (no lock, no uv): what the command line would make stacks do."""
    return stacks(*args, "--dry-run", "--json")


# ---------------------------------------------------------------- what each option selects


def test_build_publish_and_no_build_choose_the_last_step(project: Path) -> None:
    assert "archive:app-app" in planned(plan("build", project, "--publish"))
    assert not planned(plan("build", project, "--no-publish"), "archive")
    no_build = planned(plan("build", project, "--no-build"))
    assert set(no_build) == {*(f"lock:{layer}" for layer in LAYERS), "runtime:cpython-3.12"}


def test_dependencies_and_derived_options_select_layers(project: Path) -> None:
    app = ("--include", "app-app")
    fw = ("--include", "framework-fw")
    # stacks publishes what the --include layers need unless told not to.
    assert set(planned(plan("publish", project, *app), "archive")) == {
        "archive:__stack__",
        *(f"archive:{layer}" for layer in LAYERS),
    }
    for only in ("--no-publish-dependencies", "--no-include-dependencies"):
        command = "publish" if only == "--no-publish-dependencies" else "build"
        extra = () if command == "publish" else ("--publish",)
        archives = planned(plan(command, project, *app, *extra, only), "archive")
        assert set(archives) == {"archive:app-app", "archive:__stack__"}, only
    assert "archive:cpython-3.12" in planned(
        plan("publish", project, *app, "--publish-dependencies"), "archive"
    )
    assert "archive:cpython-3.12" in planned(
        plan("build", project, *app, "--publish", "--include-dependencies"), "archive"
    )
    # Derived: the layers above the --include layers.
    assert "build:app-app" not in planned(plan("build", project, *fw), "build")
    assert "build:app-app" in planned(plan("build", project, *fw, "--build-derived"), "build")
    derived = planned(plan("publish", project, *fw, "--publish-derived"), "archive")
    assert "archive:app-app" in derived
    assert "export:app-app" in planned(
        plan("local-export", project, *fw, "--publish-derived"), "export"
    )
    # build --publish --build-derived builds the app but publishes only what was asked.
    mixed = planned(plan("build", project, *fw, "--publish", "--build-derived"))
    assert "build:app-app" in mixed and "archive:app-app" not in mixed


def test_moot_options_change_nothing_and_say_so(project: Path) -> None:
    base = plan("lock", project).data
    for option in ("--if-needed", "--no-if-needed", "--lock-dependencies", "--no-clean"):
        assert plan("lock", project, option).data == base, option
    build = plan("build", project).data
    for option in ("--lock", "--lock-if-needed", "--build", "--build-dependencies"):
        assert plan("build", project, option).data == build, option
    text = " ".join(stacks("lock", "--help").stdout.split())
    assert "--if-needed, --no-if-needed" in text and "a valid lock is never relocked" in text


def test_force_and_clean_force_the_asked_tasks(project: Path) -> None:
    forced = "forced (--clean or --force)"
    published = planned(plan("publish", project, "--force", "--include", "app-app"), "archive")
    assert forced in published["archive:app-app"]
    assert forced not in published["archive:framework-fw"]
    exported = planned(plan("local-export", project, "--force"), "export")
    assert all(forced in exported[f"export:{layer}"] for layer in LAYERS)
    assert forced in planned(plan("lock", project, "--clean"))["runtime:cpython-3.12"]
    clean = planned(plan("build", project, "--clean", "--publish", "--include", "app-app"))
    assert forced in clean["build:app-app"] and forced in clean["archive:app-app"]
    assert forced not in clean["build:framework-fw"]
    deps = planned(
        plan("build", project, "--clean", "--include", "app-app", "--build-dependencies")
    )
    assert all(forced in deps[f"build:{layer}"] for layer in LAYERS)


def test_relative_folders_are_resolved_against_the_spec_folder(
    project: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    spec_dir = project.parent
    out = subprocess.run(
        [
            *_stacks_argv(),
            "build",
            str(project),
            "--publish",
            "--output-dir",
            "out",
            "--build-dir",
            "bld",
            "--dry-run",
        ],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=_stacks_env(),
        check=True,
    )
    assert f"output folder out is {spec_dir / 'out'}" in out.stderr
    assert f"cache (build) folder bld is {spec_dir / 'bld'}" in out.stderr
    wheels = stacks("lock", project, "--no-index", "--local-wheels", "wheels", check=False)
    assert wheels.code == 2
    assert f"--local-wheels {spec_dir / 'wheels'}: no such folder" in wheels.stderr
    assert not (elsewhere / "bld").exists() and not (elsewhere / "out").exists()


def test_no_lock_if_needed_refuses_to_lock(project: Path) -> None:
    for option in ("--no-lock-if-needed", "--no-lock"):
        refused = stacks("build", project, option, check=False)
        assert refused.code == 1, refused.stderr
        assert "no valid lock for: cpython-3.12, framework-fw, app-app" in refused.stderr
        no_traceback(refused)
    assert not (project.parent / "requirements").exists()


# ---------------------------------------------------------------- parsing


def test_abbreviations_are_rejected(project: Path) -> None:
    for words in (["build", "--sho"], ["publish", "--out", "x"], ["lock", "--reset", "x"]):
        rejected = stacks(words[0], project, *words[1:], check=False)
        assert rejected.code == 2 and "unrecognized arguments" in rejected.stderr, words
    # The stand-alone deploy script too.
    deploy = subprocess.run(
        [*_stacks_argv()[:-1], "stacks.deploy", "x", "--targ", "t"],
        capture_output=True,
        text=True,
        env=_stacks_env(),
        check=False,
    )
    assert deploy.returncode == 2 and "--target" in deploy.stderr


def test_show_then_run(project: Path) -> None:
    shown = stacks("lock", project, "--show", "--dry-run")
    tree, _, rest = shown.stdout.partition("(* = no valid lock")
    assert tree.startswith("stack.toml\n") and "app-app" in tree
    assert "lock:app-app" in rest and "would run" in rest
    # With --json the tree goes to stderr and stdout stays one JSON document.
    as_json = stacks("lock", project, "--show", "--dry-run", "--json")
    assert "lock:app-app" in planned(as_json) and "stack.toml" in as_json.stderr


def test_mistyped_command_gets_a_suggestion() -> None:
    wrong = stacks("biuld", "x.toml", check=False)
    assert wrong.code == 2
    assert "unknown command 'biuld'; did you mean 'build'?" in wrong.stderr
    assert stacks("-v", "xyzzy", check=False).code == 2


def test_run_help_has_no_demo_names() -> None:
    text = stacks("run", "--help").stdout
    assert "APP" in text and "demo" not in text


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completion_is_valid_and_completes_commands_and_options(tmp_path: Path) -> None:
    script = tmp_path / "stacks.bash"
    script.write_text(stacks("completion", "bash").stdout, encoding="utf-8")
    subprocess.run(["bash", "-n", str(script)], check=True)
    probe = (
        f"source {script}\n"
        'complete_words() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _stacks;'
        ' echo "${COMPREPLY[*]}"; }\n'
        "complete_words stacks ''\n"
        "complete_words stacks bu\n"
        "complete_words stacks build --lock-i\n"
        "complete_words stacks publish --format ''\n"
    )
    lines = subprocess.run(
        ["bash", "-c", probe], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    commands = lines[0].split()
    assert {"show", "lock", "build", "publish", "local-export", "completion"} <= set(commands)
    assert lines[1:] == ["build", "--lock-if-needed", "tar.xz tar.zst tar.gz zip"]
    for shell in ("zsh", "fish"):
        text = stacks("completion", shell).stdout
        assert "local-export" in text and "lock-if-needed" in text


def test_list_json(project: Path) -> None:
    tasks = stacks("list", project, "--json", "--include", "framework-fw").data["tasks"]
    names = [t["task"] for t in tasks]
    assert "lock:framework-fw" in names and "lock:app-app" not in names
    with_status = stacks("list", project, "--json", "--status").data["tasks"]
    assert {t["status"] for t in with_status} <= {"run", "maybe", "up-to-date"}
    assert all(t["doc"] for t in with_status)


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_venvstacks_ci_script_runs_through_stacks(project: Path) -> None:
    """A venvstacks CI sequence, with relative folders, really locks, builds, publishes, exports."""
    spec_dir = project.parent
    folders = ("--build-dir", "bld")
    lock = stacks("lock", project, *folders, "--if-needed", "--json")
    assert "lock:app-app" in lock.ran() and (spec_dir / "bld" / "runtimes").is_dir()
    assert not (spec_dir / "cache").exists()
    locks = {p: p.read_bytes() for p in (spec_dir / "requirements").rglob("*") if p.is_file()}

    again = stacks("lock", project, *folders, "--clean", "--json")
    assert again.ran() == ["runtime:cpython-3.12"]  # the runtime afresh; the locks stand
    assert locks == {p: p.read_bytes() for p in locks}

    shown = stacks("build", project, *folders, "--show", "--clean", "--lock-if-needed")
    assert shown.stdout.startswith("stack.toml\n")
    assert "build:app-app" in shown.stderr
    assert (spec_dir / "bld" / "build" / "app-app" / "bin" / "python").exists()

    published = stacks(
        "build", project, *folders, "--publish", "--output-dir", "out", "--tag-outputs", "--json"
    )
    assert "archive:app-app" in published.ran()
    assert f"output folder out is {spec_dir / 'out'}" in published.stderr
    archives = sorted(p.name for p in (spec_dir / "out").glob("*.tar.xz"))
    assert archives == sorted(f"{layer}-linux_x86_64.tar.xz" for layer in LAYERS)

    forced = stacks(
        "publish",
        project,
        *folders,
        "--output-dir",
        "out",
        "--tag-outputs",
        "--force",
        "--include",
        "app-app",
        "--no-publish-dependencies",
        "--json",
    )
    assert forced.ran("archive") == ["archive:app-app"]  # the same bytes: the manifest stands

    exported = stacks("local-export", project, *folders, "--output-dir", "exp", "--json")
    assert "export:app-app" in exported.ran()
    python = spec_dir / "exp" / "app-app" / "bin" / "python"
    assert subprocess.run([python, "-m", "app"], capture_output=True, check=False).returncode == 0
    re_export = stacks(
        "local-export", project, *folders, "--output-dir", "exp", "--force", "--json"
    )
    assert set(re_export.ran("export")) >= {f"export:{layer}" for layer in LAYERS}

    rebuilt = stacks(
        "build",
        project,
        *folders,
        "--clean",
        "--include",
        "framework-fw",
        "--build-derived",
        "--build-dependencies",
        "--json",
    )
    assert set(rebuilt.ran("build")) == {f"build:{layer}" for layer in LAYERS}
    alone = stacks("build", project, *folders, "--clean", "--include", "framework-fw", "--json")
    assert "build:framework-fw" in alone.ran() and "build:cpython-3.12" not in alone.ran()
    no_traceback(lock, again, shown, published, forced, exported, re_export, rebuilt, alone)


@pytest.mark.slow
def test_clean_lists_what_it_removed(project: Path) -> None:
    stacks("build", project, "--include", "cpython-3.12")
    removed = stacks("clean", project, "--include", "cpython-3.12")
    paths = [Path(line) for line in removed.stdout.splitlines()]
    assert project.parent / "cache" / "build" / "cpython-3.12" in paths
    assert all(p.is_absolute() and not p.exists() for p in paths)
    stacks("build", project, "--include", "cpython-3.12")
    assert stacks("clean", project, "-q").stdout == ""


def _stacks_argv() -> list[str]:
    import sys

    return [sys.executable, "-m", "stacks"]


def _stacks_env() -> dict[str, str]:
    import os

    from stackrun import REPO

    return {**os.environ, "PYTHONPATH": str(REPO)}
