"""stacks/publish/: reproducible archives in four formats, and local exports."""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import random
import shutil
import stat
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
from stack_trees import (
    APP,
    FRAMEWORK,
    LOCKED_AT,
    RUNTIME,
    SITE,
    assert_runs_from,
    build_stack,
    run_app,
)

from stacks.errors import PublishError
from stacks.publish.archives import (
    ARCHIVE_FORMATS,
    INJECTED_POSTINSTALL,
    _compressed,
    _HashingWriter,
    _ParallelXzWriter,
    layer_entries,
    write_archive,
)
from stacks.publish.export import export_layer, supports_symlinks
from stacks.publish.metadata import write_stack_metadata

LAYERED = {RUNTIME: False, FRAMEWORK: True, APP: True}
TAR_FORMATS = [f for f in ARCHIVE_FORMATS if f.startswith("tar.")]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A configured stack (as a build folder would hold it); never modified by tests."""
    root = tmp_path_factory.mktemp("template") / "build"
    build_stack(root)
    return root


def scramble_mtimes(root: Path, seed: int) -> None:
    """Give every entry (folders and links too) a different, random mtime."""
    rng = random.Random(seed)
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            stamp = rng.randrange(1_000_000_000, 1_900_000_000)
            os.utime(os.path.join(folder, name), (stamp, stamp), follow_symlinks=False)


def copy_layer(template: Path, name: str, dest: Path, seed: int) -> Path:
    """A copy of one layer at `dest/name` with scrambled mtimes."""
    shutil.copytree(template / name, dest / name, symlinks=True)
    scramble_mtimes(dest / name, seed)
    return dest / name


def archive_both(template: Path, tmp_path: Path, name: str, fmt: str) -> tuple[bytes, bytes]:
    """Archive copies of a layer from two places with different mtimes; return both archives."""
    results = []
    for index, place in enumerate(["first copy", "elsewhere/🦎 second"]):
        tree = copy_layer(template, name, tmp_path / place, seed=index)
        archive = tmp_path / f"out{index}" / f"{name}.{fmt}"
        result = write_archive(
            tree, archive, root_name=name, fmt=fmt, mtime=LOCKED_AT, layered=LAYERED[name]
        )
        data = archive.read_bytes()
        assert result.size == len(data)
        assert result.sha256 == hashlib.sha256(data).hexdigest()
        assert result.path == archive
        results.append(data)
    return results[0], results[1]


def tar_bytes(data: bytes, fmt: str) -> bytes:
    """The uncompressed tar stream of an archive, decompressed by the real CLI tools."""
    tool = {"tar.xz": ["xz", "-dc"], "tar.zst": ["zstd", "-dcq"], "tar.gz": ["gzip", "-dc"]}[fmt]
    return subprocess.run(tool, input=data, capture_output=True, check=True).stdout


def test_layer_entries_filter_generated_hidden_and_bytecode(template: Path) -> None:
    app = {e.name: e for e in layer_entries(template / APP, layered=True)}
    assert sorted(app) == list(app)
    assert "postinstall.py" in app and app["postinstall.py"].source == INJECTED_POSTINSTALL
    assert f"{SITE}/demo_app.py" in app
    for gone in ("bin", "bin/python", "pyvenv.cfg", ".build-stamp", f"{SITE}/sitecustomize.py"):
        assert gone not in app
    framework = {e.name: e for e in layer_entries(template / FRAMEWORK, layered=True)}
    assert not [n for n in framework if "__pycache__" in n or n.endswith(".pyc")]
    link = framework["share/venv/dynlib/libfake.so.1"]
    assert link.kind == "symlink" and link.mode == 0o777
    assert link.link_target == f"../../../{SITE}/fwpkg/libfake.so.1"
    runtime = {e.name: e for e in layer_entries(template / RUNTIME, layered=False)}
    assert runtime["bin/python"].kind == "symlink" and runtime["bin/python"].link_target == (
        "python3.12"
    )
    assert runtime["bin/python3.12"].mode == 0o755 and runtime["bin"].mode == 0o755
    assert runtime["lib/python3.12/os.py"].mode == 0o644


@pytest.mark.parametrize("fmt", ARCHIVE_FORMATS)
@pytest.mark.parametrize("name", [FRAMEWORK, APP])
def test_archives_are_byte_identical_from_anywhere(
    template: Path, tmp_path: Path, name: str, fmt: str
) -> None:
    first, second = archive_both(template, tmp_path, name, fmt)
    assert first == second
    contents = (
        b"".join(
            zipfile.ZipFile(io.BytesIO(first)).read(n)
            for n in zipfile.ZipFile(io.BytesIO(first)).namelist()
        )
        if fmt == "zip"
        else tar_bytes(first, fmt)
    )
    for leaked in (str(tmp_path), str(template), "first copy", "second"):
        assert leaked.encode() not in contents


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ARCHIVE_FORMATS)
def test_runtime_archives_are_byte_identical_from_anywhere(
    template: Path, tmp_path: Path, fmt: str
) -> None:
    first, second = archive_both(template, tmp_path, RUNTIME, fmt)
    assert first == second
    if fmt != "zip":
        assert str(tmp_path).encode() not in tar_bytes(first, fmt)


@pytest.mark.parametrize("fmt", TAR_FORMATS)
def test_tar_metadata_is_normalised(template: Path, tmp_path: Path, fmt: str) -> None:
    tree = copy_layer(template, FRAMEWORK, tmp_path, seed=7)
    (tree / SITE / "fwpkg" / "tool.sh").write_text("#!/bin/sh\n")
    os.chmod(tree / SITE / "fwpkg" / "tool.sh", 0o775)
    os.chmod(tree / SITE / "fwpkg" / "__init__.py", 0o600)
    archive = tmp_path / f"fw.{fmt}"
    write_archive(tree, archive, root_name="framework-x@2", fmt=fmt, mtime=LOCKED_AT, layered=True)
    with tarfile.open(fileobj=io.BytesIO(tar_bytes(archive.read_bytes(), fmt))) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[0] == "framework-x@2" and names == sorted(names)
    assert all(n == "framework-x@2" or n.startswith("framework-x@2/") for n in names)
    for member in members:
        assert member.mtime == LOCKED_AT
        assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
    modes = {m.name.split("/", 1)[-1]: (m.type, m.mode) for m in members}
    assert modes[f"{SITE}/fwpkg/tool.sh"] == (tarfile.REGTYPE, 0o755)
    assert modes[f"{SITE}/fwpkg/__init__.py"] == (tarfile.REGTYPE, 0o644)
    assert modes["share/venv/dynlib"] == (tarfile.DIRTYPE, 0o755)
    assert modes["share/venv/dynlib/libfake.so.1"] == (tarfile.SYMTYPE, 0o777)


def test_zip_metadata_is_normalised(template: Path, tmp_path: Path) -> None:
    tree = copy_layer(template, FRAMEWORK, tmp_path, seed=3)
    archive = tmp_path / "fw.zip"
    write_archive(tree, archive, root_name="fw", fmt="zip", mtime=LOCKED_AT, layered=True)
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        assert [i.filename for i in infos] == sorted(i.filename for i in infos)
        assert infos[0].filename == "fw/"
        for info in infos:
            assert info.date_time == (2025, 8, 27, 0, 0, 0)
            assert info.create_system == 3
        kinds = {i.filename: i.external_attr >> 16 for i in infos}
        assert kinds["fw/share/venv/dynlib/"] == stat.S_IFDIR | 0o755
        assert kinds["fw/share/venv/dynlib/libfake.so.1"] == stat.S_IFLNK | 0o777
        assert zf.read("fw/share/venv/dynlib/libfake.so.1") == (
            f"../../../{SITE}/fwpkg/libfake.so.1".encode()
        )
        assert kinds["fw/postinstall.py"] == stat.S_IFREG | 0o644
        assert zf.read("fw/postinstall.py") == INJECTED_POSTINSTALL.read_bytes()
        assert zf.testzip() is None


def test_gzip_header_has_no_mtime_or_name(template: Path, tmp_path: Path) -> None:
    archive = tmp_path / "app.tar.gz"
    write_archive(
        template / APP, archive, root_name=APP, fmt="tar.gz", mtime=LOCKED_AT, layered=True
    )
    header = archive.read_bytes()[:10]
    assert header[4:8] == b"\0\0\0\0" and header[3] & 0x08 == 0  # no mtime, no FNAME
    with tarfile.open(archive, "r:gz") as tar:
        assert f"{APP}/postinstall.py" in tar.getnames()


@pytest.mark.parametrize("fmt", ["tar.xz", "tar.zst"])
def test_archives_round_trip_through_tarfile_and_cli(
    template: Path, tmp_path: Path, fmt: str
) -> None:
    archive = tmp_path / f"fw.{fmt}"
    write_archive(
        template / FRAMEWORK, archive, root_name=FRAMEWORK, fmt=fmt, mtime=LOCKED_AT, layered=True
    )
    mode = "r:xz" if fmt == "tar.xz" else "r:"
    source = archive if fmt == "tar.xz" else io.BytesIO(tar_bytes(archive.read_bytes(), fmt))
    with (
        tarfile.open(source, mode)
        if isinstance(source, Path)
        else tarfile.open(fileobj=source) as tar
    ):
        data = tar.extractfile(f"{FRAMEWORK}/{SITE}/fwpkg/__init__.py")
        assert data is not None
        assert data.read() == (template / FRAMEWORK / SITE / "fwpkg" / "__init__.py").read_bytes()
    tool = "xz" if fmt == "tar.xz" else "zstd"
    subprocess.run([tool, "-t", "-q", str(archive)], check=True)
    listing = subprocess.run(
        ["tar", "-tvf", str(archive), "--xz" if fmt == "tar.xz" else "--zstd"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"{FRAMEWORK}/share/venv/dynlib/libfake.so.1 -> ../../../" in listing


def test_parallel_xz_output_does_not_depend_on_threads() -> None:
    rng = random.Random(5)
    words = [bytes(rng.choices(b"abcdefgh", k=rng.randrange(2, 9))) for _ in range(500)]
    data = b" ".join(rng.choice(words) for _ in range(150_000))
    outputs = []
    for threads in (1, 2, 5):
        sink = io.BytesIO()
        writer = _ParallelXzWriter(_HashingWriter(sink), threads=threads, chunk_size=64 << 10)  # type: ignore[arg-type]
        for start in range(0, len(data), 10_000):
            writer.write(data[start : start + 10_000])
        writer.close()
        outputs.append(sink.getvalue())
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[0].count(b"\xfd7zXZ\x00") == -(-len(data) // (64 << 10))  # one stream per chunk
    assert lzma.decompress(outputs[0]) == data
    cli = subprocess.run(["xz", "-dc"], input=outputs[0], capture_output=True, check=True).stdout
    assert cli == data


def test_multithreaded_zstd_does_not_depend_on_threads() -> None:
    # Larger than one zstd job at our level, so the threads really split the work.
    rng = random.Random(9)
    block = bytes(rng.randrange(256) for _ in range(1 << 16))
    data = b"".join(block[rng.randrange(1 << 15) :] for _ in range(700))
    outputs = []
    for threads in (1, 2, 4):
        sink = io.BytesIO()
        with _compressed("tar.zst", _HashingWriter(sink), threads) as stream:  # type: ignore[arg-type]
            stream.write(data)
        outputs.append(sink.getvalue())
    assert outputs[0] == outputs[1] == outputs[2]
    cli = subprocess.run(["zstd", "-dcq"], input=outputs[0], capture_output=True, check=True).stdout
    assert cli == data


def test_symlinks_leaving_the_layer_are_refused(template: Path, tmp_path: Path) -> None:
    tree = copy_layer(template, APP, tmp_path, seed=1)
    out = tmp_path / "out"
    link = tree / SITE / "escape"
    os.symlink(f"../../../../{FRAMEWORK}/{SITE}/fwpkg", link)
    with pytest.raises(PublishError, match="leaves the layer"):
        write_archive(tree, out / "a.tar.gz", root_name=APP, fmt="tar.gz", mtime=0, layered=True)
    link.unlink()
    os.symlink("/etc/passwd", link)
    with pytest.raises(PublishError, match="leaves the layer"):
        export_layer(tree, out / APP, layered=True)
    assert not out.exists() or not list(out.iterdir())


def test_absolute_symlink_inside_the_layer_becomes_relative(template: Path, tmp_path: Path) -> None:
    tree = copy_layer(template, APP, tmp_path, seed=1)
    os.symlink(tree / SITE / "demo_app.py", tree / "share" / "demo.py")
    entries = {e.name: e for e in layer_entries(tree, layered=True)}
    assert entries["share/demo.py"].link_target == f"../{SITE}/demo_app.py"


def test_special_files_are_refused_and_nothing_is_left(template: Path, tmp_path: Path) -> None:
    tree = copy_layer(template, APP, tmp_path, seed=1)
    os.mkfifo(tree / SITE / "pipe")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(PublishError, match="fifos"):
        write_archive(tree, out / "a.tar.xz", root_name=APP, fmt="tar.xz", mtime=0, layered=True)
    assert list(out.iterdir()) == []


def test_bad_arguments_are_refused(template: Path, tmp_path: Path) -> None:
    tree = template / APP
    with pytest.raises(PublishError, match="unknown archive format"):
        write_archive(tree, tmp_path / "a.rar", root_name=APP, fmt="rar", mtime=0, layered=True)
    with pytest.raises(PublishError, match="root folder name"):
        write_archive(tree, tmp_path / "a.zip", root_name="../x", fmt="zip", mtime=0, layered=True)
    with pytest.raises(PublishError, match="build the layer first"):
        layer_entries(tmp_path / "missing", layered=True)


def test_supports_symlinks_probe(tmp_path: Path) -> None:
    assert supports_symlinks(tmp_path / "new folder")
    assert list((tmp_path / "new folder").iterdir()) == []


def export_stack(template: Path, export: Path, *, symlinks: bool = True) -> None:
    """Export the three layers, lowest first, like the export tasks do."""
    for name in (RUNTIME, FRAMEWORK, APP):
        export_layer(template / name, export / name, layered=LAYERED[name], symlinks=symlinks)


def test_export_hard_links_files_and_generates_its_own(template: Path, tmp_path: Path) -> None:
    build = tmp_path / "build"
    shutil.copytree(template, build, symlinks=True)
    export = tmp_path / "export dé"
    build_cfg = (build / APP / "pyvenv.cfg").read_bytes()
    export_stack(build, export)
    same = [
        f"{FRAMEWORK}/{SITE}/fwpkg/__init__.py",
        f"{APP}/{SITE}/demo_app.py",
        f"{RUNTIME}/bin/python3.12",
        f"{RUNTIME}/lib/python3.12/os.py",
    ]
    for rel in same:
        assert os.stat(export / rel).st_ino == os.stat(build / rel).st_ino, rel
    for rel in [f"{APP}/pyvenv.cfg", f"{APP}/{SITE}/sitecustomize.py", f"{APP}/bin/python"]:
        assert os.stat(export / rel).st_ino != os.stat(build / rel).st_ino, rel
        assert str(tmp_path).encode() not in (export / rel).read_bytes()  # relative only
    assert (build / APP / "pyvenv.cfg").read_bytes() == build_cfg  # the build is untouched
    assert os.stat(export / APP / "postinstall.py").st_ino != os.stat(INJECTED_POSTINSTALL).st_ino
    assert os.readlink(export / RUNTIME / "bin" / "python") == "python3.12"
    assert not (export / APP / ".build-stamp").exists()
    assert list((export / RUNTIME / "lib/python3.12/__pycache__").glob("os.cpython-312.pyc"))
    assert_runs_from(run_app(export / APP / "bin" / "python"), export)
    export_layer(build / APP, export / APP, layered=True)  # re-export replaces it
    assert_runs_from(run_app(export / APP / "bin" / "python"), export)
    assert sorted(p.name for p in export.iterdir()) == sorted([RUNTIME, FRAMEWORK, APP])


def test_export_without_symlinks_still_runs(template: Path, tmp_path: Path) -> None:
    export = tmp_path / "fat"
    export_stack(template, export, symlinks=False)
    links = [p for p in export.rglob("*") if p.is_symlink()]
    assert links == []
    dynlib = export / FRAMEWORK / "share/venv/dynlib/libfake.so.1"
    assert dynlib.read_bytes() == b"not really a shared library\n"
    assert (export / APP / "bin" / "python3").read_bytes() == (
        export / APP / "bin" / "python"
    ).read_bytes()
    report = run_app(export / APP / "bin" / "python")
    assert_runs_from(report, export)


def test_export_needs_the_runtime_first(template: Path, tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="export the runtime"):
        export_layer(template / APP, tmp_path / "alone" / APP, layered=True)
    assert not (tmp_path / "alone" / APP).exists()


def test_write_stack_metadata(tmp_path: Path) -> None:
    layers = [
        {"layer_name": "app", "install_target": "app", "kind": "application"},
        {"layer_name": "cpython-3.12", "install_target": "cpython-3.12@2", "kind": "runtime"},
    ]
    manifest = write_stack_metadata(tmp_path, layers, platform="linux_x86_64")
    assert manifest == tmp_path / "__stacks__" / "stack-linux_x86_64.json"
    data = json.loads(manifest.read_text())
    assert data == {
        "layers": {"applications": [layers[0]], "frameworks": [], "runtimes": [layers[1]]}
    }
    assert manifest.read_text().endswith("}\n")
    single = tmp_path / "__stacks__" / "env_metadata" / "cpython-3.12-linux_x86_64.json"
    assert json.loads(single.read_text()) == layers[1]


def test_export_links_valid_build_bytecode_and_recompiles_the_rest(
    template: Path, tmp_path: Path
) -> None:
    build = tmp_path / "build"
    shutil.copytree(template, build, symlinks=True)
    stdlib = build / RUNTIME / "lib" / "python3.12"
    python = build / RUNTIME / "bin" / "python3.12"
    subprocess.run([python, "-I", "-m", "compileall", "-q", stdlib / "json"], check=True)
    # sitecustomize.py is regenerated on export: its build bytecode no longer matches.
    subprocess.run(
        [python, "-I", "-m", "compileall", "-q", build / APP / SITE / "sitecustomize.py"],
        check=True,
    )
    export = tmp_path / "export"
    export_stack(build, export)
    compiled = "__pycache__/__init__.cpython-312.pyc"
    assert os.stat(export / RUNTIME / "lib/python3.12/json" / compiled).st_ino == (
        os.stat(stdlib / "json" / compiled).st_ino
    )
    site_cache = "__pycache__/sitecustomize.cpython-312.pyc"
    assert (export / APP / SITE / site_cache).read_bytes() != (
        build / APP / SITE / site_cache
    ).read_bytes()
    fake = f"{SITE}/fwpkg/__pycache__/__init__.cpython-312.pyc"  # not valid bytecode
    assert (export / FRAMEWORK / fake).read_bytes() != (build / FRAMEWORK / fake).read_bytes()
    assert not (export / FRAMEWORK / SITE / "stray.pyc").exists()
    assert_runs_from(run_app(export / APP / "bin" / "python"), export)
