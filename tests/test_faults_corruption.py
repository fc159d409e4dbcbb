"""Corruption, caused for real: a garbage doit database, files edited or deleted in provided
runtimes, build and export folders, a hand-edited lock, a truncated or altered download in the cache, a tampered
deployed layer. Each is detected (`stacks verify`, or the step's own check) and either
repaired by redoing the affected step or reported with the command that fixes it."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import sqlite3
import subprocess
from pathlib import Path

import pytest
from faults import (
    archive_runtime_spec,
    make_small_project,
    runtime_archive,
    snapshot,
    stacks_env,
)
from http_server import FaultyServer
from projects import private_uv_cache
from stackrun import run_python, stacks

pytestmark = pytest.mark.slow

SITE = "lib/python3.12/site-packages"
DYNLOAD = "lib/python3.12/lib-dynload"

uv_cache = pytest.fixture(scope="module", autouse=True)(private_uv_cache)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small stack, built, published and exported once for the module."""
    spec = make_small_project(tmp_path_factory.mktemp("corrupt") / "stack")
    stacks("publish", spec)
    stacks("export", spec)
    return spec


def verify(spec: Path, *args: str | os.PathLike[str]) -> tuple[int, dict]:
    """`stacks verify --json`: the exit code and the findings that differ, by (item, layer)."""
    out = stacks("verify", spec, "--json", *args, check=False)
    assert "Traceback" not in out.stderr
    document = json.loads(out.stdout)
    differing = {
        (f["item"], f["layer"]): f for f in document["findings"] if f["status"] == "differs"
    }
    assert document["ok"] == (not differing)
    return out.code, differing


def run_fix(command: str, cwd: Path) -> None:
    """Run a `fix:` command as a user would paste it (`stacks` is this checkout's CLI)."""
    import sys

    for part in command.split(" && "):
        words = shlex.split(part)
        assert words[0] in ("stacks", "rm"), command
        argv = [sys.executable, "-m", "stacks", *words[1:]] if words[0] == "stacks" else words
        done = subprocess.run(
            argv, cwd=cwd, env=stacks_env(), capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr


def test_all_outputs_verify_clean(project: Path) -> None:
    code, differing = verify(project)
    assert (code, differing) == (0, {})
    text = stacks("verify", project).stdout
    assert "15 checked, all match" in text  # 13 layer items, 2 stack manifests


def test_garbage_doit_database_is_set_aside(project: Path) -> None:
    db = project.parent / "cache" / "doit.sqlite3"
    for garbage in (os.urandom(8192), b"SQLite format 3\x00" + os.urandom(5000), b""):
        db.write_bytes(garbage)
        out = stacks("build", project, "--clean", "--include", "app-*", "--json")
        assert out.ran() == ["build:app-app"]
        assert "Traceback" not in out.stderr
        if garbage:
            assert "doit's state database was unreadable" in out.stderr
    # A well-formed database (doit's table) whose rows are junk. Runs of one task at a time
    # never open it (no doit), but a corrupt one is set aside all the same.
    with sqlite3.connect(db) as connection:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS doit (task_id text PRIMARY KEY, task_data json)"
        )
        connection.execute("INSERT OR REPLACE INTO doit VALUES ('build:app-app', '{{{ not json')")
    out = stacks("build", project, "--clean", "--include", "app-*", "--json")
    assert out.ran() == ["build:app-app"] and "a task's state is not valid JSON" in out.stderr
    assert stacks("list", project).code == 0
    assert len(list(db.parent.glob("doit.sqlite3.corrupt-*"))) >= 3


