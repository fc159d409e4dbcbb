"""stacks/deploy/deploy.py: real archives of a real stack deployed, moved, re-deployed; hostile archives refused."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard
from stack_trees import (
    APP,
    FRAMEWORK,
    LAUNCH_MODULE,
    LOCKED_AT,
    RUNTIME,
    assert_runs_from,
    build_stack,
    clean_env,
    is_mount,
    run_app,
    second_path,
)

from stacks.deploy import deploy as deploy_module
from stacks.deploy.deploy import RECORD, DeployError, current_platform, deploy, main, unpack_layer
from stacks.deploy.postinstall import load_layer_config
from stacks.pipeline.verify import verify_deployed
from stacks.publish.archives import write_archive
from stacks.publish.metadata import write_stack_metadata

KINDS = {RUNTIME: "runtime", FRAMEWORK: "framework", APP: "application"}
ODD_FOLDER = "dé ploy 🦎"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A configured stack in a build folder."""
    root = tmp_path_factory.mktemp("template") / "build"
    build_stack(root)
    return root


def publish(
    template: Path, out: Path, fmt: str, *, platform: str | None = None, bytecode: bool = False
) -> Path:
    """Archive every layer of the template stack in `fmt` and write the stack metadata.

    With `bytecode`, the archives hold the runtime's unchecked-hash pycs (`publish --bytecode`).
    """
    entries = []
    for name, kind in KINDS.items():
        config = load_layer_config(template / name)
        result = write_archive(
            template / name,
            out / f"{name}.{fmt}",
            root_name=name,
            fmt=fmt,
            mtime=LOCKED_AT,
            layered=kind != "runtime",
            bytecode_python=template / RUNTIME / "bin" / "python" if bytecode else None,
        )
        entry: dict[str, Any] = {
            "layer_name": config["layer_name"],
            "install_target": name,
            "kind": kind,
            "runtime_layer": RUNTIME,
            "archive_name": result.path.name,
            "archive_size": result.size,
            "archive_hashes": {"sha256": result.sha256},
        }
        if kind != "runtime":
            entry["required_layers"] = config["required_layers"]
        if kind == "application":
            entry["app_launch_module"] = LAUNCH_MODULE
        entries.append(entry)
    write_stack_metadata(out, entries, platform=platform)
    return out


