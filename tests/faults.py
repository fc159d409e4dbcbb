"""Helpers for the fault tests: a small real project, snapshots of outputs, killable runs."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from projects import EXCLUDE_NEWER, SMALL_STACK
from stackrun import REPO

SMALL_APP = """
import attrs, idna, six
print("ok", six.__name__, attrs.__name__, idna.__name__)
"""


# The small stack plus a second framework beside the first: its builds can overlap, so under
# `-n 2` they run in doit's worker processes (a chain of builds runs in the main process).
WIDE_STACK = (
    SMALL_STACK
    + """
[[frameworks]]
name = "fw2"
runtime = "cpython-3.12"
requirements = ["idna"]
"""
)


def make_small_project(folder: Path, spec: str = SMALL_STACK) -> Path:
    """Write the small three-layer spec and its launch module; return the spec path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app.py").write_text(textwrap.dedent(SMALL_APP), encoding="utf-8")
    path = folder / "stack.toml"
    path.write_text(textwrap.dedent(spec), encoding="utf-8")
    return path


def stacks_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a `stacks` subprocess runs with (this checkout first on sys.path)."""
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def start_stacks(
    *args: str | os.PathLike[str], env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start `python -m stacks ARGS` in its own process group (so a terminal-like SIGINT can reach all of it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "stacks", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=stacks_env(env),
        start_new_session=True,
    )


def end_group(process: subprocess.Popen[str]) -> None:
    """Kill whatever is left of a process group this test started (orphaned children)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def interpreter_startup_error(stderr: str) -> bool:
    """Whether `stderr` is CPython's own fatal error for a signal during its start-up.

    A signal in the interpreter's first milliseconds (core start-up, the `site` module),
    before any code of stacks runs, ends Python with "Fatal Python error: init_...".
    """
    return stderr.startswith("Fatal Python error: init_")


FIRST_IMPORT = "from stacks.startup import quit_on_ctrl_c"  # stacks/__main__.py, line 3


def stopped_before_stacks_ran(stderr: str) -> bool:
    """Whether Python itself stopped on a signal before any code of stacks ran, by its output.

    CPython's "Fatal Python error: init_..." (core start-up, `site`), or a KeyboardInterrupt
    traceback of Python's own frames (runpy finding the package, the import system) and of
    `stacks/__main__.py` importing the module that sets the handler: that import statement
    is the first line of stacks that runs.
    """
    if interpreter_startup_error(stderr):
        return True
    lines = [line.strip() for line in stderr.splitlines()]
    for index, line in enumerate(lines):
        if line.startswith("File ") and not line.startswith('File "<frozen '):
            first_line = line.endswith('__main__.py", line 3, in <module>')
            if not (first_line and lines[index + 1 : index + 2] == [FIRST_IMPORT]):
                return False
    return "Traceback (most recent call last):" in lines and lines[-1:] == ["KeyboardInterrupt"]


def leftovers(*folders: Path) -> list[str]:
    """Temporary entries of unfinished atomic writes (`.NAME.*.tmp`, `.*.partial`, `.old-`) under `folders`."""
    found = []
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder):
            for name in dirnames + filenames:
                temporary = name.endswith((".tmp", ".partial")) or ".old-" in name
                if name.startswith(".") and temporary:
                    found.append(os.path.join(dirpath, name))
    return sorted(found)


def snapshot(root: Path, *, skip_bytecode: bool = True) -> dict[str, str]:
    """relative path -> sha256 of content (or `link:<target>`, `dir`) of every entry under `root`."""
    found: dict[str, str] = {}
    if not root.exists():
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not (skip_bytecode and d == "__pycache__"))
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            rel = full.relative_to(root).as_posix()
            if skip_bytecode and name.endswith(".pyc"):
                continue
            if full.is_symlink():
                found[rel] = "link:" + os.readlink(full)
            elif full.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = hashlib.sha256(full.read_bytes()).hexdigest()
    return found


def diff(before: dict[str, str], after: dict[str, str], limit: int = 10) -> list[str]:
    """What differs between two snapshots, in words."""
    out = []
    for path in sorted(set(before) | set(after)):
        if before.get(path) != after.get(path):
            out.append(f"{path}: {before.get(path, 'absent')} -> {after.get(path, 'absent')}")
    return out[:limit]


@dataclass
class Timed:
    """A finished process and how long it ran."""

    code: int
    stdout: str
    stderr: str
    seconds: float


def run_timed(*args: str | os.PathLike[str], env: dict[str, str] | None = None) -> Timed:
    """Run `stacks ARGS` to the end and time it."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "stacks", *map(str, args)],
        capture_output=True,
        text=True,
        env=stacks_env(env),
        timeout=900,
        check=False,
    )
    return Timed(done.returncode, done.stdout, done.stderr, time.perf_counter() - start)


def runtime_archive(runtime: Path) -> bytes:
    """A python-build-standalone-shaped tar.gz (top folder `python/`) of a runtime folder."""
    import gzip
    import io
    import tarfile

    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz:  # noqa: SIM117
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(runtime, arcname="python")
    return raw.getvalue()


def archive_runtime_spec(url: str, sha256: str, *, packages: str = "[]") -> str:
    """A one-layer stack whose runtime is downloaded from `url`."""
    return f"""
[tool.uv]
exclude-newer = "{EXCLUDE_NEWER}"

[[runtimes]]
name = "cpython-3.12"
python_implementation = "cpython@3.12"
source = {{ url = "{url}", sha256 = "{sha256}" }}
requirements = {packages}
"""
