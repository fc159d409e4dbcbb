"""The runtime store: provided runtimes made once per user and hard-linked into projects.

Real local interpreters (the `local` source, CPython 3.12 from pyenv), real archives over
file:// URLs, real `stacks` processes; each test has a store folder of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import LOCAL_RUNTIME_PYTHON
from projects import SMALL_STACK, sha256_of, write_project
from stackrun import stacks

from stacks import hashing
from stacks.errors import RuntimeFetchError
from stacks.runtime.sources import ProvidedRuntime, find_local_interpreter, provide_runtime
from stacks.runtime.store import default_store, resolve_store, store_key
from stacks.spec import RuntimeSource

XY = LOCAL_RUNTIME_PYTHON
OS_PY = Path("lib") / f"python{XY}" / "os.py"
PYTHON = Path("bin") / f"python{XY}"


@pytest.fixture(autouse=True)
def _needs_local_python() -> None:
    try:
        find_local_interpreter(XY)
    except RuntimeFetchError as exc:
        pytest.skip(f"no local CPython {XY}: {exc.message}")


def provide(
    target: Path, store: Path | None, implementation: str = f"cpython@{XY}"
) -> ProvidedRuntime:
    """Provide the local CPython into `target`, through `store`."""
    return provide_runtime(
        implementation,
        RuntimeSource("local"),
        target,
        download_dir=target.parent / "downloads",
        store=store,
    )


def entries(store: Path) -> list[Path]:
    """The store's runtime entries."""
    return sorted(p for p in store.iterdir() if p.name != "locks" and not p.name.startswith("."))


def inode(path: Path) -> int:
    return os.stat(path).st_ino


