"""Assemble a small, real, working 3-layer stack by hand, in the docs/internals.md layout.

runtime `cpython-3.12` (a trimmed copy of a local CPython 3.12), framework `framework-x@2`
(a versioned framework venv with a pure package and a dynlib link) and application
`app-demo` (a venv whose launch module imports from both lower layers and prints what it
sees as JSON). `build_stack` runs `configure_layer` so the tree works like a build tree.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from stacks.deploy.postinstall import METADATA_PATH, configure_layer

RUNTIME = "cpython-3.12"
FRAMEWORK = "framework-x@2"
APP = "app-demo"
LAUNCH_MODULE = "demo_app"
PY_VERSION = "3.12.1"
SITE = "lib/python3.12/site-packages"
LOCKED_AT = 1_756_252_800  # 2025-08-27T00:00:00Z

# Big parts of the stdlib the tests never use; skipping them keeps the runtime ~15 MB.
_STDLIB_SKIP = {
    "__pycache__",
    "test",
    "tests",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "site-packages",
    "unittest",
}

_APP_MODULE = """\
import json
import os
import sys

import fwpkg
import rtpkg

print(json.dumps({
    "sys_path": sys.path,
    "executable": sys.executable,
    "prefix": sys.prefix,
    "base_prefix": sys.base_prefix,
    "framework": fwpkg.WHERE,
    "framework_value": fwpkg.VALUE,
    "runtime": rtpkg.WHERE,
    "ld_library_path": os.environ.get("LD_LIBRARY_PATH", ""),
}))
"""


# The framework's console script `fw-report` (an entry point in fwpkg's dist-info).
_FRAMEWORK_CLI = """\
import json
import sys

import rtpkg


def main():
    print(json.dumps({"argv": sys.argv, "prefix": sys.prefix, "sys_path": sys.path,
                      "runtime": rtpkg.WHERE}))
    return 3
"""


def source_python() -> Path:
    """The local CPython 3.12 installation the runtime layer is copied from (skip if none)."""
    candidates = [os.environ.get("STACKS_TEST_PYTHON312", ""), "/root/.pyenv/versions/3.12.1"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "bin" / "python3.12").is_file():
            return Path(candidate)
    pytest.skip("needs a local CPython 3.12 install (set STACKS_TEST_PYTHON312)")


def layer_metadata(kind: str, install_target: str, **extra: Any) -> dict[str, Any]:
    """A `venvstacks_layer.json` dict for one layer of the test stack."""
    runtime_rel = f"../{RUNTIME}"
    base = {
        "layer_name": install_target.split("@")[0],
        "install_target": install_target,
        "kind": kind,
        "py_version": PY_VERSION,
        "site_dir": SITE,
        "runtime_layer": RUNTIME,
    }
    if kind == "runtime":
        base.update(
            python="bin/python",
            base_python="bin/python",
            pylib_dirs=[],
            dynlib_dirs=[],
            required_layers=[],
        )
    else:
        frameworks = list(extra.pop("required_layers", []))
        base.update(
            python="bin/python",
            base_python=f"{runtime_rel}/bin/python",
            pylib_dirs=[f"../{f}/{SITE}" for f in frameworks] + [f"{runtime_rel}/{SITE}"],
            dynlib_dirs=[f"../{f}/share/venv/dynlib" for f in frameworks]
            + [f"{runtime_rel}/share/venv/dynlib"],
            required_layers=frameworks,
        )
    base.update(extra)
    return base


def write_metadata(layer: Path, metadata: Mapping[str, Any]) -> None:
    """Write the layer's metadata file."""
    path = layer / METADATA_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def make_runtime(layer: Path) -> None:
    """A runtime layer: a trimmed copy of the local CPython 3.12, plus a package `rtpkg`."""
    source = source_python()
    (layer / "bin").mkdir(parents=True)
    shutil.copy2(source / "bin" / "python3.12", layer / "bin" / "python3.12")
    os.symlink("python3.12", layer / "bin" / "python3")
    os.symlink("python3.12", layer / "bin" / "python")

    def ignore(_folder: str, names: list[str]) -> list[str]:
        return [
            n
            for n in names
            if n in _STDLIB_SKIP
            or n.startswith(("_test", "xxlimited", "config-3"))
            or n.endswith(".pyc")
        ]

    stdlib = layer / "lib" / "python3.12"
    shutil.copytree(source / "lib" / "python3.12", stdlib, ignore=ignore, symlinks=True)
    strip = shutil.which("strip")
    if strip:
        modules = sorted((stdlib / "lib-dynload").glob("*.so"))
        subprocess.run([strip, "--strip-unneeded", *map(str, modules)], check=True)
    package = layer / SITE / "rtpkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("WHERE = __file__\n", encoding="utf-8")
    write_metadata(layer, layer_metadata("runtime", RUNTIME))


