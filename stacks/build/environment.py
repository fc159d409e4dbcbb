"""Build layer environments: runtime copy or chained venv, install from the lock, link, check."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stacks import atomic
from stacks.build import early_installs
from stacks.build.dynlibs import link_dynlibs
from stacks.build.install import pylock_has_packages, remove_scripts, uv_install
from stacks.build.records import VerifiedFiles
from stacks.build.request import DYNLIB_DIR, METADATA_FILE, BuildRequest
from stacks.build.smoke import smoke_check
from stacks.build.survey import TreeSurvey, check_tree, walk_tree
from stacks.build.wiring import copy_modules, wire_environment
from stacks.children import interrupts_deferred
from stacks.errors import BuildError
from stacks.hashing import KnownDigests
from stacks.spec import LayerKind


def build_layer(
    request: BuildRequest,
    *,
    warnings: list[str] | None = None,
    early: early_installs.EarlyInstall | None = None,
) -> TreeSurvey:
    """Build a layer into `request.target` atomically; what was built, with its manifest.

    Every installed file is checked against its wheel's RECORD hash. uv hard-links files
    from its cache, so a file found damaged (edited in place through some build or export
    folder) is damaged in the cache too: those packages are cleaned from uv's cache and the
    layer is built once more, from fresh downloads. A forced rebuild
    (`request.recheck_installed`) reads every file instead of trusting the records.
    Warnings (a launch module import nothing in the stack provides) are added to `warnings`.
    `early` is an install of this request's packages started before (`early_installs.take`),
    whose staging folder the build takes over.
    """
    known = KnownDigests.load(request.known_digests)
    verified = VerifiedFiles.load(request.verified_files, trust=not request.recheck_installed)
    survey = _build_once(request, known, verified, warnings, early)
    if survey.damaged:
        from stacks.build.install import forget_damaged_packages

        forget_damaged_packages(request, sorted(survey.damaged))
        survey = _build_once(request, known, verified, warnings, None)
        if survey.damaged:
            verified.save()
            details = "; ".join(
                f"{dist}: {', '.join(files[:3])}" for dist, files in sorted(survey.damaged.items())
            )
            raise BuildError(
                f"layer '{request.layer.env_name}': installed files do not match their wheels "
                f"even after a fresh install: {details}",
                hint="run `uv cache clean` and build again",
            )
    verified.save()
    known.save()
    return survey


class _Damaged(Exception):
    """Raised inside the staging folder's block (which removes it): the survey found damage."""

    def __init__(self, survey: TreeSurvey) -> None:
        super().__init__("damaged installed files")
        self.survey = survey


def _build_once(
    request: BuildRequest,
    known: KnownDigests,
    verified: VerifiedFiles,
    warnings: list[str] | None,
    early: early_installs.EarlyInstall | None,
) -> TreeSurvey:
    """Build the layer into its target (taking over `early`'s staging folder, if given) and
    survey it; a survey that found damage leaves no target."""
    from concurrent.futures import ThreadPoolExecutor

    try:
        staging = early.stage if early is not None else None
        with atomic.new_directory(request.target, staging=staging) as stage:
            if early is not None:
                installed = _finish_early_install(request, early)
            elif request.layer.kind is LayerKind.RUNTIME:
                installed = _build_runtime(request, stage)
            else:
                installed = _build_layered(request, stage)
            early_installs.this_install_done()  # uv may now install the next layer
            # The smoke check's interpreter runs in the staging folder (wired with relative
            # paths, so it sees what the final folder will) while this process finishes the
            # tree, checks the installed files against their RECORDs and writes the manifest.
            # A runtime layer with nothing installed is its provided runtime, linked: that
            # interpreter already ran when it was provided (precompiling its stdlib).
            check = installed or request.layer.kind is not LayerKind.RUNTIME
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="stacks-smoke") as pool:
                with interrupts_deferred():  # not inside the pool's Thread.start()
                    checking = pool.submit(smoke_check, request, stage) if check else None
                try:
                    survey = _finish_and_survey(request, stage, installed, known, verified)
                finally:
                    if checking is not None:
                        checking.exception()  # the check's child ends before its folder can go
                # A damaged file can be why the check failed: then the caller installs again.
                if survey.damaged:
                    raise _Damaged(survey)
                problems = checking.result() if checking is not None else []
    except _Damaged as damage:
        return damage.survey
    if warnings is not None:
        warnings.extend(problems)
    return survey


def _finish_early_install(request: BuildRequest, early: early_installs.EarlyInstall) -> bool:
    """Wait for the install started early into the staging folder; whether it installed any."""
    from stacks.build.install import check_uv_install

    result = early.wait()
    if result is not None:
        check_uv_install(request, result)
    copy_modules(request, early.stage)
    return result is not None


def _finish_and_survey(
    request: BuildRequest,
    stage: Path,
    installed: bool,
    known: KnownDigests,
    verified: VerifiedFiles,
) -> TreeSurvey:
    """Drop machine-specific files, add launchers and the layer's metadata, walk the tree,
    link shared libraries (found by the walk), then check it: RECORD hashes and manifest."""
    remove_scripts(stage, request)
    if request.layer.kind is not LayerKind.RUNTIME:
        _write_entry_points(request, stage)
    _write_layer_metadata(request, stage)
    walked = walk_tree(stage)
    for made in link_dynlibs(request, stage, walked.files_below(str(request.site_dir))):
        walked.add(made)
    site_dir = str(request.site_dir) if installed else None
    return check_tree(walked, site_dir=site_dir, verified=verified, known=known).serialise()


def _build_runtime(request: BuildRequest, stage: Path) -> bool:
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
    uv_install(request, stage, stage / "bin" / "python3")
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


def _build_layered(request: BuildRequest, stage: Path) -> bool:
    """Make the layer's environment in `stage` and install its packages; whether it installed any."""
    installed = wire_environment(request, stage)
    if installed:
        uv_install(request, stage, stage / "bin" / "python")
    copy_modules(request, stage)
    return installed


def _write_entry_points(request: BuildRequest, stage: Path) -> None:
    """Relocatable launchers for the console scripts of the layer's packages (uv's are gone)."""
    from stacks.deploy import postinstall

    found = postinstall.find_entry_points(str(stage / request.site_dir))
    postinstall.write_layer_files(
        str(stage), postinstall.entry_point_files({"python": "bin/python"}, found)
    )


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
