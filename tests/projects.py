"""Small real stack projects for the CLI end-to-end tests: specs, modules, copies, snapshots."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from stackrun import REPO, Outcome

EXCLUDE_NEWER = "2025-06-01T00:00:00Z"
LOCKED_AT = "2025-06-01T00:00:00+00:00"

# A runtime with six, a framework with attrs, an app with idna: three real, small layers.
SMALL_STACK = f"""
[tool.uv]
exclude-newer = "{EXCLUDE_NEWER}"

[tool.stacks]
runtime_source = "local"

[[runtimes]]
name = "cpython-3.12"
python_implementation = "cpython@3.12"
requirements = ["six"]

[[frameworks]]
name = "fw"
runtime = "cpython-3.12"
requirements = ["attrs"]

[[applications]]
name = "app"
launch_module = "app.py"
frameworks = ["fw"]
requirements = ["idna"]
"""
PYTHON_310 = Path("/root/.pyenv/versions/3.10.13/bin/python")


def private_uv_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point uv at a cache of the test module's own for every `stacks` run it makes.

    Other test runs on the machine edit hard-linked files of the shared uv cache on
    purpose (repair tests) and purge them again; a private cache keeps these tests apart.
    """
    cache = tmp_path_factory.mktemp("uv-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("UV_CACHE_DIR", str(cache))
        yield cache


def write_project(folder: Path, spec: str, modules: Mapping[str, str]) -> Path:
    """Write `stack.toml` (dedented) and the given module files into `folder`; return the spec."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in modules.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")
    path = folder / "stack.toml"
    path.write_text(textwrap.dedent(spec), encoding="utf-8")
    return path


def copy_project(spec: Path, folder: Path, *, with_locks: bool = True) -> Path:
    """Copy a project's sources (spec, modules, wheels, optionally its lock files) without its cache."""
    skip = {"cache", "_artifacts", "_export"} | (set() if with_locks else {"requirements"})
    shutil.copytree(
        spec.parent,
        folder,
        ignore=lambda d, names: [n for n in names if Path(d) == spec.parent and n in skip],
    )
    return folder / spec.name


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every file (content) and symlink (target) under `folder`, by relative POSIX path."""
    found: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            found[rel] = path.read_bytes()
    return found


def sha256_of(path: Path) -> str:
    """The sha256 hex digest of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def doit(*args: str | os.PathLike[str], check: bool = True) -> Outcome:
    """Run the repository's `doit` (root dodo.py) from the repository root."""
    doit_bin = Path(sys.executable).parent / "doit"
    command = [str(doit_bin)] if doit_bin.exists() else [sys.executable, "-m", "doit"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [*command, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    outcome = Outcome(done.returncode, done.stdout, done.stderr)
    if check and done.returncode != 0:
        raise AssertionError(
            f"doit {' '.join(map(str, args))} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    return outcome


def no_traceback(*outcomes: Outcome) -> None:
    """Fail if any of the outcomes printed a Python traceback."""
    for outcome in outcomes:
        assert "Traceback" not in outcome.stderr, outcome.stderr
        assert "Traceback" not in outcome.stdout, outcome.stdout
