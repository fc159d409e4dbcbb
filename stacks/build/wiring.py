"""A new layer environment in a staging folder: wired to the layers below, its modules copied."""

from __future__ import annotations

import shutil
from pathlib import Path

from stacks.build.install import pylock_has_packages
from stacks.build.request import DYNLIB_DIR, BuildRequest


def wire_environment(request: BuildRequest, stage: Path) -> bool:
    """Wire a new environment in `stage` to the layers below; whether it has packages to install."""
    from stacks.deploy import postinstall

    (stage / request.site_dir).mkdir(parents=True)
    (stage / "bin").mkdir()
    runtime = request.lower[-1]
    # Wired like a deployed layer, but to the build folders' (unversioned) names; relative
    # throughout, so the build folder as a whole can be moved (and its staging folder beside
    # it sees the layers below as the final folder will). Always the launcher: the dynlib
    # folders are linked after the install.
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
    return pylock_has_packages(request.pylock)


def copy_modules(request: BuildRequest, stage: Path) -> None:
    """Copy the layer's launch and support modules into its site-packages."""
    for module in (request.layer.launch_module, *request.layer.support_modules):
        if module is not None:
            _copy_module(module, stage / request.site_dir)


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