def test_file_deleted_or_edited_in_a_build_is_found_and_rebuilt(project: Path) -> None:
    build = project.parent / "cache" / "build"
    deleted = build / "framework-fw" / SITE / "attrs" / "converters.py"
    deleted.unlink()
    code, differing = verify(project)
    assert code == 1
    assert differing[("build", "framework-fw")]["differences"] == [
        f"missing: {SITE}/attrs/converters.py"
    ]
    assert stacks("build", project, "--json").ran() == ["build:framework-fw"]
    assert deleted.is_file()
    # An edit that keeps size and mtime slips past the cheap stat check; verify sees it,
    # and its fix command repairs it.
    edited = build / "app-app" / SITE / "app.py"
    before = edited.stat()
    data = bytearray(edited.read_bytes())
    data[-2] = ord("#") if data[-2] != ord("#") else ord("!")
    edited.write_bytes(bytes(data))
    os.utime(edited, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert stacks("build", project, "--json").ran() == []
    code, differing = verify(project)
    finding = differing[("build", "app-app")]
    assert finding["differences"] == [f"changed: {SITE}/app.py"]
    run_fix(finding["fix"], project.parent)
    assert verify(project) == (0, {})


def test_damaged_provided_runtime_is_provided_again(project: Path) -> None:
    cache = project.parent / "cache"
    runtime, build = cache / "runtimes" / "cpython-3.12", cache / "build" / "cpython-3.12"
    # A folder removed from the runtime the runtime layer's build links from: the cheap stat
    # check notices, the runtime is provided again, and a clean build copies a whole runtime.
    subprocess.run(["rm", "-rf", str(runtime / DYNLOAD)], check=True)
    code, differing = verify(project)
    assert code == 1 and set(differing) == {("runtime", "cpython-3.12")}
    assert f"missing: {DYNLOAD}" in differing[("runtime", "cpython-3.12")]["differences"]
    plan = stacks("build", project, "--dry-run", "--json").data["plan"]
    reasons = {p["task"]: p["reasons"] for p in plan}
    assert f"runtime folder drifted: missing: {DYNLOAD}" in reasons["runtime:cpython-3.12"]
    out = stacks("build", project, "--clean", "--include", "cpython-3.12", "--json")
    assert {"runtime:cpython-3.12", "build:cpython-3.12"} <= set(out.ran())
    assert (runtime / DYNLOAD).is_dir() and (build / DYNLOAD).is_dir()
    # The app imports its extension modules from the build, not from the build machine.
    done = run_python(
        cache / "build" / "app-app" / "bin" / "python", "-c", "import _json; print(_json.__file__)"
    )
    assert done.returncode == 0 and done.stdout.startswith(str(build / DYNLOAD)), done
    assert stacks("build", project, "--json").ran() == []  # a no-op again: stat checks only
    # An in-place edit that keeps size and mtime slips past the stat check; verify finds it
    # by content, and its fix command provides the runtime again.
    edited = runtime / "lib" / "python3.12" / "os.py"
    before = edited.stat()
    data = bytearray(edited.read_bytes())
    data[-2] = ord("#") if data[-2] != ord("#") else ord("!")
    edited.unlink()  # a new inode: the build keeps its own copy
    edited.write_bytes(bytes(data))
    os.utime(edited, ns=(before.st_atime_ns, before.st_mtime_ns))
    code, differing = verify(project)
    finding = differing[("runtime", "cpython-3.12")]
    assert finding["differences"] == ["changed: lib/python3.12/os.py"]
    run_fix(finding["fix"], project.parent)
    assert verify(project) == (0, {})
    assert stacks("build", project, "--json").ran() == []


def test_edited_export_and_archive_are_reported_and_fixed(project: Path) -> None:
    export = project.parent / "_export" / "app-app" / SITE / "app.py"
    export.unlink()  # a hard link into the build: delete, don't edit in place
    export.write_text("print('tampered')\n", encoding="utf-8")
    archive = project.parent / "_artifacts" / "framework-fw.tar.xz"
    with archive.open("r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    code, differing = verify(project)
    assert code == 1 and set(differing) == {("export", "app-app"), ("archive", "framework-fw")}
    assert differing[("export", "app-app")]["differences"] == [f"changed: {SITE}/app.py"]
    assert "sha256" in differing[("archive", "framework-fw")]["differences"][0]
    # The export's stat check alone already redoes it; the archive needs the fix command.
    assert "export:app-app" in stacks("export", project, "--json").ran()
    run_fix(differing[("archive", "framework-fw")]["fix"], project.parent)
    assert verify(project) == (0, {})


def test_edited_published_and_exported_metadata_are_rewritten(project: Path) -> None:
    """Metadata is an output too: a run redoes the step whose metadata file was changed."""
    folders = {"publish": project.parent / "_artifacts", "export": project.parent / "_export"}
    for command, folder in folders.items():
        layer = folder / "__stacks__" / "env_metadata" / "framework-fw.json"
        stack = folder / "__stacks__" / "stack.json"
        originals = {path: path.read_bytes() for path in (layer, stack)}
        layer.write_text("{}\n", encoding="utf-8")
        step = "archive" if command == "publish" else "export"
        assert stacks(command, project, "--json").ran() == [f"{step}:framework-fw"]
        stack.write_text("{}\n", encoding="utf-8")
        assert stacks(command, project, "--json").ran() == [f"{step}:__stack__"]
        assert {path: path.read_bytes() for path in originals} == originals


def test_hand_edited_lock_is_reported_and_relocked_identically(project: Path) -> None:
    pylock = project.parent / "requirements" / "framework-fw" / "pylock.framework-fw.toml"
    original = pylock.read_bytes()
    pylock.write_bytes(original.replace(b'name = "attrs"', b'name = "attrs-evil"'))
    code, differing = verify(project)
    assert code == 1
    finding = differing[("lock", "framework-fw")]
    assert "edited by hand" in finding["differences"][0]
    assert finding["fix"].startswith("stacks lock ")
    shown = stacks("show", project)
    assert "*framework-fw" in shown.stdout and "run `stacks lock`" in shown.stdout
    plan = stacks("build", project, "--dry-run", "--json").data["plan"]
    reasons = {p["task"]: p["reasons"] for p in plan}
    assert any("edited by hand" in r for r in reasons["lock:framework-fw"])
    run_fix(finding["fix"], project.parent)
    assert pylock.read_bytes() == original
    assert stacks("build", project, "--json").ran() == []


def test_folder_in_place_of_lock_metadata_is_named_and_fixed(project: Path) -> None:
    folder = project.parent / "requirements" / "framework-fw"
    meta = folder / "pylock.framework-fw.meta.json"
    original = {p.name: p.read_bytes() for p in folder.iterdir()}
    meta.unlink()
    meta.mkdir()
    failed = stacks("lock", project, check=False)
    assert failed.code == 1 and "Traceback" not in failed.stderr
    assert "cannot lock layer 'framework-fw': a folder is where" in failed.stderr
    assert f"hint: remove the folder (`rm -r {meta}`)" in failed.stderr
    code, differing = verify(project)
    finding = differing[("lock", "framework-fw")]
    assert code == 1 and finding["differences"] == [f"a folder, not a file: {meta.name}"]
    run_fix(finding["fix"], project.parent)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == original
    assert stacks("build", project, "--json").ran() == []


def test_deployed_layers_are_verified_against_what_was_unpacked(
    project: Path, tmp_path: Path
) -> None:
    target = tmp_path / "deployed"
    stacks("deploy", project.parent / "_artifacts", "--target", target)
    out = stacks("verify", "--deployed", target, "--json")
    assert json.loads(out.stdout)["ok"] is True
    # Running the app writes bytecode; postinstall wrote bin/, pyvenv.cfg, sitecustomize.py:
    # none of that is a difference.
    done = subprocess.run(
        [str(target / "app-app" / "bin" / "python"), "-m", "app"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert stacks("verify", "--deployed", target).code == 0
    (target / "framework-fw" / SITE / "attrs" / "filters.py").unlink()
    (target / "app-app" / SITE / "extra.py").write_text("x = 1\n", encoding="utf-8")
    with (target / "cpython-3.12" / "lib" / "python3.12" / "os.py").open("a") as handle:
        handle.write("# edited\n")
    out = stacks("verify", "--deployed", target, "--json", check=False)
    assert out.code == 1 and "Traceback" not in out.stderr
    found = {f["layer"]: f for f in json.loads(out.stdout)["findings"]}
    assert found["framework-fw"]["differences"] == [f"missing: {SITE}/attrs/filters.py"]
    assert found["app-app"]["differences"] == [f"added: {SITE}/extra.py"]
    assert found["cpython-3.12"]["differences"] == ["changed: lib/python3.12/os.py"]
    for finding in found.values():
        fix = finding["fix"].replace("ARCHIVE_DIR", str(project.parent / "_artifacts"))
        run_fix(fix, tmp_path)
    assert found["app-app"]["status"] == "differs"
    (target / "app-app" / SITE / "extra.py").unlink(missing_ok=True)
    assert stacks("verify", "--deployed", target).code == 0
    # Usage errors are exit 2, not tracebacks.
    for args in (["verify"], ["verify", "--deployed", tmp_path / "nowhere"]):
        out = stacks(*args, check=False)
        assert out.code == 2 and "Traceback" not in out.stderr


def _corrupt_and_rebuild(spec: Path, cached: Path, damage: str) -> str:
    if damage == "truncated":
        cached.write_bytes(cached.read_bytes()[: cached.stat().st_size // 2])
    else:
        data = bytearray(cached.read_bytes())
        data[len(data) // 2] ^= 0xFF
        cached.write_bytes(bytes(data))
    out = stacks("build", spec, "--clean", "--include", "cpython-*", "--json")
    return out.stderr


@pytest.mark.parametrize("damage", ["truncated", "altered"])
def test_damaged_download_cache_is_detected_and_refetched(
    tmp_path: Path, http_server: FaultyServer, local_runtime: object, damage: str
) -> None:
    runtime, _ = local_runtime  # type: ignore[misc]
    data = runtime_archive(runtime)
    digest = hashlib.sha256(data).hexdigest()
    url = http_server.serve("/cpython.tar.gz", data)
    spec = make_small_project(tmp_path / "stack", archive_runtime_spec(url, digest))
    stacks("build", spec)
    cached = spec.parent / "cache" / "downloads" / "sha256" / digest / "cpython.tar.gz"
    assert len(http_server.hits("/cpython.tar.gz")) == 1
    # The runtime must be provided again (its folder is gone), from a damaged cache.
    runtime_dir = spec.parent / "cache" / "runtimes" / "cpython-3.12"
    subprocess.run(["rm", "-rf", str(runtime_dir)], check=True)
    _corrupt_and_rebuild(spec, cached, damage)
    assert len(http_server.hits("/cpython.tar.gz")) == 2  # detected, fetched again
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == digest
    assert snapshot(runtime_dir)  # provided again from good bytes
