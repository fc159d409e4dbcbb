"""Concurrent runs, for real: two `stacks` processes on one project, and two projects sharing a
download cache while the download server is slow."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from faults import (
    archive_runtime_spec,
    end_group,
    make_small_project,
    runtime_archive,
    snapshot,
    start_stacks,
)
from http_server import Fault, FaultyServer
from stackrun import stacks

pytestmark = pytest.mark.slow


def _wait_for_holder(cache: Path, timeout: float = 60) -> dict[str, object]:
    """Wait until a run holds the project lock; return what it wrote about itself."""
    owner = cache / ".stacks.lock.owner"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return json.loads(owner.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            time.sleep(0.02)
    raise AssertionError("the first run never took the project lock")


@pytest.fixture(scope="module")
def served_runtime(local_runtime: object) -> tuple[bytes, str]:
    """The local runtime as a downloadable archive, and its sha256."""
    runtime, _ = local_runtime  # type: ignore[misc]
    data = runtime_archive(runtime)
    return data, hashlib.sha256(data).hexdigest()


def test_second_run_waits_naming_the_holder_or_fails_with_no_wait(
    tmp_path: Path, http_server: FaultyServer, served_runtime: tuple[bytes, str]
) -> None:
    data, digest = served_runtime
    # A slow runtime download keeps the first run busy long enough, whatever the machine.
    url = http_server.serve("/cpython.tar.gz", data, faults=[Fault.slow(seconds=4)])
    spec = make_small_project(
        tmp_path / "stack", archive_runtime_spec(url, digest, packages='["six"]')
    )
    first = start_stacks("build", spec, "--json")
    try:
        holder = _wait_for_holder(spec.parent / "cache")
        assert holder["pid"] == first.pid
        busy = stacks("build", spec, "--no-wait", check=False)
        assert busy.code == 1 and "Traceback" not in busy.stderr
        assert f"pid {first.pid}" in busy.stderr and "holds this project's lock" in busy.stderr
        assert "without --no-wait" in busy.stderr
        second = start_stacks("build", spec, "--json")
        out2, err2 = second.communicate(timeout=600)
        out1, err1 = first.communicate(timeout=600)
    finally:
        end_group(first)
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    assert f"waiting for another stacks run on this project to finish (pid {first.pid}" in err2
    ran_first = {t["task"] for t in json.loads(out1)["tasks"] if t["status"] == "ran"}
    ran_second = {t["task"] for t in json.loads(out2)["tasks"] if t["status"] == "ran"}
    # The first did the work; the second found it done (nothing twice, nothing torn).
    assert "build:cpython-3.12" in ran_first and ran_second == set()
    assert not (spec.parent / "cache" / ".stacks.lock.owner").exists()
    assert stacks("verify", spec).code == 0


def test_verify_and_clean_also_respect_the_lock(tmp_path: Path) -> None:
    spec = make_small_project(tmp_path / "stack")
    first = start_stacks("build", spec)
    try:
        _wait_for_holder(spec.parent / "cache")
        for command in ("verify", "clean", "forget"):
            busy = stacks(command, spec, "--no-wait", check=False)
            assert busy.code == 1 and "holds this project's lock" in busy.stderr, command
        first.communicate(timeout=600)
    finally:
        end_group(first)
    assert first.returncode == 0


def test_two_projects_share_a_download_cache(
    tmp_path: Path, http_server: FaultyServer, served_runtime: tuple[bytes, str]
) -> None:
    data, digest = served_runtime
    # Slow enough that both projects want the file while it is still coming.
    url = http_server.serve("/cpython.tar.gz", data, faults=[Fault.slow(seconds=3)])
    shared = tmp_path / "shared-downloads"
    env = {"STACKS_DOWNLOAD_CACHE": str(shared)}
    specs = [
        make_small_project(tmp_path / name, archive_runtime_spec(url, digest))
        for name in ("one", "two")
    ]
    runs = [start_stacks("build", spec, "--json", env=env) for spec in specs]
    try:
        results = [run.communicate(timeout=600) for run in runs]
    finally:
        for run in runs:
            end_group(run)
    for run, (_, err) in zip(runs, results, strict=True):
        assert run.returncode == 0, err
    # Fetched once, published once, verified; no partial file left; both runtimes work.
    assert [h.status for h in http_server.hits("/cpython.tar.gz")] == [200]
    files = sorted(p.relative_to(shared).as_posix() for p in shared.rglob("*") if p.is_file())
    assert [f for f in files if not f.startswith("locks/")] == [
        f"sha256/{digest}/.verified.json",
        f"sha256/{digest}/cpython.tar.gz",
    ]
    cached = shared / "sha256" / digest / "cpython.tar.gz"
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == digest
    trees = [snapshot(spec.parent / "cache" / "build" / "cpython-3.12") for spec in specs]
    assert trees[0] and trees[0] == trees[1]
