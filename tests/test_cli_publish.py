"""`stacks publish`, `export`, `local-export` and `deploy` end to end through the CLI.

Two copies of one project (different folders, separate caches, built one after the other)
publish in every archive format; their outputs must be byte-identical. The published
stack is then deployed (three ways) into folders with spaces and non-ASCII names, moved,
re-published after edits, and exported.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from projects import (
    EXCLUDE_NEWER,
    LOCKED_AT,
    PYTHON_310,
    SMALL_STACK,
    no_traceback,
    private_uv_cache,
    sha256_of,
    snapshot,
    write_project,
)
from stack_trees import second_path
from stackrun import REPO, stacks

from stacks import __version__ as stacks_version
from stacks.deploy.deploy import current_platform

pytestmark = pytest.mark.slow

SPEC = f"""
[tool.uv]
exclude-newer = "{EXCLUDE_NEWER}"

[tool.stacks]
runtime_source = "local"

[[runtimes]]
name = "cpython-3.12"
python_implementation = "cpython@3.12"
requirements = ["six"]
versioned = true

[[frameworks]]
name = "fw"
runtime = "cpython-3.12"
requirements = ["attrs"]
versioned = true

[[applications]]
name = "one"
launch_module = "one.py"
support_modules = ["helper.py"]
frameworks = ["fw"]
requirements = ["idna"]

[[applications]]
name = "two"
launch_module = "two"
runtime = "cpython-3.12"
requirements = []
"""
ONE = """
import json, sys
import attrs, helper, idna, six
modules = {m.__name__: m.__file__ for m in (attrs, helper, idna, six)}
print(json.dumps({"path": sys.path, "executable": sys.executable, "modules": modules}))
"""
TWO_MAIN = """
import json, sys
import six
from two import GREETING
modules = {"six": six.__file__}
print(json.dumps({"path": sys.path, "greeting": GREETING, "modules": modules}))
"""
MODULES = {
    "one.py": ONE,
    "helper.py": "VALUE = 'helper'\n",
    "two/__init__.py": "GREETING = 'hello'\n",
    "two/__main__.py": TWO_MAIN,
}
FORMATS = ("tar.xz", "tar.zst", "tar.gz", "zip")
RUNTIME, FRAMEWORK = "cpython-3.12@1", "framework-fw@1"
TARGETS = {
    "cpython-3.12": RUNTIME,
    "framework-fw": FRAMEWORK,
    "app-one": "app-one",
    "app-two": "app-two",
}
# The layer each import of each app must come from.
EXPECTED_HOMES = {
    "app-one": {
        "attrs": "framework-fw",
        "helper": "app-one",
        "idna": "app-one",
        "six": "cpython-3.12",
    },
    "app-two": {"six": "cpython-3.12"},
}
ODD = "dé ploy 🦎"


def publish_all(spec: Path, formats: tuple[str, ...], env: dict[str, str] | None = None) -> None:
    """Publish the project once per format, each into `<project>/out-<format>`."""
    for fmt in formats:
        out = stacks(
            "publish", spec, "--format", fmt, "--output-dir", spec.parent / f"out-{fmt}", env=env
        )
        no_traceback(out)


uv_cache = pytest.fixture(scope="module", autouse=True)(private_uv_cache)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two copies of the project, published in every format (B in the reverse order, own uv cache).

    Only `test_incremental_publish...` changes copy B (after the comparison test read it).
    """
    root = tmp_path_factory.mktemp("pair")
    a = write_project(root / "copy A", SPEC, MODULES)
    publish_all(a, FORMATS)
    b = write_project(root / f"còpy B {ODD}" / "nested", SPEC, MODULES)
    publish_all(b, tuple(reversed(FORMATS)), env={"UV_CACHE_DIR": str(root / "uv-cache-B")})
    return a, b


@pytest.fixture(scope="module")
def published(pair: tuple[Path, Path]) -> Path:
    """Copy A's default-format (tar.xz) output folder."""
    return pair[0].parent / "out-tar.xz"