def make_framework(layer: Path) -> None:
    """A framework venv with a pure package `fwpkg` and a dynlib link to its fake library."""
    package = layer / SITE / "fwpkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "import rtpkg\n\nWHERE = __file__\nVALUE = 'framework ' + type(rtpkg).__name__\n",
        encoding="utf-8",
    )
    (package / "cli.py").write_text(_FRAMEWORK_CLI, encoding="utf-8")
    dist_info = layer / SITE / "fw_report-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "entry_points.txt").write_text(
        "[console_scripts]\nfw-report = fwpkg.cli:main\nbad/name = fwpkg.cli:main\n"
        "fw-bad = fwpkg.cli:main; rm -rf\n",
        encoding="utf-8",
    )
    (package / "libfake.so.1").write_bytes(b"not really a shared library\n")
    dynlib = layer / "share" / "venv" / "dynlib"
    dynlib.mkdir(parents=True)
    os.symlink(f"../../../{SITE}/fwpkg/libfake.so.1", dynlib / "libfake.so.1")
    write_metadata(layer, layer_metadata("framework", FRAMEWORK))


def make_app(layer: Path) -> None:
    """An application venv whose launch module reports sys.path and its imports."""
    site = layer / SITE
    site.mkdir(parents=True)
    (site / f"{LAUNCH_MODULE}.py").write_text(_APP_MODULE, encoding="utf-8")
    write_metadata(
        layer,
        layer_metadata(
            "application", APP, required_layers=[FRAMEWORK], launch_module=LAUNCH_MODULE
        ),
    )


def build_stack(root: Path) -> dict[str, Path]:
    """Create the three layers side by side in `root`, configured to work there."""
    layers = {RUNTIME: root / RUNTIME, FRAMEWORK: root / FRAMEWORK, APP: root / APP}
    make_runtime(layers[RUNTIME])
    make_framework(layers[FRAMEWORK])
    make_app(layers[APP])
    for name in (FRAMEWORK, APP):
        configure_layer(layers[name])
    # Things a real build tree has that must never be published.
    (layers[APP] / ".build-stamp").write_text("x\n", encoding="utf-8")
    pycache = layers[FRAMEWORK] / SITE / "fwpkg" / "__pycache__"
    pycache.mkdir()
    (pycache / "__init__.cpython-312.pyc").write_bytes(b"\x00fake pyc")
    (layers[FRAMEWORK] / SITE / "stray.pyc").write_bytes(b"\x00fake pyc")
    return layers


def copy_stack(source: Path, dest: Path) -> dict[str, Path]:
    """Copy a stack folder (links kept) and reconfigure its layered envs for the new place."""
    shutil.copytree(source, dest, symlinks=True)
    for name in (FRAMEWORK, APP):
        configure_layer(dest / name)
    return {name: dest / name for name in (RUNTIME, FRAMEWORK, APP)}


def clean_env() -> dict[str, str]:
    """The environment for running layer interpreters: no leaks from the test runner."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PYTHON") and k not in ("VIRTUAL_ENV", "LD_LIBRARY_PATH")
    }
    env["PYTHONSAFEPATH"] = "1"  # no cwd in sys.path, so it holds only the layers
    return env


def run_app(python: Path, module: str = LAUNCH_MODULE) -> dict[str, Any]:
    """Run `python -m module` and return the JSON it prints."""
    done = subprocess.run(
        [str(python), "-m", module],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd="/",
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return json.loads(done.stdout)


@contextlib.contextmanager
def second_path(folder: Path, where: Path) -> Iterator[Path]:
    """`folder` reached through another path: a bind mount at `where`, else a symlink there."""
    where.mkdir()
    mounted = (
        subprocess.run(["mount", "--bind", str(folder), str(where)], capture_output=True).returncode
        == 0
    )
    if not mounted:
        where.rmdir()
        where.symlink_to(folder, target_is_directory=True)
    try:
        yield where
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(where)], check=False)
            where.rmdir()
        else:
            where.unlink()


def is_mount(path: Path) -> bool:
    """Whether `path` is a mount point (a bind mount, which os.path.ismount cannot tell)."""
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        points = {line.split()[1].replace("\\040", " ") for line in mounts if line.strip()}
    return os.path.abspath(path) in points


def assert_runs_from(report: dict[str, Any], root: Path) -> None:
    """Check an app report: sys.path holds exactly the three layers under `root`, in order."""
    root_text = os.path.abspath(root)
    assert report["sys_path"], report
    for entry in report["sys_path"]:
        assert entry.startswith(root_text + os.sep), (entry, root_text)
    app_site = os.path.join(root_text, APP, SITE)
    fw_site = os.path.join(root_text, FRAMEWORK, SITE)
    rt_site = os.path.join(root_text, RUNTIME, SITE)
    positions = [report["sys_path"].index(p) for p in (app_site, fw_site, rt_site)]
    assert positions == sorted(positions), report["sys_path"]
    assert report["executable"] == os.path.join(root_text, APP, "bin", "python")
    assert report["prefix"] == os.path.join(root_text, APP)
    assert report["base_prefix"] == os.path.join(root_text, RUNTIME)
    assert report["framework"].startswith(fw_site + os.sep)
    assert report["runtime"].startswith(rt_site + os.sep)
    assert os.path.join(root_text, APP, "bin", "../../", FRAMEWORK, "share/venv/dynlib") in (
        report["ld_library_path"].split(":")
    )
