"""Where publish and export outputs may go: never over sources, caches or folders stacks did not write."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stacks.errors import UsageError

if TYPE_CHECKING:
    from stacks.pipeline.run_context import RunContext
    from stacks.pipeline.steps import PublishStep
    from stacks.spec import LayerSpec

# A folder stacks exported holds this file at its top (every layer ships its post-install step).
EXPORT_MARK = "postinstall.py"


def check_path_encoding(option: str, path: Path) -> None:
    """Refuse a path that is not valid UTF-8 (metadata, stamps and launchers are UTF-8 text)."""
    try:
        os.fsdecode(os.fsencode(path)).encode("utf-8")
    except UnicodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise UsageError(
            f"{option} {shown}: the path is not valid UTF-8",
            hint="rename the folder (or pick another one) so its name is valid UTF-8",
        ) from None


def check_output_folder(ctx: RunContext, step: PublishStep, layers: Iterable[LayerSpec]) -> None:
    """Refuse an output folder whose writes would replace sources, caches or foreign folders.

    `step` is the publish or export step; `layers` are those the run writes.
    """
    folder = step.folder(ctx)
    if folder is None:
        return
    option = "--output-dir"
    spec = ctx.spec
    real = _real(folder)
    protected = [("the cache folder", ctx.cache_dir)]
    protected.append(("the lock files folder", spec.spec_dir / "requirements"))
    protected += [("a launch or support module", path) for path in _modules(spec.layers)]
    for what, place in protected:
        if _within(real, _real(place)):
            raise UsageError(
                f"{option} {folder}: it is inside {what} ({place})",
                hint="write outputs to a folder of their own, e.g. the default "
                f"{spec.spec_dir / step.default_folder}",
            )
    other = _output_kind(folder)
    mine = step.verb
    if other is not None and other != mine:
        held = "published archives" if other == "publish" else "an exported stack"
        raise UsageError(
            f"{option} {folder}: it holds {held}; {mine}ing there would mix their metadata",
            hint=f"{mine} into a folder of its own",
        )
    if step.replaces_layer_folders:
        _check_export_targets(ctx, folder, layers)


def _check_export_targets(ctx: RunContext, folder: Path, layers: Iterable[LayerSpec]) -> None:
    """Each exported layer replaces `<folder>/<install target>`: it must be ours to replace."""
    from stacks.pipeline.run_context import deployed_name

    spec = ctx.spec
    sources = [spec.path, spec.spec_dir / "requirements", ctx.cache_dir, *_modules(spec.layers)]
    real_sources = [(source, _real(source)) for source in sources]  # resolved once, not per layer
    problems = []
    for layer in layers:
        target = folder / deployed_name(ctx, layer.env_name)
        real = _real(target)
        clash = next((s for s, real_s in real_sources if _within(real_s, real)), None)
        if clash is not None:
            problems.append(f"{target} would replace {clash}")
        elif (target.exists() or target.is_symlink()) and not _is_export(target):
            problems.append(f"{target} exists and was not exported by stacks")
    if problems:
        raise UsageError(
            "export would overwrite what it must not:\n    " + "\n    ".join(problems),
            hint="export into a folder of its own (--output-dir DIR), or move those folders away",
        )


def _modules(layers: Iterable[Any]) -> list[Path]:
    """The launch and support modules of every application."""
    return [
        path
        for layer in layers
        for path in (layer.launch_module, *layer.support_modules)
        if path is not None
    ]


def _is_export(target: Path) -> bool:
    """Whether a folder is an earlier export (or empty): safe to replace."""
    if target.is_symlink() or not target.is_dir():
        return False
    return (target / EXPORT_MARK).is_file() or not any(target.iterdir())


def _output_kind(folder: Path) -> str | None:
    """'publish' or 'export' for a folder holding a stack manifest of that kind, else None."""
    manifests = sorted((folder / "__stacks__").glob("stack*.json"))
    for manifest in manifests:
        try:
            layers = json.loads(manifest.read_text(encoding="utf-8"))["layers"]
            entries = [e for group in layers.values() for e in group]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if entries:
            return "publish" if any("archive_name" in e for e in entries) else "export"
    return None


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _within(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or inside it."""
    return path == folder or folder in path.parents
