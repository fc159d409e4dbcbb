"""Build layer environments: runtime copy or chained venv, install from the lock, link, check."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stacks import atomic
from stacks.build.dynlibs import link_dynlibs
from stacks.build.install import pylock_has_packages, remove_scripts, uv_install
from stacks.build.request import DYNLIB_DIR, METADATA_FILE, BuildRequest
from stacks.build.smoke import smoke_check
from stacks.errors import BuildError
from stacks.hashing import KnownDigests, TreeManifest, scan_tree, skip_bytecode
from stacks.spec import LayerKind


def build_layer(request: BuildRequest, *, warnings: list[str] | None = None) -> TreeManifest:
    """Build a layer into `request.target` atomically and return the manifest of what was built.

    Warnings (a launch module import nothing in the stack provides) are added to `warnings`.
    """
    target = request.target
    known = KnownDigests.load(request.known_digests)
    check = True
    stats: dict[str, os.stat_result] = {}  # the RECORD check's, for the manifest's scan
    with atomic.new_directory(target) as stage:
        if request.layer.kind is LayerKind.RUNTIME:
            # A runtime layer with nothing installed is its provided runtime, linked: that
            # interpreter already ran when it was provided (precompiling its stdlib), and
            # the layers above start it again in their own checks.
            check = _build_runtime(request, stage, known, stats)
        else:
            _build_layered(request, stage, known, stats)
        prefix = os.path.join(os.fspath(stage), "")
        remove_scripts(stage, request)
        if request.layer.kind is not LayerKind.RUNTIME:
            _write_entry_points(request, stage)
        link_dynlibs(request, stage)
        _write_layer_metadata(request, stage)
    # The smoke check runs on the final folder: the venv's paths must be the real ones. Its
    # interpreter (which writes nothing: -B) runs while this process hashes the tree.
    from concurrent.futures import ThreadPoolExecutor

    by_relpath = {
        path[len(prefix) :]: info for path, info in stats.items() if path.startswith(prefix)
    }
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="stacks-scan") as pool:
        scanning = pool.submit(scan_tree, target, skip=skip_bytecode, known=known, stats=by_relpath)
        try:
            found = smoke_check(request) if check else []
        except BuildError:
            scanning.exception()  # wait for the scan before removing what it reads
            atomic.remove_tree(target)
            raise
        if warnings is not None:
            warnings.extend(found)
        manifest = scanning.result()
    known.save()
    return manifest


def _build_runtime(
    request: BuildRequest, stage: Path, known: KnownDigests, stats: dict[str, os.stat_result]
) -> bool:
    """Link the provided runtime into `stage`, install its packages; whether it installed any."""
    source = request.runtime_source
    if source is None or not (source / "bin").is_dir():
        raise BuildError(
            f"layer '{request.layer.env_name}': the runtime has not been provided",
            hint="run `stacks build SPEC` (it provides runtimes first)",
        )
    # The interpreter is copied, not linked: a new link changes the inode's ctime, which uv
    # takes for a changed interpreter, so the next install would query it again (~50 ms).
    link_tree(source, stage, copy=_is_interpreter)
    if not pylock_has_packages(request.pylock):
        return False
    uv_install(request, stage, stage / "bin" / "python3", known, stats)
    return True


def _is_interpreter(relpath: str) -> bool:
    """The runtime's executables (copied: small, and see `_build_runtime`)."""
    return relpath.startswith("bin/python")


def link_tree(source: Path, target: Path, *, copy: Callable[[str], bool] | None = None) -> None:
    """Recreate `source` under `target` with hard links (copies across filesystems, and of the
    files `copy(relpath)` names), keeping symlinks."""
    same_device = os.stat(source).st_dev == os.stat(target).st_dev
    # os.scandir: links and folders are told apart by the entry's type, without an lstat each.
    pending = [(os.fspath(source), os.fspath(target), "")]
    while pending:
        folder, out_dir, prefix = pending.pop()
        with os.scandir(folder) as listing:
            for entry in listing:
                out = os.path.join(out_dir, entry.name)
                if entry.is_symlink():
                    os.symlink(os.readlink(entry.path), out)
                elif entry.is_dir(follow_symlinks=False):
                    os.mkdir(out)
                    pending.append((entry.path, out, prefix + entry.name + "/"))
                elif same_device and not (copy is not None and copy(prefix + entry.name)):
                    os.link(entry.path, out)
                else:
                    shutil.copy2(entry.path, out)


