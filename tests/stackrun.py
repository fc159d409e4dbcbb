"""Run the real `stacks` CLI in a subprocess and read its JSON results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Outcome:
    """A finished `stacks` process."""

    code: int
    stdout: str
    stderr: str

    @property
    def data(self) -> Any:
        """The JSON the command printed."""
        return json.loads(self.stdout)

    def ran(self, step: str | None = None) -> list[str]:
        """Names of the tasks that ran (optionally of one step), from `--json` output."""
        return sorted(
            t["task"]
            for t in self.data["tasks"]
            if t["status"] == "ran" and (step is None or t["step"] == step)
        )

    def statuses(self) -> dict[str, str]:
        """task -> status, from `--json` output."""
        return {t["task"]: t["status"] for t in self.data["tasks"]}


def stacks(
    *args: str | os.PathLike[str],
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 900,
    cwd: os.PathLike[str] | None = None,
) -> Outcome:
    """Run `python -m stacks ARGS` (in `cwd`); with check, fail the test on a non-zero exit (showing stderr)."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full_env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "stacks", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )
    outcome = Outcome(result.returncode, result.stdout, result.stderr)
    if check and result.returncode != 0:
        raise AssertionError(
            f"stacks {' '.join(map(str, args))} exited {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return outcome


def run_python(
    python: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a layer's python with a clean environment and return the completed process."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    clean.update(env or {})
    return subprocess.run(
        [str(python), *args], capture_output=True, text=True, env=clean, check=False, timeout=120
    )


def layer_of(path: str, root: Path) -> str:
    """The layer folder (first path part under `root`) that `path` lives in."""
    return Path(path).resolve().relative_to(root.resolve()).parts[0]


def task_names(step: str, layers: Sequence[str]) -> list[str]:
    """`step:layer` names, sorted."""
    return sorted(f"{step}:{layer}" for layer in layers)
