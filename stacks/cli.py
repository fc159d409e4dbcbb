"""The `stacks` command line: parse arguments, select layers, print results, set exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .errors import EXIT_USAGE, StacksError, UsageError


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.handler(args) or 0)
    except StacksError as exc:
        _print_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print("stacks: interrupted", file=sys.stderr)
        return 130


def _print_error(exc: StacksError) -> None:
    print(f"error: {exc}", file=sys.stderr)


def _build_parser() -> argparse.ArgumentParser:
    prog = "stacks" if not sys.argv[0].endswith("__main__.py") else "python -m stacks"
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Build layered Python environment stacks: runtimes, shared frameworks, applications.",
    )
    parser.add_argument("--version", action="version", version=f"stacks {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v", "--verbose", action="count", default=0, help="say more (repeatable)"
    )
    verbosity.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    show = commands.add_parser("show", help="print the layers of a stack and what each depends on")
    _add_spec_arguments(show)
    show.add_argument("--json", action="store_true", help="print the stack as JSON")
    show.set_defaults(handler=_cmd_show)
    return parser


def _add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "spec", metavar="SPEC", help="the stack spec file (TOML, or YAML by extension)"
    )
    parser.add_argument(
        "--include",
        metavar="PATTERN",
        action="append",
        default=[],
        help="only layers whose env name matches (fnmatch; repeatable), with the layers they need",
    )
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="a pattern that matches no layer is a warning, not an error",
    )
    parser.add_argument(
        "--runtime-source",
        choices=("python-build-standalone", "local"),
        help="override runtime sources for this run",
    )
    parser.add_argument(
        "--python-mirror", metavar="URL", help="download host for python-build-standalone"
    )


def _load(args: argparse.Namespace) -> Any:
    from .spec import load_spec

    spec = load_spec(
        args.spec, runtime_source=args.runtime_source, python_mirror=args.python_mirror
    )
    if not getattr(args, "quiet", False):
        for warning in spec.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    return spec


def _selected(args: argparse.Namespace, spec: Any, *, with_dependents: bool) -> tuple[Any, ...]:
    from .spec import select_layers

    layers, unmatched = select_layers(spec, args.include, with_dependents=with_dependents)
    if unmatched:
        message = f"no layers match: {', '.join(unmatched)}"
        if not args.allow_missing:
            names = ", ".join(layer.env_name for layer in spec.layers)
            raise UsageError(
                message, hint=f"layers in {spec.name}: {names} (or pass --allow-missing)"
            )
        print(f"warning: {message}", file=sys.stderr)
    return layers


# ---------------------------------------------------------------- show


def _cmd_show(args: argparse.Namespace) -> int:
    from .spec import LayerKind

    spec = _load(args)
    layers = _selected(args, spec, with_dependents=True)
    status = _lock_status(spec, layers)
    if args.json:
        document: dict[str, Any] = {"spec_name": spec.name}
        for kind in LayerKind:
            document[kind.table] = [
                _layer_json(spec, layer, status) for layer in layers if layer.kind is kind
            ]
        print(json.dumps(document, indent=2))
        return 0
    print(_render_tree(spec, layers, status))
    return 0


def _lock_status(spec: Any, layers: Sequence[Any]) -> dict[str, tuple[bool, int | None]]:
    """For each layer and its dependencies: (has a valid lock, lock version)."""
    names = {layer.env_name for layer in layers}
    for layer in layers:
        names.update(layer.dependencies)
    return {name: (False, None) for name in names}


def _layer_json(
    spec: Any, layer: Any, status: dict[str, tuple[bool, int | None]]
) -> dict[str, Any]:
    def ref(env_name: str) -> dict[str, Any]:
        valid, version = status[env_name]
        return {
            "name": env_name,
            "install_target": spec.layer(env_name).deployed_name(version),
            "has_valid_lock": valid,
        }

    entry = ref(layer.env_name)
    entry["platforms"] = list(layer.platforms)
    entry["dependencies"] = [ref(dep) for dep in layer.dependencies]
    return entry


def _render_tree(
    spec: Any, layers: Sequence[Any], status: dict[str, tuple[bool, int | None]]
) -> str:
    from .spec import LayerKind

    def label(env_name: str) -> str:
        valid, version = status[env_name]
        deployed = spec.layer(env_name).deployed_name(version)
        text = env_name if deployed == env_name else f"{env_name} -> {deployed}"
        return text if valid else f"*{text}"

    lines = [spec.name]
    groups = [(kind, [layer for layer in layers if layer.kind is kind]) for kind in LayerKind]
    groups = [(kind, members) for kind, members in groups if members]
    for group_index, (kind, members) in enumerate(groups):
        last_group = group_index == len(groups) - 1
        lines.append(("└── " if last_group else "├── ") + kind.table)
        indent = "    " if last_group else "│   "
        for index, layer in enumerate(members):
            last = index == len(members) - 1
            lines.append(indent + ("└── " if last else "├── ") + label(layer.env_name))
            inner = indent + ("    " if last else "│   ")
            for dep_index, dep in enumerate(layer.dependencies):
                dep_last = dep_index == len(layer.dependencies) - 1
                lines.append(inner + ("└── " if dep_last else "├── ") + label(dep))
    if any(not status[layer.env_name][0] for layer in layers):
        lines.append("(* = no valid lock yet: run `stacks lock`)")
    return "\n".join(lines)
