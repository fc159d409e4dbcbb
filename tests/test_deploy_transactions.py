"""Transactional deploy (issue 12): failures and signals leave the previous deployment as it
was, tampered layers are redone, and `stacks verify --deployed` names what is wrong."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stack_trees import APP, FRAMEWORK, RUNTIME, SITE, assert_runs_from, run_app
from stackrun import REPO, stacks
from test_deploy import publish, published, template

from stacks.deploy.deploy import MARKER, RECORD, DeployError, deploy

__all__ = ["published", "template"]


def hidden(target: Path) -> list[str]:
    """Hidden entries of a deployment folder (staging and replaced folders would show here)."""
    return sorted(n for n in os.listdir(target) if n.startswith("."))


def markers(target: Path) -> dict[str, bytes]:
    return {name: (target / name / MARKER).read_bytes() for name in (RUNTIME, FRAMEWORK, APP)}


def verify(target: Path) -> tuple[int, dict[str, list[str]]]:
    out = stacks("verify", "--deployed", target, "--json", check=False)
    assert "Traceback" not in out.stderr
    findings = json.loads(out.stdout)["findings"]
    return out.code, {f["layer"]: f["differences"] for f in findings if f["differences"]}


@pytest.fixture
def second(template: Path, tmp_path: Path) -> Path:
    """The template stack published again as zip: new archives for every layer."""
    return publish(template, tmp_path / "zip", "zip")


def _break_app_archive(artifacts: Path) -> None:
    """Make the app's archive unpack badly while its size and sha256 match the metadata."""
    archive = artifacts / f"{APP}.zip"
    data = archive.read_bytes()[:-200]  # truncated: the central directory is gone
    archive.write_bytes(data)
    for path in (artifacts / "__stacks__").glob("stack*.json"):
        text = path.read_text(encoding="utf-8")
        doc = json.loads(text)
        for entry in doc["layers"]["applications"]:
            entry["archive_size"] = len(data)
            entry["archive_hashes"]["sha256"] = hashlib.sha256(data).hexdigest()
        path.write_text(json.dumps(doc), encoding="utf-8")


def test_failed_redeploy_leaves_the_previous_deployment_as_it_was(
    published: Path,
    second: Path,
    tmp_path: Path,
) -> None:
    target = tmp_path / "target"
    deploy(published, target)
    before = markers(target)
    _break_app_archive(second)
    with pytest.raises(DeployError, match=f"{APP}.zip: cannot unpack"):
        deploy(second, target)  # runtime and framework were staged, then the app failed
    assert markers(target) == before and hidden(target) == [RECORD]
    assert_runs_from(run_app(target / APP / "bin" / "python"), target)
    assert verify(target) == (0, {})


def test_tampered_layer_is_redone_and_stale_staging_removed(
    published: Path,
    tmp_path: Path,
) -> None:
    target = tmp_path / "target"
    deploy(published, target)
    (target / FRAMEWORK / SITE / "fwpkg" / "__init__.py").write_text("x = 1\n", encoding="utf-8")
    (target / f".{APP}.killed.partial").mkdir()  # what a SIGKILLed deploy leaves
    (target / f".{RUNTIME}.old-12345").mkdir()
    code, found = verify(target)
    assert code == 1 and found[FRAMEWORK] == [f"changed: {SITE}/fwpkg/__init__.py"]
    assert found[APP] == [
        f"partial: staging folder .{APP}.killed.partial left by an interrupted deploy"
    ]
    actions = [(d.install_target, d.action) for d in deploy(published, target)]
    assert actions == [(RUNTIME, "unchanged"), (FRAMEWORK, "deployed"), (APP, "unchanged")]
    assert hidden(target) == [RECORD]
    assert verify(target) == (0, {})


def test_verify_deployed_names_missing_partial_unconfigured_and_foreign_layers(
    published: Path,
    tmp_path: Path,
) -> None:
    target = tmp_path / "target"
    deploy(published, target)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(target, elsewhere, symlinks=True)
    shutil.rmtree(target / RUNTIME)  # the runtime now comes from another deployment:
    os.symlink(elsewhere / RUNTIME, target / RUNTIME)
    (target / FRAMEWORK / MARKER).unlink()
    (target / APP / "pyvenv.cfg").write_text("home = /usr/bin\n", encoding="utf-8")
    code, found = verify(target)
    assert code == 1
    assert found[FRAMEWORK] == [f"partial: no deploy marker {MARKER}"]
    assert "unconfigured: pyvenv.cfg is not what its metadata makes" in found[APP]
    assert any(d.startswith("foreign: base_python resolves to ") for d in found[APP]), found
    shutil.rmtree(target / APP)
    assert verify(target)[1][APP] == [f"missing: {RECORD} lists it, but the folder is not there"]
    os.unlink(target / RUNTIME)
    deploy(published, target)  # redoes all three
    assert verify(target) == (0, {})


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if text.encode() in handle.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


@pytest.mark.parametrize(
    ("command", "signum"),
    [
        (["-m", "stacks.deploy"], signal.SIGINT),
        (["-m", "stacks.deploy"], signal.SIGTERM),
        (["-m", "stacks", "deploy"], signal.SIGINT),
        (["-m", "stacks", "deploy"], signal.SIGTERM),
    ],
)
def test_signals_exit_130_and_leave_nothing_behind(
    published: Path,
    tmp_path: Path,
    command: list[str],
    signum: int,
) -> None:
    target = tmp_path / "target"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, *command, str(published), "--target", str(target)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 60
    while not _processes_mentioning("compileall") or process.poll() is not None:
        assert time.monotonic() < deadline and process.poll() is None, "deploy never compiled"
        time.sleep(0.02)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert err.endswith("stacks: interrupted\n") and "Traceback" not in err
    time.sleep(0.5)
    assert _processes_mentioning(str(target)) == []  # the compile workers are gone too
    if target.exists() and hidden(target) == [RECORD]:
        # The signal landed while the staged layers were being renamed in: that finishes
        # first (it is never stopped half way), so the deployment is whole.
        assert verify(target) == (0, {})
        assert [d.action for d in deploy(published, target)] == ["unchanged"] * 3
        return
    assert not target.exists() or hidden(target) == []  # no staging folder, no record
    assert [d.action for d in deploy(published, target)] == ["deployed"] * 3


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")
def test_renaming_layers_in_is_not_stopped_half_way_by_a_signal() -> None:
    from stacks.deploy.deploy import _signals_deferred, _sigterm_as_interrupt

    done = []
    with pytest.raises(KeyboardInterrupt), _sigterm_as_interrupt():
        with _signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # a signal not blocked would have been handled by now
            done.append("renamed in")
        done.append("after the block")
    assert done == ["renamed in"]  # delivered when the block ended, not lost and not before
