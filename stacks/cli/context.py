"""From parsed arguments to what a command works on: the spec, its selected layers, the run context."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from stacks.errors import UsageError

if TYPE_CHECKING:
    from stacks.pipeline.run_context import RunContext
    from stacks.spec import LayerSpec, StackSpec


def load_stack(args: argparse.Namespace) -> StackSpec:
    """Load the spec file the arguments name, printing its warnings unless --quiet."""
    import os
    from pathlib import Path

    from stacks.pipeline.output_folders import check_path_encoding
    from stacks.spec import load_spec

    check_path_encoding("spec", Path(os.path.abspath(args.spec)))
    spec = load_spec(
        args.spec,
        runtime_source=args.runtime_source,
        python_mirror=args.python_mirror,
        runtime_any_patch=getattr(args, "runtime_any_patch", None),
    )
    if not getattr(args, "quiet", False):
        for warning in spec.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    return spec


def selected_layers(
    args: argparse.Namespace, spec: StackSpec, *, with_dependents: bool
) -> tuple[LayerSpec, ...]:
    """The layers --include selects (all without a pattern), with the layers they need.

    `--variant` then keeps the layers of those variants and the shared ones (no variant).
    """
    from stacks.spec import select_layers

    layers, unmatched = select_layers(spec, args.include, with_dependents=with_dependents)
    _report_unmatched(args, spec, unmatched, "")
    variants = getattr(args, "variant", [])
    if variants:
        check_variants(spec, variants)
        layers = tuple(layer for layer in layers if layer.variant in (None, *variants))
    return layers


def narrowed(args: argparse.Namespace) -> bool:
    """Whether --include or --variant narrows the command to some layers."""
    return bool(args.include or getattr(args, "variant", []))


def check_variants(spec: StackSpec, variants: Sequence[str]) -> None:
    """A --variant the spec does not declare is a usage error (a typo would select nothing)."""
    from stacks.spec.report import did_you_mean

    unknown = [name for name in variants if name not in spec.variants]
    if not unknown:
        return
    if not spec.variants:
        raise UsageError(
            f"--variant {unknown[0]}: {spec.name} has no variants",
            hint="variants come from a framework's `variants` table (docs/spec.md); "
            "leave out --variant",
        )
    close = did_you_mean(unknown[0], spec.variants)
    raise UsageError(
        f"unknown variant{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}",
        hint=(f"{close} " if close else "") + f"(variants in {spec.name}: "
        f"{', '.join(spec.variants)})",
    )


def _report_unmatched(
    args: argparse.Namespace, spec: StackSpec, unmatched: list[str], option: str
) -> None:
    """Patterns that match no enabled layer: an error (a warning with --allow-missing).

    A pattern that matches only disabled layers says so, since those layers do exist.
    """
    from fnmatch import fnmatchcase

    if not unmatched:
        return
    described = []
    for pattern in unmatched:
        disabled = [name for name in spec.disabled if fnmatchcase(name, pattern)]
        described.append(
            f"{pattern} (only disabled layers: {', '.join(disabled)})" if disabled else pattern
        )
    message = f"{option}no layers match: {', '.join(described)}"
    if not args.allow_missing:
        names = ", ".join(layer.env_name for layer in spec.layers)
        hint = f"layers in {spec.name}: {names} (or pass --allow-missing)"
        if described != unmatched:
            hint = (
                "a layer is disabled when it has no target platforms (`platforms = []` on it,"
                " or no platform shared by the layers below it); " + hint
            )
        raise UsageError(message, hint=hint)
    if not getattr(args, "quiet", False):
        print(f"warning: {message}", file=sys.stderr)


def check_reset_patterns(args: argparse.Namespace, spec: StackSpec) -> None:
    """A --reset-lock pattern that matches no layer is a usage error (a typo would do nothing)."""
    from fnmatch import fnmatchcase

    unmatched = [
        pattern
        for pattern in args.reset_lock
        if not any(fnmatchcase(layer.env_name, pattern) for layer in spec.layers)
    ]
    _report_unmatched(args, spec, unmatched, "--reset-lock: ")


def context_from_args(args: argparse.Namespace, spec: StackSpec) -> RunContext:
    """The run context (folders, lock options, output settings) the arguments ask for."""
    import os
    from pathlib import Path

    from stacks.lock.metadata import LockOptions
    from stacks.pipeline.output_folders import check_path_encoding
    from stacks.pipeline.run_context import RunContext
    from stacks.pipeline.steps import PUBLISH_STEPS

    def folder(value: str | None, default: str, option: str) -> Path:
        path = (
            Path(os.path.abspath(os.path.expanduser(value))) if value else spec.spec_dir / default
        )
        check_path_encoding(option, path)
        if path.exists() and not path.is_dir():
            raise UsageError(
                f"{option} {path}: not a folder", hint="pass a folder (or a path to create)"
            )
        return path

    wheels = tuple(
        Path(os.path.abspath(os.path.expanduser(w))) for w in getattr(args, "local_wheels", [])
    )
    for wheel_dir in wheels:
        check_path_encoding("--local-wheels", wheel_dir)
        if not wheel_dir.is_dir():
            raise UsageError(f"--local-wheels {wheel_dir}: no such folder")
    index_url = getattr(args, "index_url", None)
    no_index = getattr(args, "no_index", False)
    options = LockOptions(
        index_url=index_url,
        no_index=no_index,
        local_wheels=wheels,
        # None of them given: every layer keeps the index settings its lock recorded.
        given=bool(index_url or no_index or wheels or getattr(args, "index", False)),
    )
    step = getattr(args, "step", None)
    # A publish step writes into the folder `--output-dir` names; commands about tasks (list,
    # info, forget, clean) see every step's folder, as `doit list` sees every task.
    destinations = {
        publish.folder_option: folder(
            getattr(args, "output_dir", None), publish.default_folder, "--output-dir"
        )
        if step in (None, publish.name)
        else None
        for publish in PUBLISH_STEPS
    }
    return RunContext(
        spec=spec,
        cache_dir=folder(getattr(args, "cache_dir", None), "cache", "--cache-dir"),
        lock_options=options,
        reset_lock=tuple(getattr(args, "reset_lock", [])),
        **destinations,
        archive_format=getattr(args, "format", "tar.xz"),
        tag_outputs=getattr(args, "tag_outputs", False),
        bytecode=getattr(args, "bytecode", False),
        symlinks=not getattr(args, "no_symlinks", False),
        runtime_store_option=_runtime_store_option(getattr(args, "runtime_store", None)),
    )


def _runtime_store_option(value: str | None) -> str | None:
    """`--runtime-store` made absolute here (task processes may run elsewhere); `off` as it is."""
    import os

    from stacks.runtime.store import resolve_store

    if value is None:
        return None
    store = resolve_store(value)
    return "off" if store is None else os.fspath(store)


def asked_layers(args: argparse.Namespace, layers: Sequence[LayerSpec]) -> list[LayerSpec]:
    """The layers `--include` names itself (all when there is no pattern), not those they need."""
    from fnmatch import fnmatchcase

    return [
        layer
        for layer in layers
        if not args.include or any(fnmatchcase(layer.env_name, p) for p in args.include)
    ]
