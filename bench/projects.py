"""The stacks the benchmarks run on, built in a scratch folder with the real CLI, real uv and PyPI.

Every project pins its inputs with `[tool.uv] exclude-newer` and uses a local CPython
(`runtime_source = "local"`), so two benchmark runs lock and build the same packages.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.gen_spec import write_spec
from bench.measure import Finished, run

REPO = Path(__file__).resolve().parent.parent
EXCLUDE_NEWER = "2025-09-01T00:00:00Z"  # late enough for numpy's win_arm64 wheels
PINNED = f'[tool.uv]\nexclude-newer = "{EXCLUDE_NEWER}"\n\n'
LOCAL_RUNTIME = '[tool.stacks]\nruntime_source = "local"\n\n'
STEPS = ("lock", "build", "archive", "export")

# Four frameworks that share nothing but the runtime and are alike in size (each has numpy,
# the typical base of a framework layer, plus a few pure-Python wheels), so `-n 2` can
# overlap them evenly.
PARALLEL_SPEC = (
    PINNED
    + LOCAL_RUNTIME
    + """\
[[runtimes]]
name = "cpython-3.12"
python_implementation = "cpython@3.12"
requirements = []

[[frameworks]]
name = "web"
runtime = "cpython-3.12"
requirements = ["numpy", "requests", "httpx"]

[[frameworks]]
name = "text"
runtime = "cpython-3.12"
requirements = ["numpy", "rich", "markdown", "tabulate"]

[[frameworks]]
name = "tools"
runtime = "cpython-3.12"
requirements = ["numpy", "click", "packaging", "attrs", "pluggy"]

[[frameworks]]
name = "data"
runtime = "cpython-3.12"
requirements = ["numpy", "python-dateutil", "pytz", "six"]
"""
)


# A three-layer stack on one big framework (about 490 MB installed): the scientific Python
# stack most framework layers resemble. One platform: its lock needs every wheel it names.
BIG_SPEC = (
    PINNED
    + LOCAL_RUNTIME
    + """\
[[runtimes]]
name = "cpython-3.12"
python_implementation = "cpython@3.12"
requirements = []
platforms = ["linux_x86_64"]

[[frameworks]]
name = "sci"
runtime = "cpython-3.12"
requirements = ["scipy", "pandas", "pyarrow", "scikit-learn", "matplotlib"]
# numpy and scipy each vendor the same gfortran runtime: share numpy's.
dynlib_exclude = ["scipy.libs/*"]

[[applications]]
name = "report"
launch_module = "launch/report.py"
frameworks = ["sci"]
requirements = ["tabulate"]
"""
)
BIG_LAUNCH = (
    "import pandas, sklearn, tabulate\n\nprint(tabulate.tabulate([[pandas.__version__]]))\n"
)


def bench_uv_cache() -> Path:
    """The benchmarks' own uv cache: kept between runs (warm), next to the scratch folders.

    Its own, because builds hard-link from uv's cache: a test elsewhere on the machine that
    edits a linked file in place would change the benchmark's build trees mid-run. Next to
    the scratch folders, because hard links need one filesystem.
    """
    return Path(tempfile.gettempdir()) / "stacks-bench-uv-cache"


def bench_env() -> dict[str, str]:
    """The environment stacks runs in: like a user's shell, so bytecode caches are written and used."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKS_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["UV_CACHE_DIR"] = str(bench_uv_cache())
    # Provided runtimes come from a store of the benchmarks' own (never the user's), kept between
    # runs like their uv cache: every project links its runtime from it, as a user's would.
    env["STACKS_RUNTIME_STORE"] = str(Path(tempfile.gettempdir()) / "stacks-bench-runtimes")
    return env


def stacks_command() -> list[str]:
    """How users start stacks: the console script next to this Python (else `python -m stacks`)."""
    script = Path(sys.executable).with_name("stacks")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "stacks"]


