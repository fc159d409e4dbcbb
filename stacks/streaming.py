"""Run uv, capturing its output and, with `stacks -v`, streaming its stderr as it comes.

A multi-gigabyte download looks like a hang when nothing is printed: with STACKS_STREAM_UV=1
(set by `stacks -v` before any worker starts) each stderr line of uv is echoed, prefixed
with what it is for, while the whole output is still captured for error messages.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

from stacks.children import ChildProcess, run_child

STREAM_VARIABLE = "STACKS_STREAM_UV"


def streaming() -> bool:
    """Whether uv's output is streamed in this run."""
    return os.environ.get(STREAM_VARIABLE) == "1"


def run_captured(
    args: Sequence[str], *, label: str, quiet_flag: str = "--quiet", **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """subprocess.run(args, capture_output=True, text=True, check=False), streaming stderr if asked.

    When streaming, `quiet_flag` is left out of `args`, so uv says what it is doing.
    """
    if not streaming():
        return run_child(args, text=True, **kwargs)
    command = [arg for arg in args if arg != quiet_flag]
    stdout_parts: list[str] = []
    stderr_lines: list[str] = []
    with ChildProcess(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    ) as process:
        reader = threading.Thread(
            target=lambda: stdout_parts.append(process.stdout.read() if process.stdout else ""),
            daemon=True,
        )
        reader.start()
        assert process.stderr is not None
        for line in process.stderr:
            stderr_lines.append(line)
            sys.stderr.write(f"  [{label}] {line.rstrip()}\n")
            sys.stderr.flush()
        code = process.wait()
        reader.join()
    return subprocess.CompletedProcess(command, code, "".join(stdout_parts), "".join(stderr_lines))