def clean_env() -> dict[str, str]:
    """The environment without Python or virtualenv settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}


def run_app(root: Path, app: str) -> dict[str, Any]:
    """Run a deployed/exported app as documented (`<root>/<app>/bin/python -m <module>`), from `root`."""
    module = app.removeprefix("app-")
    done = subprocess.run(
        [str(root / app / "bin" / "python"), "-m", module],
        cwd=root,
        capture_output=True,
        text=True,
        env=clean_env(),
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return json.loads(done.stdout)


def assert_apps_run_from(root: Path, versions: dict[str, str] | None = None) -> None:
    """Every app runs, importing each module from the expected layer of `root`, and nothing else."""
    targets = {**TARGETS, **(versions or {})}
    for app, homes in EXPECTED_HOMES.items():
        report = run_app(root, app)
        assert report["path"][0] == str(root)  # `-m` puts the working folder first
        for entry in report["path"][1:]:
            assert os.path.normpath(entry).startswith(str(root) + os.sep), entry
        site_layers = [
            Path(entry).relative_to(root).parts[0]
            for entry in report["path"]
            if entry.endswith("site-packages")
        ]
        below = [targets["framework-fw"]] if app == "app-one" else []
        assert site_layers == [app, *below, targets["cpython-3.12"]]
        for module, home in homes.items():
            found = Path(report["modules"][module]).relative_to(root).parts[0]
            assert found == targets[home], module


# ---------------------------------------------------------------- reproducibility


@pytest.mark.parametrize("fmt", FORMATS)
def test_two_copies_publish_byte_identical_outputs(pair: tuple[Path, Path], fmt: str) -> None:
    a, b = pair
    first = snapshot(a.parent / f"out-{fmt}")
    second = snapshot(b.parent / f"out-{fmt}")
    archives = {f"{target}.{fmt}" for target in TARGETS.values()}
    assert archives <= set(first)
    assert "__stacks__/stack.json" in first
    assert {f"__stacks__/env_metadata/{env}.json" for env in TARGETS} <= set(first)
    assert sorted(first) == sorted(second)
    for name in first:
        assert first[name] == second[name], f"{fmt}: {name} differs between the copies"
    # The two copies locked independently into identical lock files too.
    assert snapshot(a.parent / "requirements") == snapshot(b.parent / "requirements")


# ---------------------------------------------------------------- metadata


COMMON_FIELDS = {
    "layer_name",
    "install_target",
    "requirements_hash",
    "lock_version",
    "locked_at",
    "runtime_layer",
    "python_implementation",
    "bound_to_implementation",
    "archive_build",
    "archive_name",
    "target_platform",
    "archive_size",
    "archive_hashes",
    "kind",
    "build_tools",  # a stacks addition
}


def lzma_version() -> str:
    """The version of the system's liblzma, asked directly."""
    library = ctypes.CDLL("liblzma.so.5")
    library.lzma_version_string.restype = ctypes.c_char_p
    return library.lzma_version_string().decode()


# What decides an archive's bytes, as this machine has it (tar.xz: liblzma, preset 6).
CURRENT_TOOLS = {
    "stacks": stacks_version,
    "uv": importlib.metadata.version("uv"),
    "python": platform.python_version(),
    "compression": {
        "format": "tar.xz",
        "library": "liblzma",
        "version": lzma_version(),
        "level": 6,
        "chunk_size": 4 << 20,
    },
}
FIELDS = {
    "cpython-3.12": COMMON_FIELDS | {"runtime_source"},
    "framework-fw": COMMON_FIELDS | {"required_layers"},
    "app-one": COMMON_FIELDS
    | {"required_layers", "app_launch_module", "app_launch_module_hash", "app_support_modules"},
    "app-two": COMMON_FIELDS | {"required_layers", "app_launch_module", "app_launch_module_hash"},
}


