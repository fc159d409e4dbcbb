"""doit in a user's own project: a one-line dodo.py importing stacks.pipeline.doit_project."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from projects import no_traceback, write_project
from stackrun import Outcome

from stacks.errors import UsageError
from stacks.pipeline.doit_project import SPEC_NAMES, _doit_command, find_project_spec

ONE_LINE_DODO = "from stacks.pipeline.doit_project import *  # noqa: F403\n"

# A runtime without packages and an app straight on it: no index needed, quick to build.
TINY = """
[tool.stacks]
runtime_source = "local"

[[runtimes]]
name = "cpython-3.12"
python_implementation = "cpython@3.12"
requirements = []

[[applications]]
name = "tiny"
launch_module = "tiny_app.py"
runtime = "cpython-3.12"
requirements = []
"""


def doit_in(folder: Path, *args: str) -> Outcome:
    """Run the installed `doit` in `folder`, as a user would in their project."""
    doit_bin = Path(sys.executable).parent / "doit"
    command = [str(doit_bin)] if doit_bin.exists() else [sys.executable, "-m", "doit"]
    done = subprocess.run(
        [*command, *args],
        cwd=folder,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        timeout=600,
        check=False,
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


def test_the_project_spec_is_the_first_of_the_documented_names(tmp_path: Path) -> None:
    assert SPEC_NAMES == ("venvstacks.toml", "stack.toml", "stacks.toml", "stacks.yaml")
    for name in reversed(SPEC_NAMES):
        (tmp_path / name).write_text("")
        assert find_project_spec(tmp_path) == tmp_path / name


def test_no_project_spec_names_what_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as raised:
        find_project_spec(tmp_path)
    assert raised.value.exit_code == 2
    assert str(raised.value).startswith(
        f"no stack spec in {tmp_path}: looked for venvstacks.toml, stack.toml, stacks.toml,"
        " stacks.yaml\n  hint: "
    )


def test_the_doit_command_word_is_found_past_options_and_variables() -> None:
    assert _doit_command([]) is None
    assert _doit_command(["spec=x.toml"]) is None
    assert _doit_command(["-f", "list", "list"]) == "list"
    assert _doit_command(["--dir", "here", "-k", "clean", "-c"]) == "clean"
    assert _doit_command(["-n", "2", "build"]) is None  # options first: doit's `run`
    assert _doit_command(["spec=x.toml", "info", "build:app-x"]) == "info"


def test_without_a_spec_doit_says_which_names_it_looked_for(tmp_path: Path) -> None:
    (tmp_path / "dodo.py").write_text(ONE_LINE_DODO)
    out = doit_in(tmp_path, "list")
    assert out.code == 2, out.stderr
    assert "error: no stack spec in " in out.stderr
    assert "looked for venvstacks.toml, stack.toml, stacks.toml, stacks.yaml" in out.stderr
    no_traceback(out)


@pytest.mark.slow
def test_doit_list_and_doit_build_in_a_project_with_a_one_line_dodo(tmp_path: Path) -> None:
    project = tmp_path / "my project"
    spec = write_project(project, TINY, {"tiny_app.py": "print('tiny ok')\n"})
    spec.rename(project / "venvstacks.toml")
    (project / "dodo.py").write_text(ONE_LINE_DODO)

    listed = doit_in(project, "list", "--all")
    assert listed.code == 0, listed.stderr
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert {
        "build:app-tiny",
        "lock:cpython-3.12",
        "runtime:cpython-3.12",
        "export:app-tiny",
    } <= set(names)

    built = doit_in(project)  # the default tasks: build
    assert built.code == 0, built.stdout + built.stderr
    python = project / "cache" / "build" / "app-tiny" / "bin" / "python"
    ran = subprocess.run([python, "-m", "tiny_app"], capture_output=True, text=True, check=False)
    assert ran.stdout == "tiny ok\n"
    assert (project / "requirements" / "app-tiny").is_dir()

    again = doit_in(project)
    assert again.code == 0 and "-- build:app-tiny" in again.stdout  # up to date

    # spec= is relative to the project folder; another spec there gets its own outputs.
    other = project / "other"
    write_project(other, TINY.replace('"tiny"', '"other"'), {"tiny_app.py": "print('other')\n"})
    exported = doit_in(project, "export", "spec=other/stack.toml")
    assert exported.code == 0, exported.stdout + exported.stderr
    assert (other / "_export" / "app-other" / "bin" / "python").exists()
    assert not (project / "_export").exists()
    no_traceback(listed, built, again, exported)