def runs_from_its_folder(runtime: Path) -> None:
    done = subprocess.run(
        [str(runtime / PYTHON), "-I", "-B", "-c", "import sys, json; print(sys.prefix)"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert os.path.realpath(done.stdout.strip()) == os.path.realpath(runtime)


def test_two_projects_share_one_store_entry(tmp_path: Path) -> None:
    store = tmp_path / "store"
    first = provide(tmp_path / "one" / "cache" / "runtimes" / "rt", store)
    second = provide(tmp_path / "two" / "cache" / "runtimes" / "rt", store)
    one, two = tmp_path / "one/cache/runtimes/rt", tmp_path / "two/cache/runtimes/rt"
    (entry,) = entries(store)
    # The second project linked every file of the entry: same inodes, no copy.
    for rel in (PYTHON, OS_PY):
        assert inode(one / rel) == inode(two / rel) == inode(entry / "runtime" / rel)
    assert first.python_version == second.python_version
    assert first.source == second.source
    # The manifest handed to the runtime step is what a scan of the project copy records.
    for provided, tree in ((first, one), (second, two)):
        assert provided.manifest is not None
        scanned = hashing.scan_tree(tree, skip=hashing.skip_bytecode)
        assert provided.manifest.to_json() == scanned.to_json()
        runs_from_its_folder(tree)


def _damage(stored: Path, how: str) -> None:
    if how == "edited in place":
        # Same size and mtime: only hashing the linked files can tell.
        before = stored.stat()
        data = bytearray(stored.read_bytes())
        data[-2] = ord("#") if data[-2] != ord("#") else ord("!")
        stored.write_bytes(bytes(data))
        os.utime(stored, ns=(before.st_atime_ns, before.st_mtime_ns))
    else:
        stored.unlink()


def test_a_damaged_store_entry_is_not_used_and_is_replaced(tmp_path: Path) -> None:
    store = tmp_path / "store"
    provide(tmp_path / "p0" / "rt", store)
    good = sha256_of(tmp_path / "p0" / "rt" / OS_PY)
    for number, how in enumerate(("edited in place", "file removed"), start=1):
        (entry,) = entries(store)
        stored = entry / "runtime" / OS_PY
        damaged_inode = inode(stored)
        _damage(stored, how)
        project = tmp_path / f"p{number}" / "rt"
        provided = provide(project, store)
        assert sha256_of(project / OS_PY) == good, how
        assert inode(project / OS_PY) != damaged_inode, how
        # The entry was made again from the interpreter: the next project links the good one.
        (entry,) = entries(store)
        assert inode(entry / "runtime" / OS_PY) == inode(project / OS_PY), how
        assert provided.manifest is not None
        runs_from_its_folder(project)


def test_archive_runtimes_are_stored_by_their_sha256(tmp_path: Path) -> None:
    store = tmp_path / "store"
    made = tmp_path / "made"
    provide(made, None)
    archive = tmp_path / "python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(made, arcname="python")
    digest = sha256_of(archive)
    source = RuntimeSource("archive", url=archive.as_uri(), sha256=digest)

    def from_archive(target: Path, implementation: str = f"cpython@{XY}") -> ProvidedRuntime:
        return provide_runtime(
            implementation, source, target, download_dir=tmp_path / "dl", store=store
        )

    first = from_archive(tmp_path / "a" / "rt")
    from_archive(tmp_path / "b" / "rt")
    assert inode(tmp_path / "a/rt" / OS_PY) == inode(tmp_path / "b/rt" / OS_PY)
    assert first.source == {"kind": "archive", "url": archive.as_uri(), "sha256": digest}
    # A stored runtime of another patch release is refused, and the target is left alone.
    with pytest.raises(
        RuntimeFetchError, match=rf"is CPython {first.python_version}, not {XY}.999"
    ):
        from_archive(tmp_path / "c" / "rt", f"cpython@{XY}.999")
    assert not (tmp_path / "c" / "rt").exists()


def test_an_unusable_store_is_a_clear_error(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.write_text("a file, not a folder\n", encoding="utf-8")
    with pytest.raises(RuntimeFetchError) as caught:
        provide(tmp_path / "rt", store)
    assert f"cannot use the runtime store {store}" in caught.value.message
    assert "STACKS_RUNTIME_STORE=off" in (caught.value.hint or "")
    assert not (tmp_path / "rt").exists()


def test_store_setting_option_environment_and_default(tmp_path: Path) -> None:
    home = {"HOME": str(tmp_path / "home")}
    assert resolve_store(None, home) == tmp_path / "home" / ".cache" / "stacks" / "runtimes"
    xdg = {**home, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert resolve_store(None, xdg) == default_store(xdg) == tmp_path / "xdg/stacks/runtimes"
    assert resolve_store(None, {**home, "STACKS_RUNTIME_STORE": "off"}) is None
    assert resolve_store(None, {**home, "STACKS_RUNTIME_STORE": str(tmp_path / "s")}) == (
        tmp_path / "s"
    )
    # The option wins over the environment, either way.
    assert resolve_store("off", {**home, "STACKS_RUNTIME_STORE": str(tmp_path / "s")}) is None
    assert resolve_store(str(tmp_path / "o"), {**home, "STACKS_RUNTIME_STORE": "off"}) == (
        tmp_path / "o"
    )


def test_keys_change_with_what_decides_the_bytes() -> None:
    base = {"kind": "archive", "sha256": "0" * 64, "xy": "3.12"}
    assert store_key(base) == store_key(dict(base))
    assert store_key(base) != store_key({**base, "sha256": "1" * 64})
    assert store_key(base) != store_key({**base, "xy": "3.11"})


def _project(folder: Path) -> Path:
    return write_project(folder, SMALL_STACK, {"app.py": "print('app')\n"})


@pytest.mark.slow
def test_a_new_project_links_its_runtime_from_the_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    env = {"STACKS_RUNTIME_STORE": str(store)}
    first, second = _project(tmp_path / "one"), _project(tmp_path / "two")
    # Two projects at once: the entry is made once, under its lock, and both link it.
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "stacks", "lock", str(spec), "--include", "cpython-*"],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for spec in (first, second)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    (entry,) = entries(store)
    rel = Path("cache/runtimes/cpython-3.12") / OS_PY
    assert (
        inode(first.parent / rel) == inode(second.parent / rel) == inode(entry / "runtime" / OS_PY)
    )
    # --runtime-store off: a project of its own bytes; the store is not touched.
    third = _project(tmp_path / "three")
    stacks("lock", third, "--include", "cpython-*", "--runtime-store", "off", env=env)
    assert inode(third.parent / rel) != inode(entry / "runtime" / OS_PY)
    assert sha256_of(third.parent / rel) == sha256_of(entry / "runtime" / OS_PY)
    # The project's own drift check still works on linked files: a removed file is provided again.
    (first.parent / rel).unlink()
    out = stacks("lock", first, "--include", "cpython-*", "--json", env=env)
    assert "runtime:cpython-3.12" in out.ran()
    assert inode(first.parent / rel) == inode(entry / "runtime" / OS_PY)