@dataclass
class Bench:
    """Shared state of one benchmark run: the scratch folder, repetitions and built projects."""

    root: Path
    runs: int
    log: Callable[[str], None]
    env: dict[str, str] = field(default_factory=bench_env)
    projects: dict[str, Path] = field(default_factory=dict)

    def stacks(self, *args: str | os.PathLike[str], check: bool = True) -> Finished:
        """Run the stacks CLI."""
        return run([*stacks_command(), *args], env=self.env, check=check)

    def python(self, *args: str, check: bool = True) -> Finished:
        """Run this Python (the one stacks is installed in)."""
        return run([sys.executable, *args], env=self.env, check=check)

    def set_aside(self, path: Path) -> None:
        """Move a tree out of the way of the next measurement instead of deleting it.

        Deleting thousands of files just before a build made the build's own file creation
        slow: ext4 avoids reusing an inode deleted in the last minute or more, and searching
        past them was most of the kernel time of a four-framework build (1.25 s against
        0.81 s after moving the trees aside, same machine). The scratch folder goes at the end.
        """
        if not (path.exists() or path.is_symlink()):
            return
        aside = self.root / ".set-aside"
        aside.mkdir(exist_ok=True)
        os.rename(path, aside / f"{len(os.listdir(aside))}-{path.name}")

    def setup(self, name: str, make: Callable[[Path], Path]) -> Path:
        """A project built once per benchmark run by `make(folder) -> spec path`."""
        if name not in self.projects:
            start = time.perf_counter()
            self.log(f"setting up {name} ...")
            self.projects[name] = make(self.root / name)
            self.log(f"setting up {name}: done in {time.perf_counter() - start:.1f} s")
        return self.projects[name]

    def demo(self) -> Path:
        """specs/demo.toml in a scratch folder: locked, built, published and exported."""

        def make(folder: Path) -> Path:
            folder.mkdir(parents=True)
            shutil.copytree(REPO / "specs" / "launch", folder / "launch")
            spec = folder / "demo.toml"
            spec.write_text(
                PINNED + (REPO / "specs" / "demo.toml").read_text(encoding="utf-8"),
                encoding="utf-8",
            )
            self.stacks("publish", spec)
            self.stacks("export", spec)
            return spec

        return self.setup("demo", make)

    def generated(self, n_layers: int, *, steps: tuple[str, ...]) -> Path:
        """A generated `n_layers` stack (bench/gen_spec.py), run through `steps` with -n 2."""

        def make(folder: Path) -> Path:
            spec = write_spec(folder, n_layers)
            spec.write_text(
                PINNED + LOCAL_RUNTIME + spec.read_text(encoding="utf-8"), encoding="utf-8"
            )
            for step in steps:
                self.stacks(step, spec, "-n", "2")
            return spec

        return self.setup(f"generated-{n_layers}", make)

    def big(self) -> Path:
        """A runtime, the big scientific framework and an app: locked, built and exported."""

        def make(folder: Path) -> Path:
            (folder / "launch").mkdir(parents=True)
            (folder / "launch" / "report.py").write_text(BIG_LAUNCH, encoding="utf-8")
            spec = folder / "stack.toml"
            spec.write_text(BIG_SPEC, encoding="utf-8")
            self.stacks("build", spec)
            self.stacks("export", spec)
            return spec

        return self.setup("big", make)

    def parallel(self) -> Path:
        """A runtime with four independent frameworks, locked and built."""

        def make(folder: Path) -> Path:
            folder.mkdir(parents=True)
            spec = folder / "stack.toml"
            spec.write_text(PARALLEL_SPEC, encoding="utf-8")
            self.stacks("build", spec)
            return spec

        return self.setup("parallel", make)


def ran_names(*outcomes: Finished) -> list[str]:
    """The per-layer tasks that ran, from `--json` outputs."""
    return sorted(
        task["task"]
        for outcome in outcomes
        for task in json.loads(outcome.stdout)["tasks"]
        if task["status"] == "ran" and task["layer"] != "__stack__"
    )
