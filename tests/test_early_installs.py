"""Installs started ahead of their build step (`stacks.build.early_installs`), with real uv.

A chain of builds run with more than one job lets uv install the next layer while this one
is checked: the result must be exactly what one build after another makes, a staging
folder nobody takes must go, and an install made for another lock must not be used.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest
from faults import make_small_project
from projects import private_uv_cache
from stackrun import stacks

from stacks.build import early_installs
from stacks.build.request import BuildRequest
from stacks.lock.metadata import LockOptions
from stacks.pipeline.run_context import RunContext
from stacks.pipeline.steps.build import build_request
from stacks.spec import load_spec

uv_cache = pytest.fixture(scope="module", autouse=True)(private_uv_cache)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small chain (runtime, framework, app), locked and built one task at a time."""
    spec = make_small_project(tmp_path_factory.mktemp("early") / "stack")
    stacks("build", spec, "-n", "1")
    return spec


def _digests(spec: Path) -> dict[str, str]:
    stamps = spec.parent / "cache" / "stamps" / "build"
    return {
        path.stem: json.loads(path.read_text())["outputs"]["digest"]
        for path in stamps.glob("*.json")
        if not path.name.endswith(".manifest.json")
    }


def _partials(spec: Path) -> list[str]:
    return sorted(p.name for p in (spec.parent / "cache" / "build").glob(".*"))


def _request(spec: Path, env_name: str) -> BuildRequest:
    ctx = RunContext(
        spec=load_spec(spec), cache_dir=spec.parent / "cache", lock_options=LockOptions()
    )
    return build_request(ctx, env_name)


def test_a_chain_built_with_early_installs_equals_one_built_step_by_step(project: Path) -> None:
    one_at_a_time = _digests(project)
    out = stacks("build", project, "--clean", "-n", "2", "--json")
    ran = {t["task"] for t in out.data["tasks"] if t["status"] == "ran"}
    assert {"build:framework-fw", "build:app-app"} <= ran
    assert _digests(project) == one_at_a_time
    assert _partials(project) == []
    assert stacks("run", project, "app").code == 0


def test_an_install_is_taken_once_finished_and_fills_the_staging_folder(project: Path) -> None:
    request = _request(project, "app-app")
    early_installs.start(request)
    try:
        early = early_installs.take(request)
        assert early is not None and early.stage.name.startswith(".app-app.")
        result = early.wait()
        assert result is not None and result.returncode == 0, result
        site = early.stage / request.site_dir
        assert any(name.startswith("idna-") for name in os.listdir(site))
        assert (early.stage / "bin" / "python").is_file()  # wired before uv started
        early_installs.release(early)  # as a build step does, whether it used it or not
        assert early_installs.take(request) is None  # released: not taken twice
        assert not early.stage.exists()  # never renamed into place here: removed
    finally:
        early_installs.cancel_all()
    assert _partials(project) == []


def test_an_install_nobody_takes_is_stopped_and_removed(project: Path) -> None:
    request = _request(project, "framework-fw")
    early_installs.start(request)
    early = early_installs.take(request)
    assert early is not None and early.stage.is_dir() and early.process is not None
    early_installs.cancel_all()
    assert early.process.poll() is not None  # uv was stopped (or had finished) and reaped
    assert not early.stage.exists()
    assert _partials(project) == []


def test_an_install_for_a_lock_changed_since_is_not_used(project: Path) -> None:
    request = _request(project, "app-app")
    pylock = request.pylock
    early_installs.start(request)
    stage = early_installs.take(request).stage  # type: ignore[union-attr]
    before = pylock.read_bytes()
    try:
        time.sleep(0.01)
        pylock.write_bytes(before + b"\n")  # same packages, another file: uv may have read the old
        assert early_installs.take(request) is None
        assert not stage.exists()
    finally:
        pylock.write_bytes(before)
        early_installs.cancel_all()
    assert _partials(project) == []


def test_an_install_that_cannot_start_leaves_nothing_to_take(project: Path, tmp_path: Path) -> None:
    """A staging folder that cannot be made (a file where its folder should be): nothing is
    left to take, so the build step builds as usual and meets the problem itself."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file\n")
    request = dataclasses.replace(_request(project, "app-app"), target=blocker / "app-app")
    with pytest.raises(OSError):
        early_installs.start(request)
    assert early_installs.take(request) is None
    assert blocker.read_text() == "a file\n"
    early_installs.cancel_all()
