"""A repair that repairs: a package file edited in place with its size and mtime put back (in
the build, in the export, or in uv's cache: hard links of one file) passes every cheap check.
`stacks verify` finds it by content, and running the fixes it prints, in order, must put the
wheel's own bytes back everywhere (uv's cache entry purged and fetched again), so that verify
passes by content, publishing archives the pristine file and the app runs.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from faults import make_small_project, stacks_env
from projects import private_uv_cache
from stackrun import run_python, stacks

pytestmark = pytest.mark.slow

SITE = "lib/python3.12/site-packages"

uv_cache = pytest.fixture(scope="module", autouse=True)(private_uv_cache)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small stack, built, published and exported once for the module."""
    spec = make_small_project(tmp_path_factory.mktemp("repair") / "stack")
    stacks("publish", spec)
    stacks("export", spec)
    return spec


def _verify(spec: Path) -> tuple[int, list[dict]]:
    """`stacks verify --json`: the exit code and the findings that differ, in the order shown."""
    out = stacks("verify", spec, "--json", check=False)
    assert "Traceback" not in out.stderr, out.stderr
    return out.code, [f for f in json.loads(out.stdout)["findings"] if f["status"] == "differs"]


def _run_fix(command: str, cwd: Path) -> None:
    """Run a `fix:` command as a user would paste it (`stacks` is this checkout's CLI)."""
    for part in command.split(" && "):
        words = shlex.split(part)
        assert words[0] in ("stacks", "rm"), command
        argv = [sys.executable, "-m", "stacks", *words[1:]] if words[0] == "stacks" else words
        done = subprocess.run(
            argv, cwd=cwd, env=stacks_env(), capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"{part}\n{done.stderr}"


def _same_file_in(folder: Path, twin: Path) -> Path:
    """The name of `twin`'s inode under `folder` (uv's cache entry a build file links to)."""
    wanted = twin.stat()
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            info = os.stat(os.path.join(dirpath, name))
            if (info.st_ino, info.st_dev) == (wanted.st_ino, wanted.st_dev):
                return Path(dirpath, name)
    raise AssertionError(f"no hard link of {twin} under {folder}")


def _edit_keeping_size_and_mtime(path: Path) -> None:
    """Break the file's Python syntax in place: same inode, same size, mtime put back."""
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[:8] = b"):):):):"
    with path.open("r+b") as handle:  # in place: every hard link sees it
        handle.write(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


@pytest.mark.parametrize("where", ["build", "export", "uv cache"])
def test_printed_fixes_repair_a_same_size_edit_with_mtime_put_back(
    project: Path, uv_cache: Path, where: str
) -> None:
    root = project.parent
    built = root / "cache" / "build" / "cpython-3.12" / SITE / "six.py"
    exported = root / "_export" / "cpython-3.12" / SITE / "six.py"
    pristine = built.read_bytes()
    edited = {"build": built, "export": exported, "uv cache": _same_file_in(uv_cache, built)}[where]
    assert edited.samefile(built), "the build, export and uv cache hold one file (hard links)"
    _edit_keeping_size_and_mtime(edited)
    # Every cheap check is blind to it...
    assert stacks("build", project, "--json").ran() == []
    # ... verify is not, and its fixes, run in the order shown, repair it.
    code, differing = _verify(project)
    assert code == 1
    assert ("build", "cpython-3.12") in {(f["item"], f["layer"]) for f in differing}
    for fix in dict.fromkeys(f["fix"] for f in differing):
        _run_fix(fix, root)
    assert _verify(project) == (0, [])
    assert built.read_bytes() == pristine
    assert exported.read_bytes() == pristine
    assert _same_file_in(uv_cache, built).read_bytes() == pristine  # fetched again
    stacks("publish", project)
    with tarfile.open(root / "_artifacts" / "cpython-3.12.tar.xz") as archive:
        member = archive.extractfile(f"cpython-3.12/{SITE}/six.py")
        assert member is not None and member.read() == pristine
    ran = stacks("run", project, "app")
    assert ran.stdout.startswith("ok six"), ran.stderr
    exported_app = run_python(root / "_export" / "app-app" / "bin" / "python", "-m", "app")
    assert exported_app.returncode == 0 and exported_app.stdout.startswith("ok"), (
        exported_app.stderr
    )


def test_forced_rebuild_of_a_runtime_layer_provides_a_damaged_runtime_again(
    project: Path,
) -> None:
    """The build of a runtime layer links the provided runtime's files: a forced rebuild
    checks them by content first, so the build fix alone repairs an edit made through it."""
    root = project.parent
    built = root / "cache" / "build" / "cpython-3.12" / "lib" / "python3.12" / "textwrap.py"
    provided = root / "cache" / "runtimes" / "cpython-3.12" / "lib" / "python3.12" / "textwrap.py"
    assert built.samefile(provided)
    pristine = built.read_bytes()
    _edit_keeping_size_and_mtime(built)
    code, differing = _verify(project)
    found = {(f["item"], f["layer"]): f for f in differing}
    assert code == 1 and {("runtime", "cpython-3.12"), ("build", "cpython-3.12")} <= set(found)
    out = stacks("build", project, "--clean", "--include", "cpython-3.12")
    assert "providing it again" in out.stderr
    assert built.read_bytes() == pristine and provided.read_bytes() == pristine
    # The export links the same file: its own fix exports it again from the repaired build.
    _run_fix(found[("export", "cpython-3.12")]["fix"], root)
    assert _verify(project) == (0, [])


def test_garbage_lock_metadata_is_a_difference_with_a_fix(project: Path) -> None:
    meta = project.parent / "requirements" / "framework-fw" / "pylock.framework-fw.meta.json"
    meta.write_text("{ not json at all", encoding="utf-8")
    code, differing = _verify(project)
    assert code == 1
    [finding] = [f for f in differing if (f["item"], f["layer"]) == ("lock", "framework-fw")]
    assert finding["differences"][0].startswith("unreadable: pylock.framework-fw.meta.json")
    _run_fix(finding["fix"], project.parent)
    json.loads(meta.read_text(encoding="utf-8"))
    assert _verify(project) == (0, [])


def test_deleted_stack_manifests_are_differences_with_a_fix(project: Path) -> None:
    root = project.parent
    manifests = [
        root / folder / "__stacks__" / "stack.json" for folder in ("_artifacts", "_export")
    ]
    before = [path.read_bytes() for path in manifests]
    for path in manifests:
        path.unlink()
    code, differing = _verify(project)
    assert code == 1
    found = {(f["item"], f["layer"]): f for f in differing}
    assert set(found) == {("archive", "__stack__"), ("export", "__stack__")}
    assert found[("archive", "__stack__")]["differences"] == [
        "missing: __stacks__/stack.json (deploy reads it first)"
    ]
    for finding in differing:
        _run_fix(finding["fix"], root)
    assert [path.read_bytes() for path in manifests] == before
    assert _verify(project) == (0, [])


def test_verify_names_the_tools_that_changed_since_an_archive_was_made(project: Path) -> None:
    """Each archive's metadata records the tools that decide its bytes; verify compares them
    with the ones a republish would use now and names each change (a note, not a failure)."""
    meta = project.parent / "_artifacts" / "__stacks__" / "env_metadata" / "framework-fw.json"
    published = json.loads(meta.read_text(encoding="utf-8"))
    tools = published["build_tools"]
    assert tools["uv"] == importlib.metadata.version("uv")
    assert tools["compression"]["library"] == "liblzma" and tools["compression"]["level"] == 6
    out = stacks("verify", project, "--json")
    notes = {(f["item"], f["layer"]): f["notes"] for f in json.loads(out.stdout)["findings"]}
    assert notes[("archive", "framework-fw")] == []
    # As if published by an older uv with another liblzma: the record is of another time.
    then = {**tools, "uv": "0.1.0", "compression": {**tools["compression"], "version": "5.0.0"}}
    meta.write_text(json.dumps({**published, "build_tools": then}), encoding="utf-8")
    out = stacks("verify", project)  # exit 0: tools are notes
    assert (
        "note: built with other tools than a republish would use now (its bytes may differ): "
        f"compression version 5.0.0 -> {tools['compression']['version']}, "
        f"uv 0.1.0 -> {tools['uv']}"
    ) in out.stdout
    stacks("publish", project)  # the edited metadata is an output: written again
    assert json.loads(meta.read_text(encoding="utf-8"))["build_tools"] == tools
