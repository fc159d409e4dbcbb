"""Export layers to a folder, ready to run: linked or copied entries, bytecode, postinstall."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

from stacks import atomic
from stacks.children import run_child
from stacks.errors import PublishError
from stacks.progress import ProgressFile
from stacks.publish.archives import (
    INJECTED_POSTINSTALL,
    LayerEntry,
    layer_entries,
    os_error_hint,
    total_file_size,
)


def supports_symlinks(folder: Path) -> bool:
    """Whether symlinks can be created in `folder` (probed by creating one)."""
    folder.mkdir(parents=True, exist_ok=True)
    probe = Path(atomic.sibling_name(folder / "stacks-symlink-probe", ".tmp"))
    try:
        os.mkdir(probe)
        os.symlink("target", probe / "link")
        return os.path.islink(probe / "link")
    except (OSError, NotImplementedError):
        return False
    finally:
        atomic.remove_tree(probe)


def export_layer(
    tree: Path,
    target: Path,
    *,
    layered: bool,
    symlinks: bool = True,
    progress: ProgressFile | None = None,
) -> None:
    """Copy the layer at `tree` to `target` (hard links where possible), then run its postinstall.

    `progress` counts the bytes of the layer's files as they are linked or copied.
    """
    entries = layer_entries(tree, layered=layered)
    if progress is not None:
        progress.total = total_file_size(entries)
    target = Path(os.path.abspath(target))
    try:
        with atomic.new_directory(target) as staging:
            os.chmod(staging, 0o755)
            same_device = os.stat(tree).st_dev == os.stat(staging).st_dev
            for entry in entries:
                _export_entry(
                    entry, staging / entry.name, same_device=same_device, symlinks=symlinks
                )
                if progress is not None and entry.kind == "file":
                    with contextlib.suppress(OSError):
                        progress.add(os.stat(entry.source).st_size)
            _export_bytecode(Path(os.path.abspath(tree)), staging, same_device=same_device)
    except OSError as exc:
        raise PublishError(
            f"cannot export {tree} to {target}: {exc}",
            hint=os_error_hint(exc)
            if exc.errno in _DISK_ERRNOS
            else "if the target cannot hold symlinks, export with symlinks=False "
            "(supports_symlinks() probes a folder)",
        ) from exc
    try:
        _run_postinstall(target, symlinks=symlinks)
    except BaseException:
        atomic.remove_tree_despite_interrupts(target)
        raise


_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES})


def _export_entry(entry: LayerEntry, dest: Path, *, same_device: bool, symlinks: bool) -> None:
    if entry.kind == "dir":
        dest.mkdir()
    elif entry.kind == "symlink" and symlinks:
        os.symlink(entry.link_target or "", dest)
    elif entry.kind == "symlink":
        source = Path(os.path.realpath(entry.source))
        if source.is_dir():
            shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif source.is_file():
            shutil.copy2(source, dest)
        else:
            raise PublishError(
                f"{entry.source}: dangling symlink cannot be copied to a target without symlinks"
            )
    elif same_device and entry.source != INJECTED_POSTINSTALL:
        try:
            os.link(entry.source, dest)
        except OSError:  # e.g. the link count limit, or a filesystem without hard links
            shutil.copy2(entry.source, dest)
    else:
        shutil.copy2(entry.source, dest)


def _export_bytecode(tree: Path, staging: Path, *, same_device: bool) -> None:
    """Link the build tree's bytecode next to the exported sources it was compiled from.

    The runtime's stdlib is precompiled; without this, postinstall recompiles all of it for
    every export. A .pyc records its source's mtime and size, and exported sources are hard
    links (or mtime-preserving copies), so linked bytecode is valid and postinstall skips it;
    bytecode of a source postinstall rewrites (sitecustomize.py) no longer matches and is
    recompiled. Like sources, .pyc files are never modified in place (always replaced).
    """
    for dirpath, dirnames, _ in os.walk(tree):
        if "__pycache__" not in dirnames:
            continue
        dirnames.remove("__pycache__")
        exported = staging / os.path.relpath(dirpath, tree)
        if not exported.is_dir() or exported.is_symlink():
            continue  # not exported (bin/ of a layered env, hidden folders)
        with os.scandir(os.path.join(dirpath, "__pycache__")) as scan:
            compiled = [
                e for e in scan if e.name.endswith(".pyc") and e.is_file(follow_symlinks=False)
            ]
        if not compiled:
            continue
        (exported / "__pycache__").mkdir(exist_ok=True)
        for entry in compiled:
            dest = exported / "__pycache__" / entry.name
            if same_device:
                try:
                    os.link(entry.path, dest)
                    continue
                except OSError:
                    pass
            shutil.copy2(entry.path, dest)


def _run_postinstall(layer: Path, *, symlinks: bool) -> None:
    """Run the layer's postinstall.py with its base Python (the runtime for layered envs)."""
    from stacks.deploy import postinstall

    try:
        base = postinstall.resolve_base_python(layer)
    except postinstall.LayerConfigError as exc:
        raise PublishError(f"cannot export {layer.name}: {exc}") from None
    if not os.access(base, os.X_OK):
        raise PublishError(
            f"cannot export {layer.name}: its base Python {base} does not exist",
            hint="export the runtime (and any frameworks below the layer) first",
        )
    command = [str(base), "-X", "utf8", "-I", str(layer / "postinstall.py"), str(layer)]
    if not symlinks:
        command.append("--copies")
    # Its own process group: if this step is interrupted, the whole group (compileall's
    # worker pool included) is killed, leaving no orphan holding the output pipes.
    done = run_child(command, text=True, start_new_session=os.name == "posix")
    if done.returncode != 0:
        raise PublishError(
            f"postinstall.py of {layer.name} failed (exit {done.returncode}):\n"
            f"{(done.stderr or done.stdout).strip()}"
        )