def _build_layered(
    request: BuildRequest, stage: Path, known: KnownDigests, stats: dict[str, os.stat_result]
) -> None:
    from stacks.deploy import postinstall

    site = stage / request.site_dir
    site.mkdir(parents=True)
    (stage / "bin").mkdir()
    runtime = request.lower[-1]
    # Wired like a deployed layer, but to the build folders' (unversioned) names; relative
    # throughout, so the build folder as a whole can be moved. Always the launcher: the
    # dynlib folders are linked after the install.
    build_config = {
        "python": "bin/python",
        "py_version": request.python_version,
        "base_python": f"../{runtime.build_dir.name}/bin/python",
        "site_dir": str(request.site_dir),
        "pylib_dirs": [f"../{lower.build_dir.name}/{request.site_dir}" for lower in request.lower],
        "dynlib_dirs": [str(DYNLIB_DIR)]
        + [f"../{lower.build_dir.name}/{DYNLIB_DIR}" for lower in request.lower],
    }
    postinstall.write_layer_files(
        str(stage), postinstall.layer_files(build_config, symlinks=True, dynlibs=True)
    )
    if pylock_has_packages(request.pylock):
        uv_install(request, stage, stage / "bin" / "python", known, stats)
    for module in (request.layer.launch_module, *request.layer.support_modules):
        if module is not None:
            _copy_module(module, site)


def _write_entry_points(request: BuildRequest, stage: Path) -> None:
    """Relocatable launchers for the console scripts of the layer's packages (uv's are gone)."""
    from stacks.deploy import postinstall

    found = postinstall.find_entry_points(str(stage / request.site_dir))
    postinstall.write_layer_files(
        str(stage), postinstall.entry_point_files({"python": "bin/python"}, found)
    )


def _copy_module(source: Path, site: Path) -> None:
    """Copy a launch or support module (file or package) into site-packages, without metadata."""
    if source.is_dir():
        shutil.copytree(
            source,
            site / source.name,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".git*"),
            copy_function=shutil.copyfile,
        )
    else:
        shutil.copyfile(source, site / source.name)


def layer_config(request: BuildRequest) -> dict[str, Any]:
    """The deployed configuration of a layer (docs/internals.md: venvstacks_layer.json)."""
    layer = request.layer
    if layer.kind is LayerKind.RUNTIME:
        return {
            "layer_name": layer.env_name,
            "install_target": request.deployed_name,
            "kind": layer.kind.value,
            "python": "bin/python",
            "py_version": request.python_version,
            "base_python": "bin/python",
            "site_dir": request.site_dir,
            "pylib_dirs": [],
            "dynlib_dirs": [],
            "runtime_layer": request.deployed_name,
            "required_layers": [],
        }
    runtime = request.lower[-1]
    config = {
        "layer_name": layer.env_name,
        "install_target": request.deployed_name,
        "kind": layer.kind.value,
        "python": "bin/python",
        "py_version": request.python_version,
        "base_python": f"../{runtime.deployed_name}/bin/python",
        "site_dir": request.site_dir,
        "pylib_dirs": [f"../{lower.deployed_name}/{request.site_dir}" for lower in request.lower],
        "dynlib_dirs": [f"../{lower.deployed_name}/{DYNLIB_DIR}" for lower in request.lower],
        "runtime_layer": runtime.deployed_name,
        "required_layers": [lower.deployed_name for lower in request.lower[:-1]],
    }
    if layer.launch_module_name:
        config["launch_module"] = layer.launch_module_name
    return config


def _write_layer_metadata(request: BuildRequest, stage: Path) -> None:
    atomic.write_json(stage / METADATA_FILE, layer_config(request), durable=False)