def test_bytecode_publish_is_byte_identical_across_builds_and_deploys_without_compiling(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = pair  # two projects in other folders, built separately
    outputs = []
    for spec in (a, b):
        out = spec.parent / "out-bytecode"
        no_traceback(
            stacks("publish", spec, "--format", "tar.zst", "--bytecode", "--output-dir", out)
        )
        outputs.append(snapshot(out))
    first, second = outputs
    assert first == second
    # venvstacks' `build --publish` takes the same format and bytecode options.
    via_build = b.parent / "out-build-publish"
    no_traceback(
        stacks(
            "build", b, "--publish", "--format", "tar.zst", "--bytecode", "--output-dir", via_build
        )
    )
    assert snapshot(via_build) == first
    framework = json.loads(first["__stacks__/env_metadata/framework-fw.json"])
    assert framework["bytecode"] == "unchecked-hash"
    plain = json.loads(
        snapshot(a.parent / "out-tar.zst")["__stacks__/env_metadata/framework-fw.json"]
    )
    assert "bytecode" not in plain
    again = stacks(
        "publish", a, "--format", "tar.zst", "--bytecode", "--output-dir", a.parent / "out-bytecode"
    )
    assert (
        " 0 ran" in f" {again.stdout}{again.stderr}"
    )  # recorded with its setting: nothing to redo
    target = tmp_path / "deployed"
    no_traceback(stacks("deploy", a.parent / "out-bytecode", "--target", target))
    assert_apps_run_from(target)
    six_pyc = next((target / RUNTIME).rglob("six.cpython-312.pyc"))
    assert six_pyc.read_bytes()[4:8] == b"\x01\0\0\0"  # shipped, kept: not compiled again
    assert stacks("verify", "--deployed", target).code == 0


def test_published_metadata_has_venvstacks_fields_and_values(
    pair: tuple[Path, Path], published: Path
) -> None:
    project = pair[0].parent
    path = published / "__stacks__" / "stack.json"
    text = path.read_text(encoding="utf-8")
    stack = json.loads(text)
    assert text == json.dumps(stack, indent=2, sort_keys=True) + "\n"
    groups = stack["layers"]
    assert sorted(groups) == ["applications", "frameworks", "runtimes"]
    entries = {e["layer_name"]: e for group in groups.values() for e in group}
    assert [e["layer_name"] for e in groups["runtimes"]] == ["cpython-3.12"]
    assert [e["layer_name"] for e in groups["frameworks"]] == ["framework-fw"]
    assert [e["layer_name"] for e in groups["applications"]] == ["app-one", "app-two"]
    runtime_version = entries["cpython-3.12"]["python_implementation"].removeprefix("cpython@")
    assert runtime_version.startswith("3.12.")
    for env, entry in entries.items():
        assert set(entry) == FIELDS[env], env
        own = published / "__stacks__" / "env_metadata" / f"{env}.json"
        assert json.loads(own.read_text(encoding="utf-8")) == entry
        lock_dir = project / "requirements" / env
        lock_name = env.replace(".", "_")
        lock = json.loads((lock_dir / f"pylock.{lock_name}.meta.json").read_text("utf-8"))
        archive = published / entry["archive_name"]
        assert entry["install_target"] == TARGETS[env]
        assert entry["archive_name"] == f"{TARGETS[env]}.tar.xz"
        assert entry["archive_size"] == archive.stat().st_size
        assert entry["archive_hashes"] == {"sha256": sha256_of(archive)}
        assert entry["requirements_hash"] == "sha256:" + sha256_of(
            lock_dir / f"pylock.{lock_name}.toml"
        )
        assert entry["requirements_hash"] == lock["requirements_hash"]
        assert entry["lock_version"] == lock["lock_version"] == 1
        assert entry["locked_at"] == LOCKED_AT
        assert entry["archive_build"] == 1
        assert entry["target_platform"] == current_platform()
        assert entry["runtime_layer"] == RUNTIME
        assert entry["python_implementation"] == f"cpython@{runtime_version}"
        assert entry["bound_to_implementation"] is (env == "cpython-3.12")
        assert entry["build_tools"] == CURRENT_TOOLS
    assert entries["cpython-3.12"]["kind"] == "runtime"
    assert entries["cpython-3.12"]["runtime_source"]["kind"] == "local"
    assert entries["framework-fw"]["required_layers"] == []
    assert entries["app-one"]["required_layers"] == [FRAMEWORK]
    assert entries["app-two"]["required_layers"] == []
    assert entries["app-one"]["app_launch_module"] == "one"
    assert entries["app-two"]["app_launch_module"] == "two"
    assert [m["name"] for m in entries["app-one"]["app_support_modules"]] == ["helper"]
    hashes = {entries[a]["app_launch_module_hash"] for a in ("app-one", "app-two")}
    assert len(hashes) == 2 and all(h.partition(":")[2] for h in hashes)


# ---------------------------------------------------------------- deploying


def visible(folder: Path) -> list[str]:
    """The folder's entries but hidden ones (the deployment record), sorted."""
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def test_stacks_deploy_into_an_odd_folder_then_move_it(published: Path, tmp_path: Path) -> None:
    target = tmp_path / f"{ODD} one"
    out = stacks("deploy", published, "--target", target)
    no_traceback(out)
    assert visible(target) == sorted(TARGETS.values())
    for app in ("app-one", "app-two"):
        module = app.removeprefix("app-")
        assert f"run {app}: " in out.stdout and f"-m {module}" in out.stdout
    assert_apps_run_from(target)
    again = stacks("deploy", published, "--target", target)
    assert again.stdout.count("unchanged") == 4

    moved = tmp_path / "elsewhere" / f"{ODD} moved"
    moved.parent.mkdir()
    shutil.move(str(target), moved)
    assert_apps_run_from(moved)  # as it is: nothing to re-run after a move
    copied = tmp_path / "copied"
    subprocess.run(["cp", "-a", str(moved), str(copied)], check=True)
    assert_apps_run_from(copied)
    assert stacks("verify", "--deployed", copied).code == 0
    with second_path(copied, tmp_path / "bind") as other:
        assert_apps_run_from(other)
    # postinstall.py stays in each layer for consumers without stacks; it changes nothing.
    python = moved / RUNTIME / "bin" / "python"
    for layer in (RUNTIME, FRAMEWORK, "app-one", "app-two"):  # lowest first
        done = subprocess.run(
            [str(python), str(moved / layer / "postinstall.py")],
            capture_output=True,
            text=True,
            env=clean_env(),
            check=False,
        )
        assert done.returncode == 0, done.stderr
    assert_apps_run_from(moved)


def test_deploy_named_layers_brings_what_they_need(pair: tuple[Path, Path], tmp_path: Path) -> None:
    published = pair[0].parent / "out-tar.gz"
    target = tmp_path / f"{ODD} two"
    out = stacks("deploy", published, "--target", target, "app-two")  # layers after --target
    assert visible(target) == ["app-two", RUNTIME]
    assert "run app-two: " in out.stdout and "app-one" not in out.stdout
    assert run_app(target, "app-two")["greeting"] == "hello"
    quiet = stacks("-q", "deploy", published, "--target", target, "app-two")
    assert (quiet.stdout, quiet.stderr) == ("", "")
    for args, message in (
        ((tmp_path / "nothing here", "--target", target), "here does not exist\n  hint: "),
        ((published, "--target", target, "app-three"), "no layer 'app-three'"),
        ((published, "--target", target / "app-two" / "postinstall.py"), "is not a folder"),
    ):
        bad = stacks("deploy", *args, check=False)
        assert bad.code == 2 and message in bad.stderr
        assert bad.stderr.startswith("error: ")
        no_traceback(bad)


def test_python_m_stacks_deploy(pair: tuple[Path, Path], tmp_path: Path) -> None:
    target = tmp_path / f"{ODD} module"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "stacks.deploy",
            str(pair[0].parent / "out-zip"),
            "--target",
            str(target),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**clean_env(), "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert_apps_run_from(target)


@pytest.mark.skipif(not PYTHON_310.exists(), reason="no Python 3.10 at the expected path")
@pytest.mark.parametrize("fmt", ["tar.gz", "tar.zst"])
def test_deploy_py_alone_with_python_310(pair: tuple[Path, Path], tmp_path: Path, fmt: str) -> None:
    if fmt == "tar.zst" and shutil.which("zstd") is None:
        pytest.skip("Python 3.10 needs the zstd command for .tar.zst")
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy2(REPO / "stacks" / "deploy" / "deploy.py", lone / "deploy.py")
    shutil.copy2(REPO / "stacks" / "deploy" / "postinstall.py", lone / "postinstall.py")
    target = tmp_path / f"{ODD} 3.10"
    done = subprocess.run(
        [
            str(PYTHON_310),
            "-I",
            str(lone / "deploy.py"),
            str(pair[0].parent / f"out-{fmt}"),
            "--target",
            str(target),
        ],
        cwd=lone,
        capture_output=True,
        text=True,
        env=clean_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert_apps_run_from(target)


# ---------------------------------------------------------------- exporting


def test_export_without_symlinks_runs_every_app(pair: tuple[Path, Path], tmp_path: Path) -> None:
    folder = tmp_path / f"{ODD} export"
    out = stacks("export", pair[0], "--no-symlinks", "--output-dir", folder)
    no_traceback(out)
    assert sorted(os.listdir(folder)) == sorted([*TARGETS.values(), "__stacks__"])
    links = [p for p in folder.rglob("*") if p.is_symlink()]
    assert links == []
    assert_apps_run_from(folder)
    stack = json.loads((folder / "__stacks__" / "stack.json").read_text(encoding="utf-8"))
    exported = {e["layer_name"]: e for group in stack["layers"].values() for e in group}
    assert {env: e["install_target"] for env, e in exported.items()} == TARGETS
    assert not any("archive_name" in e for e in exported.values())
    assert stacks("export", pair[0], "--no-symlinks", "--output-dir", folder, "--json").ran() == []
    # Relocatable too: the launcher brings pyvenv.cfg's home up to date where it now is.
    moved = tmp_path / "usb key" / "stack"
    moved.parent.mkdir()
    subprocess.run(["cp", "-a", str(folder), str(moved)], check=True)
    assert_apps_run_from(moved)
    shutil.move(str(moved), tmp_path / "moved")
    assert_apps_run_from(tmp_path / "moved")


def test_local_export_runs_every_app(pair: tuple[Path, Path], tmp_path: Path) -> None:
    out = stacks("local-export", pair[0])
    no_traceback(out)
    folder = pair[0].parent / "_export"
    assert (folder / "app-one" / "bin" / "python3").is_symlink()
    for app in ("app-one", "app-two"):
        # Quoted for a shell: the project folder has a space in its name.
        python = shlex.quote(str(folder / app / "bin" / "python"))
        assert f"run {app}: {python} -m {app.removeprefix('app-')}\n" in out.stderr
    assert_apps_run_from(folder)
    # An export runs as it is after cp -a, mv and through a second path (bind mount).
    copied = tmp_path / "copied export"
    subprocess.run(["cp", "-a", str(folder), str(copied)], check=True)
    shutil.move(str(copied), tmp_path / "moved export")
    assert_apps_run_from(tmp_path / "moved export")
    with second_path(tmp_path / "moved export", tmp_path / "bind") as other:
        assert_apps_run_from(other)
    # Layer folders get the modes of a plain mkdir (never mkdtemp's 0o700): others can run them.
    umask = os.umask(0o022)
    os.umask(umask)
    builds = [p for p in (pair[0].parent / "cache" / "build").iterdir() if p.is_dir()]
    layers = [p for p in folder.iterdir() if p.is_dir()] + builds
    assert len(layers) == 2 * len(TARGETS) + 1  # + __stacks__
    for layer in layers:
        assert stat.S_IMODE(layer.stat().st_mode) == 0o777 & ~umask, layer


def test_include_publishes_and_exports_only_the_selected_layers(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    """--include: the matching layers and those they need; the manifest lists what is there."""
    exported, published = tmp_path / "export", tmp_path / "publish"
    out = stacks("export", pair[0], "--include", "app-two", "--output-dir", exported, "--json")
    assert sorted(t for t in out.ran() if t.startswith("export:")) == [
        "export:__stack__",
        "export:app-two",
        "export:cpython-3.12",
    ]
    assert sorted(os.listdir(exported)) == ["__stacks__", "app-two", RUNTIME]
    assert sorted(stack_entries(exported)) == ["app-two", "cpython-3.12"]
    six = Path(run_app(exported, "app-two")["modules"]["six"])
    assert six.is_relative_to(exported / RUNTIME)
    # A second selection adds its layers; the manifest now lists all four.
    stacks("export", pair[0], "--include", "app-one", "--output-dir", exported)
    assert sorted(stack_entries(exported)) == sorted(TARGETS)

    args = ("--format", "tar.gz", "--output-dir", published)
    out = stacks("publish", pair[0], "--include", "app-two", *args, "--json")
    assert sorted(t for t in out.ran() if t.startswith("archive:")) == [
        "archive:__stack__",
        "archive:app-two",
        "archive:cpython-3.12",
    ]
    assert sorted(p.name for p in published.glob("*.tar.gz")) == [
        "app-two.tar.gz",
        f"{RUNTIME}.tar.gz",
    ]
    assert sorted(stack_entries(published)) == ["app-two", "cpython-3.12"]


# ---------------------------------------------------------------- incremental publishing


def statuses_ran(spec: Path, *args: str | Path) -> list[str]:
    """Publish (tar.gz into out-tar.gz) and return the tasks that ran."""
    out = stacks(
        "publish",
        spec,
        "--format",
        "tar.gz",
        "--output-dir",
        spec.parent / "out-tar.gz",
        *args,
        "--json",
    )
    return out.ran()


def stack_entries(folder: Path, name: str = "stack.json") -> dict[str, dict[str, Any]]:
    """layer_name -> metadata entry of a publish or export folder's stack manifest."""
    stack = json.loads((folder / "__stacks__" / name).read_text(encoding="utf-8"))
    return {e["layer_name"]: e for group in stack["layers"].values() for e in group}


def test_incremental_publish_versioned_layers_and_tagged_outputs(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    spec = pair[1]  # copy B: changed from here on
    out = spec.parent / "out-tar.gz"
    # 1. Copy B published tar.xz last: going back to tar.gz redoes nothing (a stamp per
    # destination), and archive_build stays 1.
    assert statuses_ran(spec) == []
    assert {e["archive_build"] for e in stack_entries(out).values()} == {1}

    # 2. One app changes: only that app is rebuilt and re-archived.
    before = {p.name: sha256_of(p) for p in out.glob("*.tar.gz")}
    main = spec.parent / "two" / "__main__.py"
    main.write_text(main.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    assert statuses_ran(spec) == ["archive:__stack__", "archive:app-two", "build:app-two"]
    after = {p.name: sha256_of(p) for p in out.glob("*.tar.gz")}
    assert {n for n in after if after[n] != before.get(n)} == {"app-two.tar.gz"}
    entries = stack_entries(out)
    assert entries["app-two"]["archive_build"] == 2  # same lock, new bytes
    assert entries["app-one"]["archive_build"] == 1

    # An unversioned app's lock changes: its lock version goes up, but it publishes
    # lock_version 1 (as venvstacks) and the next archive_build.
    text = spec.read_text(encoding="utf-8")
    two = 'launch_module = "two"\nruntime = "cpython-3.12"\nrequirements = []'
    assert two in text
    spec.write_text(text.replace(two, two.replace("[]", '["iniconfig"]')), encoding="utf-8")
    assert statuses_ran(spec) == [
        "archive:__stack__",
        "archive:app-two",
        "build:app-two",
        "lock:app-two",
    ]
    lock_meta = spec.parent / "requirements" / "app-two" / "pylock.app-two.meta.json"
    assert json.loads(lock_meta.read_text(encoding="utf-8"))["lock_version"] == 2
    entries = stack_entries(out)
    assert entries["app-two"]["lock_version"] == 1
    assert entries["app-two"]["archive_build"] == 3
    assert entries["app-two"]["install_target"] == "app-two"

    # 3. A versioned framework's lock changes: it deploys as framework-fw@2, and the app above follows.
    text = spec.read_text(encoding="utf-8")
    spec.write_text(text.replace('["attrs"]', '["attrs", "iniconfig"]'), encoding="utf-8")
    ran = statuses_ran(spec)
    assert "archive:framework-fw" in ran and "build:app-one" in ran
    assert not [t for t in ran if t.endswith(("app-two", "cpython-3.12"))]
    entries = stack_entries(out)
    assert entries["framework-fw"]["install_target"] == "framework-fw@2"
    assert entries["framework-fw"]["lock_version"] == 2
    assert entries["framework-fw"]["archive_name"] == "framework-fw@2.tar.gz"
    assert entries["framework-fw"]["archive_build"] == 1
    assert entries["app-one"]["required_layers"] == ["framework-fw@2"]
    assert (out / "framework-fw@2.tar.gz").is_file()
    first = tmp_path / f"{ODD} v2"
    stacks("deploy", out, "--target", first)
    assert_apps_run_from(first, {"framework-fw": "framework-fw@2"})

    # 4. The versioned runtime's lock changes: cpython-3.12@2, and every layer above uses it.
    # The versioned framework on it gets a new version too (framework-fw@2 keeps meaning the
    # one on cpython-3.12@1), though its own lock content is the same.
    text = spec.read_text(encoding="utf-8")
    spec.write_text(text.replace('["six"]', '["six", "packaging"]'), encoding="utf-8")
    ran = statuses_ran(spec)
    assert {f"build:{env}" for env in TARGETS} <= set(ran)
    entries = stack_entries(out)
    assert entries["cpython-3.12"]["install_target"] == "cpython-3.12@2"
    assert {e["runtime_layer"] for e in entries.values()} == {"cpython-3.12@2"}
    assert entries["framework-fw"]["install_target"] == "framework-fw@3"
    assert entries["app-one"]["required_layers"] == ["framework-fw@3"]
    second = tmp_path / f"{ODD} v3"
    stacks("deploy", out, "--target", second)
    assert visible(second) == ["app-one", "app-two", "cpython-3.12@2", "framework-fw@3"]
    versions = {"cpython-3.12": "cpython-3.12@2", "framework-fw": "framework-fw@3"}
    assert_apps_run_from(second, versions)
    assert statuses_ran(spec) == []

    # 5. --tag-outputs: the platform in archive and metadata names; deploy finds them.
    tagged = tmp_path / "tagged"
    stacks("publish", spec, "--format", "tar.gz", "--tag-outputs", "--output-dir", tagged)
    platform = current_platform()
    names = sorted(p.name for p in tagged.glob("*.tar.gz"))
    assert names == sorted(
        f"{t}-{platform}.tar.gz" for t in ("app-one", "app-two", "cpython-3.12@2", "framework-fw@3")
    )
    assert sorted(os.listdir(tagged / "__stacks__")) == ["env_metadata", f"stack-{platform}.json"]
    metadata = sorted(os.listdir(tagged / "__stacks__" / "env_metadata"))
    assert metadata == sorted(f"{env}-{platform}.json" for env in TARGETS)
    tagged_entries = stack_entries(tagged, f"stack-{platform}.json")
    assert tagged_entries["app-one"]["archive_name"] == f"app-one-{platform}.tar.gz"
    third = tmp_path / f"{ODD} tagged"
    stacks("deploy", tagged, "--target", third)
    assert_apps_run_from(third, versions)


# ---------------------------------------------------------------- destinations


def test_going_back_to_an_earlier_folder_or_format_redoes_nothing(tmp_path: Path) -> None:
    """A stamp per destination: A (tar.gz), B (zip), A again runs nothing; clean empties both."""
    spec = write_project(tmp_path / "project", SMALL_STACK, {"app.py": "print('app')\n"})
    a, b = tmp_path / "publish A", tmp_path / "publish B"
    ran = stacks("publish", spec, "--format", "tar.gz", "--output-dir", a, "--json").ran("archive")
    assert "archive:app-app" in ran
    assert stacks("publish", spec, "--format", "zip", "--output-dir", b, "--json").ran("archive")
    again = stacks("publish", spec, "--format", "tar.gz", "--output-dir", a, "--json")
    assert again.ran() == []
    dry = stacks("publish", spec, "--format", "tar.gz", "--output-dir", a, "--dry-run")
    assert "archive changed" not in dry.stdout + dry.stderr
    # `stacks info` looks at the default folder, never published to.
    info = stacks("info", spec, "archive:app-app", "--json").data
    assert info["status"] == "run"
    assert any("never published to this folder" in r for r in info["reasons"])

    e1, e2 = tmp_path / "export 1", tmp_path / "export 2"
    assert stacks("export", spec, "--output-dir", e1, "--json").ran("export")
    assert stacks("export", spec, "--output-dir", e2, "--json").ran("export")
    assert stacks("export", spec, "--output-dir", e1, "--json").ran() == []

    # verify checks every recorded destination, or the one named.
    findings = stacks("verify", spec, "--json").data["findings"]
    paths = {f["path"] for f in findings if f["layer"] == "app-app" and f["status"] == "ok"}
    assert {str(a / "app-app.tar.gz"), str(b / "app-app.zip")} <= paths
    assert {str(e1 / "app-app"), str(e2 / "app-app")} <= paths
    (b / "app-app.zip").write_bytes(b"damaged")
    assert stacks("verify", spec, "--output-dir", a).code == 0
    damaged = stacks("verify", spec, check=False)
    assert (
        damaged.code == 1 and f"--output-dir {shlex.quote(str(b))} --format zip" in damaged.stdout
    )

    stacks("clean", spec)
    for folder in (a, b):
        assert not [p for p in folder.iterdir() if p.is_file()], folder
        assert not list((folder / "__stacks__").rglob("*.json")), folder
    for folder in (e1, e2):
        assert sorted(os.listdir(folder)) in ([], ["__stacks__"]), folder
    assert not list((spec.parent / "cache" / "stamps").rglob("*.json"))