@pytest.fixture(scope="module")
def published(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template stack published as tar.gz (standard library on both sides)."""
    return publish(template, tmp_path_factory.mktemp("artifacts"), "tar.gz")


def snapshot(folder: Path, skip: Path) -> set[str]:
    """Every path under `folder`, except those under `skip`."""
    found = set()
    for path in folder.rglob("*"):
        if path != skip and skip not in path.parents:
            found.add(str(path))
    return found


def test_deploy_into_odd_folder_runs_the_app(published: Path, tmp_path: Path) -> None:
    target = tmp_path / ODD_FOLDER
    deployed = deploy(published, target)
    assert [(d.install_target, d.kind, d.action) for d in deployed] == [
        (RUNTIME, "runtime", "deployed"),
        (FRAMEWORK, "framework", "deployed"),
        (APP, "application", "deployed"),
    ]
    assert deployed[2].run_command() == [str(target / APP / "bin" / "python"), "-m", LAUNCH_MODULE]
    report = run_app(target / APP / "bin" / "python")
    assert_runs_from(report, target)
    assert report["framework_value"] == "framework module"
    assert sorted(os.listdir(target)) == sorted([*KINDS, RECORD])  # no leftovers
    assert oct(os.stat(target / APP).st_mode & 0o777) == oct(0o755)
    again = deploy(published, target)
    assert [d.action for d in again] == ["unchanged"] * 3


def test_dry_run_changes_nothing_and_json_says_what_each_layer_gets(
    published: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "target"
    args = [str(published), "--target", str(target)]
    assert main([*args, "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert f"would be deployed  {APP}  ({target / APP})" in text
    assert f"run {APP}: " in text
    assert not target.exists()
    assert main([*args, "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["dry_run"] is False
    assert [(d["install_target"], d["action"]) for d in done["layers"]] == [
        (RUNTIME, "deployed"),
        (FRAMEWORK, "deployed"),
        (APP, "deployed"),
    ]
    assert done["layers"][2]["run"] == [str(target / APP / "bin" / "python"), "-m", LAUNCH_MODULE]
    before = snapshot(target, target / "none")
    assert main([*args, "--dry-run", "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert planned["dry_run"] is True
    assert {d["action"] for d in planned["layers"]} == {"unchanged"}
    assert snapshot(target, target / "none") == before


def test_deployment_runs_after_mv_cp_and_through_a_second_path(
    published: Path, tmp_path: Path
) -> None:
    target = tmp_path / "first"
    deploy(published, target)
    moved = tmp_path / "second" / ODD_FOLDER
    moved.parent.mkdir()
    shutil.move(str(target), moved)  # nothing re-run: the layers hold no absolute path
    assert_runs_from(run_app(moved / APP / "bin" / "python"), moved)
    copied = tmp_path / "copied"
    subprocess.run(["cp", "-a", str(moved), str(copied)], check=True)
    assert_runs_from(run_app(copied / APP / "bin" / "python"), copied)
    assert verify_deployed(copied) and not any(f.failed for f in verify_deployed(copied))
    with second_path(copied, tmp_path / "other") as other:
        report = run_app(other / APP / "bin" / "python")
        assert_runs_from(report, other if is_mount(other) else copied)
    assert [d.action for d in deploy(published, moved)] == ["unchanged"] * 3
    assert_runs_from(run_app(moved / APP / "bin" / "python"), moved)


@pytest.mark.parametrize("fmt", ["tar.zst", "zip", pytest.param("tar.xz", marks=pytest.mark.slow)])
def test_every_format_deploys(template: Path, tmp_path: Path, fmt: str) -> None:
    published = publish(template, tmp_path / "out", fmt, platform=current_platform())
    assert not (published / "__stacks__" / "stack.json").exists()
    target = tmp_path / ODD_FOLDER
    deploy(published, target)
    assert_runs_from(run_app(target / APP / "bin" / "python"), target)
    assert os.readlink(target / FRAMEWORK / "share/venv/dynlib/libfake.so.1").startswith("../")


def test_selected_layers_bring_what_they_need(published: Path, tmp_path: Path) -> None:
    target = tmp_path / "t"
    deployed = deploy(published, target, ["framework-x"])  # by layer name
    assert [d.install_target for d in deployed] == [RUNTIME, FRAMEWORK]
    assert not (target / APP).exists()
    deployed = deploy(published, target, [APP])
    assert [(d.install_target, d.action) for d in deployed] == [
        (RUNTIME, "unchanged"),
        (FRAMEWORK, "unchanged"),
        (APP, "deployed"),
    ]
    assert_runs_from(run_app(target / APP / "bin" / "python"), target)


def test_tampered_archive_fails_its_check(published: Path, tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    shutil.copytree(published, artifacts)
    archive = artifacts / f"{APP}.tar.gz"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    target = tmp_path / "t"
    with pytest.raises(DeployError, match="sha256"):
        deploy(artifacts, target)
    assert os.listdir(target) == []  # checked before anything is renamed in
    archive.write_bytes(bytes(data[:-1]))
    with pytest.raises(DeployError, match="bytes, the metadata says"):
        deploy(artifacts, target, [APP])


def test_missing_or_short_archives_are_all_named_before_anything_is_unpacked(
    published: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    artifacts = tmp_path / "artifacts"
    shutil.copytree(published, artifacts)
    (artifacts / f"{FRAMEWORK}.tar.gz").unlink()
    app_archive = artifacts / f"{APP}.tar.gz"
    app_archive.write_bytes(app_archive.read_bytes()[:-10])
    target = tmp_path / "t"
    with pytest.raises(DeployError) as caught:
        deploy(artifacts, target)
    message = str(caught.value)
    assert "2 archives missing or incomplete" in message and "nothing was unpacked" in message
    assert f"{FRAMEWORK}: {artifacts / FRAMEWORK}.tar.gz is missing" in message
    assert f"{APP}: {app_archive} is " in message and "bytes, the metadata says" in message
    assert caught.value.hint is not None and "stacks publish" in caught.value.hint
    assert not target.exists()  # not even the runtime, whose archive is fine
    # From the command line: exit 1, every problem and the hint, no traceback.
    assert main([str(artifacts), "--target", str(target)]) == 1
    err = capsys.readouterr().err
    assert "is missing" in err and "hint: publish them again" in err and "Traceback" not in err
    assert not target.exists()
    # A layer already deployed from the same archive needs no archive; the others still do.
    deploy(published, target, [RUNTIME])
    (artifacts / f"{RUNTIME}.tar.gz").unlink()
    with pytest.raises(DeployError, match="1 archive missing") as caught:
        deploy(artifacts, target, [FRAMEWORK])
    assert RUNTIME not in str(caught.value)
    assert sorted(os.listdir(target)) == [RECORD, RUNTIME]
    shutil.copy2(published / f"{FRAMEWORK}.tar.gz", artifacts)
    deployed = deploy(artifacts, target, [FRAMEWORK])
    assert [(d.install_target, d.action) for d in deployed] == [
        (RUNTIME, "unchanged"),
        (FRAMEWORK, "deployed"),
    ]


def test_cli_exit_codes_and_output(
    published: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "cli"
    assert main([str(published), "--target", str(target)]) == 0
    out = capsys.readouterr().out
    expected = f"run {APP}: {target / APP / 'bin' / 'python'} -m {LAUNCH_MODULE}"
    assert expected in out
    assert main([str(published), "--target", str(target), "nope"]) == 2
    err = capsys.readouterr().err
    assert "no layer 'nope'" in err and "Traceback" not in err
    assert main([str(tmp_path), "--target", str(target)]) == 2
    err = capsys.readouterr().err
    # As the rest of stacks: `error: <message>`, the fix on a `  hint:` line of its own.
    assert err.startswith(f"error: no stack metadata in {tmp_path / '__stacks__'} (looked for ")
    assert "\n  hint: point ARCHIVE_DIR at the folder holding the archives" in err
    assert main([str(tmp_path / "missing"), "--target", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: ARCHIVE_DIR {tmp_path / 'missing'} does not exist\n  hint: ")
    archive = next(published.glob(f"{APP}.*"))
    assert main([str(archive), "--target", str(target)]) == 2
    assert f"error: ARCHIVE_DIR {archive} is not a folder\n" in capsys.readouterr().err


def test_module_and_standalone_script(published: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "stacks.deploy", str(tmp_path / "missing"), "--target", "x"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: ARCHIVE_DIR {tmp_path / 'missing'} does not exist")
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy2(deploy_module.__file__, alone / "deploy.py")
    shutil.copy2(Path(deploy_module.__file__).with_name("postinstall.py"), alone)
    python310 = Path("/root/.pyenv/versions/3.10.13/bin/python3.10")
    python = str(python310) if python310.exists() else sys.executable
    target = tmp_path / ODD_FOLDER
    done = subprocess.run(
        [python, "-I", "deploy.py", str(published), "--target", str(target), APP],
        cwd=alone,
        capture_output=True,
        text=True,
        env=clean_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"run {APP}:" in done.stdout
    assert_runs_from(run_app(target / APP / "bin" / "python"), target)


# --- hostile archives -------------------------------------------------------------------

ROOT = "evil"


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, **fields: Any) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def hostile_tar(members: list[tuple[tarfile.TarInfo, bytes]], fmt: str = "tar.gz") -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(tar_member(ROOT, tarfile.DIRTYPE))
        for info, data in members:
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    if fmt == "tar.zst":
        return zstandard.ZstdCompressor(level=1).compress(raw.getvalue())
    return gzip.compress(raw.getvalue(), mtime=0)


class _Zeros(io.RawIOBase):
    """`size` zero bytes, without holding them in memory."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count

    def readable(self) -> bool:
        return True


def zstd_bomb(files: int, size: int) -> bytes:
    """A tar.zst of `files` files of `size` zero bytes each."""
    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=1).stream_writer(out, closefd=False) as zst:  # noqa: SIM117
        with tarfile.open(fileobj=zst, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(tar_member(ROOT, tarfile.DIRTYPE))
            for index in range(files):
                info = tar_member(f"{ROOT}/zeros{index}", size=size)
                tar.addfile(info, io.BufferedReader(_Zeros(size)))
    return out.getvalue()


def hostile_zip(entries: list[tuple[str, int, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, mode, data in [(f"{ROOT}/", 0o40755, b""), *entries]:
            info = zipfile.ZipInfo(name, date_time=(2025, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return out.getvalue()


def publish_raw(out: Path, data: bytes, fmt: str) -> Path:
    """Publish one archive (as a runtime layer `evil`) with correct size and hash."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{ROOT}.{fmt}").write_bytes(data)
    entry = {
        "layer_name": ROOT,
        "install_target": ROOT,
        "kind": "runtime",
        "runtime_layer": ROOT,
        "archive_name": f"{ROOT}.{fmt}",
        "archive_size": len(data),
        "archive_hashes": {"sha256": hashlib.sha256(data).hexdigest()},
    }
    write_stack_metadata(out, [entry])
    return out


HOSTILE: dict[str, Callable[[Path], tuple[bytes, str, str]]] = {
    "absolute path": lambda t: (
        hostile_tar([(tar_member(str(t / "pwned")), b"x")]),
        "tar.gz",
        "absolute path|outside the archive",
    ),
    "dot-dot": lambda t: (
        hostile_tar([(tar_member(f"{ROOT}/../pwned"), b"x")]),
        "tar.gz",
        r"'\.\.'",
    ),
    "outside root folder": lambda t: (
        hostile_tar([(tar_member("other/pwned"), b"x")]),
        "tar.gz",
        "outside the archive's root",
    ),
    "symlink out (relative)": lambda t: (
        hostile_tar([(tar_member(f"{ROOT}/up", tarfile.SYMTYPE, linkname="../.."), b"")]),
        "tar.gz",
        "leaves the layer",
    ),
    "symlink out (absolute)": lambda t: (
        hostile_tar([(tar_member(f"{ROOT}/etc", tarfile.SYMTYPE, linkname=str(t)), b"")]),
        "tar.gz",
        "absolute",
    ),
    "symlink chain out": lambda t: (
        hostile_tar(
            [
                (tar_member(f"{ROOT}/sub", tarfile.DIRTYPE), b""),
                (tar_member(f"{ROOT}/sub/up", tarfile.SYMTYPE, linkname=".."), b""),
                (tar_member(f"{ROOT}/esc", tarfile.SYMTYPE, linkname="sub/up/.."), b""),
            ]
        ),
        "tar.gz",
        "chain leaves",
    ),
    "write through symlink": lambda t: (
        hostile_tar(
            [
                (tar_member(f"{ROOT}/sub", tarfile.DIRTYPE), b""),
                (tar_member(f"{ROOT}/link", tarfile.SYMTYPE, linkname="sub"), b""),
                (tar_member(f"{ROOT}/link/pwned"), b"x"),
            ]
        ),
        "tar.gz",
        "symlink or a file",
    ),
    "hard link out": lambda t: (
        hostile_tar([(tar_member(f"{ROOT}/hl", tarfile.LNKTYPE, linkname="/etc/passwd"), b"")]),
        "tar.gz",
        "absolute path",
    ),
    "hard link to unknown": lambda t: (
        hostile_tar([(tar_member(f"{ROOT}/hl", tarfile.LNKTYPE, linkname=f"{ROOT}/nope"), b"")]),
        "tar.gz",
        "not a file earlier",
    ),
    "device file": lambda t: (
        hostile_tar([(tar_member(f"{ROOT}/null", tarfile.CHRTYPE, devmajor=1, devminor=3), b"")]),
        "tar.gz",
        "device",
    ),
    "fifo": lambda t: (
        hostile_tar([(tar_member(f"{ROOT}/pipe", tarfile.FIFOTYPE), b"")]),
        "tar.gz",
        "fifo",
    ),
    "duplicate entry": lambda t: (
        hostile_tar(
            [
                (tar_member(f"{ROOT}/a"), b"x"),
                (tar_member(f"{ROOT}/a", tarfile.SYMTYPE, linkname="b"), b""),
            ]
        ),
        "tar.gz",
        "duplicate",
    ),
    "bomb (one big file)": lambda t: (zstd_bomb(1, 200 << 20), "tar.zst", "unpacks to more"),
    "bomb (many files)": lambda t: (zstd_bomb(9, 10 << 20), "tar.zst", "unpacks to more"),
    "zip symlink out": lambda t: (
        hostile_zip([(f"{ROOT}/up", 0o120777, b"../../x")]),
        "zip",
        "leaves the layer",
    ),
    "zip dot-dot": lambda t: (hostile_zip([(f"{ROOT}/../x", 0o100644, b"x")]), "zip", r"'\.\.'"),
    "truncated tar": lambda t: (
        gzip.compress(
            gzip.decompress(hostile_tar([(tar_member(f"{ROOT}/f"), bytes(5000))]))[:1500]
        ),
        "tar.gz",
        "cannot unpack",
    ),
    "not an archive": lambda t: (b"\xfd7zXZ\x00 certainly not xz", "tar.xz", "cannot unpack"),
    "zip fifo": lambda t: (hostile_zip([(f"{ROOT}/p", 0o010644, b"")]), "zip", "fifo"),
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_archives_are_refused(kind: str, tmp_path: Path) -> None:
    target = tmp_path / "deploy"
    data, fmt, message = HOSTILE[kind](tmp_path)
    artifacts = publish_raw(tmp_path / "artifacts", data, fmt)
    before = snapshot(tmp_path, target)
    with pytest.raises(DeployError, match=message):
        deploy(artifacts, target)
    assert snapshot(tmp_path, target) == before  # nothing written outside the target
    assert os.listdir(target) == []  # and nothing left inside it
    assert main([str(artifacts), "--target", str(target)]) == 1


def test_metadata_with_unsafe_names_is_refused(tmp_path: Path) -> None:
    artifacts = publish_raw(tmp_path / "artifacts", hostile_tar([]), "tar.gz")
    manifest = artifacts / "__stacks__" / "stack.json"
    data = json.loads(manifest.read_text())
    data["layers"]["runtimes"][0]["install_target"] = "../escape"
    manifest.write_text(json.dumps(data))
    with pytest.raises(DeployError, match="not a plain folder"):
        deploy(artifacts, tmp_path / "t")
    assert not (tmp_path / "escape").exists()


def test_plain_archive_of_evil_root_is_fine(tmp_path: Path) -> None:
    # The control for the hostile cases: the same builder with harmless content unpacks
    # (and deploy then fails only because the layer has no metadata to configure it).
    data = hostile_tar(
        [
            (tar_member(f"{ROOT}/sub", tarfile.DIRTYPE), b""),
            (tar_member(f"{ROOT}/sub/file"), b"data"),
            (tar_member(f"{ROOT}/link", tarfile.SYMTYPE, linkname="sub/file"), b""),
            (tar_member(f"{ROOT}/hard", tarfile.LNKTYPE, linkname=f"{ROOT}/sub/file"), b""),
        ]
    )
    artifacts = publish_raw(tmp_path / "artifacts", data, "tar.gz")
    with pytest.raises(DeployError, match=r"venvstacks_layer\.json"):
        deploy(artifacts, tmp_path / "t")
    assert os.listdir(tmp_path / "t") == []
    layer = tmp_path / "t" / ROOT
    layer.mkdir()
    unpack_layer(artifacts / f"{ROOT}.tar.gz", layer, ROOT, max_bytes=1 << 20)
    assert (layer / "link").read_bytes() == b"data" == (layer / "hard").read_bytes()


def test_entry_point_script_runs_from_a_moved_deployment(published: Path, tmp_path: Path) -> None:
    target = tmp_path / "first"
    deploy(published, target)
    scripts = sorted(os.listdir(target / FRAMEWORK / "bin"))
    assert "fw-report" in scripts and "fw-bad" not in scripts  # only plain entry points
    moved = tmp_path / ODD_FOLDER / "moved"
    moved.parent.mkdir()
    shutil.move(str(target), moved)
    script = moved / FRAMEWORK / "bin" / "fw-report"
    done = subprocess.run(
        [str(script), "one", "two words"],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd="/",
        check=False,
    )
    assert done.returncode == 3, done.stderr  # the function's return value is the exit code
    report = json.loads(done.stdout)
    assert report["argv"] == [str(script), "one", "two words"]
    assert report["prefix"] == str(moved / FRAMEWORK)
    assert report["runtime"].startswith(str(moved / RUNTIME) + os.sep)
    assert all(p.startswith(str(moved) + os.sep) for p in report["sys_path"]), report
    assert not any(f.failed for f in verify_deployed(moved))
    (moved / FRAMEWORK / "bin" / "fw-report").unlink()
    problems = [d for f in verify_deployed(moved) for d in f.differences]
    assert problems == ["unconfigured: bin/fw-report is not what its metadata makes"]
