"""The README's tour, run from its own code blocks in a copy of the repository's specs/."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from stackrun import REPO

# The tour deploys "on the target machine" to /opt/myapp: here, a temporary folder.
TARGET = "/opt/myapp"


def tour_blocks(readme: str) -> list[list[tuple[str, list[str]]]]:
    """The tour's console blocks: per block, each `$ command` with the output lines shown after it."""
    section = readme.split("\n## A tour\n", 1)[1].split("\n## ", 1)[0]
    blocks = []
    for block in re.findall(r"```console\n(.*?)```", section, flags=re.S):
        commands: list[tuple[str, list[str]]] = []
        for line in block.splitlines():
            if line.startswith("$ "):
                commands.append((line[2:], []))
            elif commands:
                commands[-1][1].append(line)
        blocks.append(commands)
    return blocks


def test_the_tour_blocks_are_found() -> None:
    blocks = tour_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    commands = [command for block in blocks for command, _ in block]
    assert commands[0] == ". .venv/bin/activate"
    assert commands[1] == "stacks show specs/demo.toml"
    assert any(command.startswith("stacks deploy ") for command in commands)
    assert any(command.startswith("stacks init ") for command in commands)
    assert len(blocks[0][1][1]) == 10  # the tree `stacks show` prints


@pytest.mark.slow
def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    if sys.prefix == sys.base_prefix:
        pytest.skip("the tour activates the repository's .venv; these tests run outside one")
    root = tmp_path / "clone"
    root.mkdir()
    shutil.copytree(
        REPO / "specs",
        root / "specs",
        ignore=shutil.ignore_patterns("cache", "_artifacts", "_export", "_deploy"),
    )
    (root / ".venv").symlink_to(Path(sys.prefix))  # what `make demo` created
    target = tmp_path / "opt-myapp"
    commands = [
        (command.replace(TARGET, os.fspath(target)), shown)
        for block in tour_blocks((REPO / "README.md").read_text(encoding="utf-8"))
        for command, shown in block
    ]
    script = ["set -e"]
    for number, (command, _) in enumerate(commands):
        script += [f"echo '@@@ {number}'", f"echo '@@@ {number}' >&2", command]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
        and not k.startswith(("STACKS_", "UV_INDEX", "UV_EXTRA"))
    }
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"  # no stacks on PATH until the tour activates
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    outputs = re.split(r"^@@@ \d+\n", done.stdout, flags=re.M)[1:]
    errors = re.split(r"^@@@ \d+\n", done.stderr, flags=re.M)[1:]
    assert done.returncode == 0, (
        f"tour command {len(outputs) - 1} failed: {commands[len(outputs) - 1][0]}\n"
        f"{outputs[-1] if outputs else ''}{errors[-1] if errors else done.stderr}"
    )
    assert len(outputs) == len(commands)
    for (command, shown), output in zip(commands, outputs, strict=True):
        if shown:
            assert output.splitlines() == shown, command
    by_command = dict(zip((command for command, _ in commands), outputs, strict=True))
    assert by_command["specs/_export/app-demo/bin/python -m demo_app"].startswith(
        "hello from the demo stack"
    )
    assert "hello from the demo stack" in by_command[f"{target}/app-demo/bin/python -m demo_app"]
    assert (root / "myproject" / "cache" / "build" / "app-hello").is_dir()
    assert "Traceback" not in done.stderr
