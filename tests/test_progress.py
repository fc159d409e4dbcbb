"""Progress of long steps: written by archive and export, shown by the reporter."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from stacks import progress
from stacks.pipeline.reporter import StacksReporter
from stacks.progress import ProgressFile, describe, progress_path, read_progress
from stacks.publish.archives import write_archive
from stacks.publish.export import export_layer


def a_layer(folder: Path) -> int:
    """A small runtime-like tree (bin/python3 so nothing else is needed); its file bytes."""
    (folder / "bin").mkdir(parents=True)
    (folder / "lib").mkdir()
    (folder / "bin" / "python3").write_bytes(b"#!/bin/sh\n")
    (folder / "lib" / "big.bin").write_bytes(b"x" * 300_000)
    (folder / "lib" / "small.txt").write_bytes(b"hello\n")
    return 10 + 300_000 + 6


def test_a_progress_file_is_written_read_described_and_removed(tmp_path: Path) -> None:
    path = progress_path(tmp_path / "progress", "archive:app-x")
    record = ProgressFile(path, "archive", 80_000_000)
    record.add(12_500_000)  # the first add writes at once
    assert read_progress(tmp_path / "progress", "archive:app-x") == {
        "what": "archive",
        "done": 12_500_000,
        "total": 80_000_000,
    }
    assert describe(read_progress(tmp_path / "progress", "archive:app-x") or {}) == (
        "archive 12.5 MB of 80.0 MB, 15%"
    )
    record.add(1)  # too soon after the last write: counted, not written
    assert json.loads(path.read_text())["done"] == 12_500_000
    record.close()
    assert not path.exists()
    assert read_progress(tmp_path / "progress", "archive:app-x") is None
    assert describe({"what": "export", "done": 2_000_000, "total": 0}) == "export 2.0 MB"


@pytest.mark.parametrize("fmt", ["tar.xz", "zip"])
def test_write_archive_counts_every_file_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    monkeypatch.setattr(progress, "WRITE_EVERY", 0.0)
    size = a_layer(tmp_path / "layer")
    record = ProgressFile(tmp_path / "p.json", "archive", 0)
    write_archive(
        tmp_path / "layer",
        tmp_path / f"out.{fmt}",
        root_name="rt",
        fmt=fmt,
        mtime=0,
        layered=False,
        progress=record,
    )
    assert record.done == record.total >= size  # the layer, plus the injected postinstall.py
    assert json.loads((tmp_path / "p.json").read_text())["done"] == record.total


def test_export_counts_every_file_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "WRITE_EVERY", 0.0)
    size = a_layer(tmp_path / "layer")
    record = ProgressFile(tmp_path / "p.json", "export", 0)
    with pytest.raises(Exception):  # noqa: B017 (the fake python cannot post-install)
        export_layer(tmp_path / "layer", tmp_path / "out", layered=False, progress=record)
    assert record.done == record.total >= size  # the layer, plus the injected postinstall.py


def test_the_reporter_shows_progress_live_and_in_heartbeats(tmp_path: Path) -> None:
    record = ProgressFile(progress_path(tmp_path, "archive:big"), "archive", 80_000_000)
    record.add(40_000_000)
    reporter = StacksReporter(io.StringIO())
    reporter.progress_dir = tmp_path
    reporter.running = {"archive:big": 100.0, "build:app": 100.0}
    assert reporter.live_text(now=112.0) == (
        "running: archive:big (12 s, archive 40.0 MB of 80.0 MB, 50%), build:app (12 s)"
    )
    assert reporter.heartbeat_lines(now=112.0) == [
        ".. archive:big still running (12 s): archive 40.0 MB of 80.0 MB, 50%",
        ".. build:app still running (12 s)",
    ]


def test_run_captured_streams_stderr_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    import sys

    from stacks.streaming import run_captured

    script = "import sys; print('out'); print('one', file=sys.stderr); print(sys.argv[1:], file=sys.stderr)"
    monkeypatch.delenv("STACKS_STREAM_UV", raising=False)
    quiet = run_captured([sys.executable, "-c", script, "--quiet"], label="x")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "out\n", "one\n['--quiet']\n")
    assert capfd.readouterr().err == ""
    monkeypatch.setenv("STACKS_STREAM_UV", "1")
    loud = run_captured([sys.executable, "-c", script, "--quiet"], label="uv lock: app-x")
    assert (loud.returncode, loud.stdout, loud.stderr) == (0, "out\n", "one\n[]\n")
    assert capfd.readouterr().err == "  [uv lock: app-x] one\n  [uv lock: app-x] []\n"


@pytest.mark.slow
def test_stacks_verbose_streams_uv_output(tmp_path: Path) -> None:
    from projects import write_project
    from stackrun import stacks

    spec = write_project(
        tmp_path / "p",
        """
        [tool.stacks]
        runtime_source = "local"

        [[runtimes]]
        name = "cpython-3.12"
        python_implementation = "cpython@3.12"
        requirements = []

        [[applications]]
        name = "x"
        launch_module = "x.py"
        runtime = "cpython-3.12"
        requirements = ["six"]
        """,
        {"x.py": "import six\n"},
    )
    loud = stacks("build", spec, "-v")
    assert "  [uv lock: app-x] Resolved " in loud.stderr
    assert "  [uv pip install: app-x]  + six==" in loud.stderr
    quiet = stacks("build", spec, "--clean")
    assert "[uv " not in quiet.stderr
