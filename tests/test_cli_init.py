"""`stacks init [DIR]`: a starter project that builds as is, never written over a file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from projects import no_traceback, snapshot
from stackrun import run_python, stacks

STARTER = ["stack.toml", "launch/hello_app.py", "dodo.py", ".gitignore"]


def files_in(folder: Path) -> list[str]:
    """Every file under `folder`, relative, sorted."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_init_writes_the_starter_project_into_a_new_folder(tmp_path: Path) -> None:
    project = tmp_path / "new" / "project"
    out = stacks("init", project)
    assert files_in(project) == sorted(STARTER)
    assert "wrote stack.toml, launch/hello_app.py, dodo.py, .gitignore" in out.stderr
    assert (
        f"next: cd {project} && stacks build stack.toml && stacks run stack.toml hello"
        in out.stderr
    )
    assert (project / "dodo.py").read_text().splitlines()[-1] == (
        "from stacks.pipeline.doit_project import *  # noqa: F403"
    )
    ignored = (project / ".gitignore").read_text().splitlines()
    assert {"cache/", "_artifacts/", "_export/"} <= set(ignored)
    shown = stacks("show", project / "stack.toml")
    assert shown.stdout.splitlines()[0] == "stack.toml"
    assert "framework-base" in shown.stdout and "app-hello" in shown.stdout
    assert "warning" not in shown.stderr
    # The default folder is the working one.
    here = tmp_path / "here"
    here.mkdir()
    stacks("init", cwd=here)
    assert files_in(here) == sorted(STARTER)


@pytest.mark.parametrize("existing", [*STARTER, "venvstacks.toml", "stacks.yaml", "launch"])
def test_init_never_overwrites_a_file_and_then_writes_nothing(
    tmp_path: Path, existing: str
) -> None:
    (tmp_path / existing).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / existing).write_text("mine\n")
    before = snapshot(tmp_path)
    out = stacks("init", tmp_path, check=False)
    assert out.code == 2
    assert out.stderr.startswith(
        f"error: stacks init: {tmp_path / existing} already exists; nothing was written\n"
    )
    assert "hint: stacks init never replaces a file" in out.stderr
    assert snapshot(tmp_path) == before
    no_traceback(out)


def test_init_on_a_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    out = stacks("init", tmp_path / "a-file", check=False)
    assert out.code == 2 and "is not a folder" in out.stderr


@pytest.mark.slow
def test_the_starter_project_builds_runs_and_works_with_doit(tmp_path: Path) -> None:
    project = tmp_path / "starter"
    stacks("init", project)
    built = stacks("build", "stack.toml", cwd=project)
    assert "0 failed" in built.stderr and "warning" not in built.stderr
    ran = stacks("run", "stack.toml", "hello", cwd=project)
    assert ran.stdout.startswith("hello from app-hello: attrs ")
    assert "idna -> xn--bcher-kva.example" in ran.stdout
    exported = stacks("export", "stack.toml", cwd=project)
    python = project / "_export" / "app-hello" / "bin" / "python"
    assert run_python(python, "-m", "hello_app").stdout.startswith("hello from app-hello")
    # Its dodo.py sees the same, up-to-date tasks.
    doit_bin = Path(sys.executable).parent / "doit"
    doit = subprocess.run(
        [str(doit_bin), "export"], cwd=project, capture_output=True, text=True, check=False
    )
    assert doit.returncode == 0, doit.stderr
    assert "-- export:app-hello" in doit.stdout and "-- build:app-hello" in doit.stdout
    # The outputs are what .gitignore names: git sees only the sources and the locks.
    if subprocess.run(["git", "--version"], capture_output=True, check=False).returncode == 0:
        subprocess.run(["git", "init", "-q", str(project)], check=True)
        status = subprocess.run(
            ["git", "-C", str(project), "status", "--porcelain", "--untracked-files=all"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        untracked = sorted(line[3:] for line in status.splitlines())
        assert [name for name in untracked if not name.startswith("requirements/")] == sorted(
            STARTER
        )
    no_traceback(built, ran, exported)
