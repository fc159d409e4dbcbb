"""The `stacks` command line: parse arguments, select layers, print results, set exit codes."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from stacks import __version__
from stacks.errors import EXIT_USAGE, StacksError, UsageError


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    try:
        return _run(argv)
    except StacksError as exc:
        _print_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        # Caught around argument parsing too: a Ctrl-C at any point after start-up is no crash.
        print("stacks: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`stacks show ... | head`): stop quietly.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        # A full disk or an unwritable folder outside any step (e.g. the cache's lock file).
        from stacks.errors import DiskError

        _print_error(DiskError.from_os_error(exc))
        return 1


def console_main() -> NoReturn:
    """The `stacks` and `python -m stacks` entry point: run, then exit with the code."""
    try:
        code = main()
        # The work is done: a late Ctrl-C or SIGTERM must not turn the interpreter's shutdown
        # into a traceback. Blocked signals are simply dropped when the process exits.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    except KeyboardInterrupt:
        print("stacks: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


def _run(argv: Sequence[str] | None) -> int:
    """Parse the arguments and run the chosen command."""
    _tolerant_output()
    parser = _build_parser()
    args, extra = parser.parse_known_args(argv)
    # Errors about a command's arguments show that command's usage.
    command_parser = getattr(args, "command_parser", parser)
    if extra and getattr(args, "handler", None) is _cmd_deploy:
        # `stacks deploy DIR --target T LAYER...`: layers may follow the options too.
        if any(word.startswith("-") for word in extra):
            command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.layers = [*args.layers, *extra]
    elif extra:
        command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return int(args.handler(args) or 0)


def _tolerant_output() -> None:
    """Never crash on characters the terminal cannot encode."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def _tree_glyphs() -> tuple[str, str, str, str]:
    """Branch, last branch, pipe and blank prefixes, in ASCII when stdout cannot encode box lines."""
    try:
        "├└│".encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "|-- ", "`-- ", "|   ", "    "
    return "├── ", "└── ", "│   ", "    "


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
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="say more (repeatable)"
    )
    common.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="print only errors"
    )
    original_add_parser = commands.add_parser

    def add_parser(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        command = original_add_parser(name, parents=[common], **kwargs)
        command.set_defaults(command_parser=command)
        return command

    commands.add_parser = add_parser  # type: ignore[method-assign]

    show = commands.add_parser("show", help="print the layers of a stack and what each depends on")
    _add_spec_arguments(show)
    show.add_argument("--json", action="store_true", help="print the stack as JSON")
    _add_lock_arguments(show, reset=False)
    show.set_defaults(handler=_cmd_show)

    lock = commands.add_parser(
        "lock", help="lock the layers (cross-platform pylock.toml per layer)"
    )
    _add_run_arguments(lock)
    _add_lock_arguments(lock)
    lock.set_defaults(handler=_cmd_steps, step="lock")

    build = commands.add_parser("build", help="lock as needed, then build the layer environments")
    _add_run_arguments(build)
    _add_lock_arguments(build)
    build.add_argument(
        "--clean", action="store_true", help="rebuild the selected layers even if up to date"
    )
    build.set_defaults(handler=_cmd_steps, step="build")

    publish = commands.add_parser(
        "publish", help="build as needed, then write reproducible layer archives"
    )
    _add_run_arguments(publish)
    _add_lock_arguments(publish)
    publish.add_argument(
        "--output-dir", metavar="DIR", help="where archives go (default: <spec dir>/_artifacts)"
    )
    publish.add_argument(
        "--format",
        choices=("tar.xz", "tar.zst", "tar.gz", "zip"),
        default="tar.xz",
        help="archive format (default: tar.xz)",
    )
    publish.add_argument(
        "--tag-outputs", action="store_true", help="add the platform to archive and metadata names"
    )
    publish.set_defaults(handler=_cmd_steps, step="archive")

    for name in ("export", "local-export"):
        export = commands.add_parser(
            name,
            help="build as needed, then export ready-to-run layers to a folder"
            if name == "export"
            else "alias of export",
        )
        _add_run_arguments(export)
        _add_lock_arguments(export)
        export.add_argument(
            "--output-dir", metavar="DIR", help="export folder (default: <spec dir>/_export)"
        )
        export.add_argument(
            "--no-symlinks",
            action="store_true",
            help="copy link targets instead of creating symlinks (e.g. FAT)",
        )
        export.set_defaults(handler=_cmd_steps, step="export")

    run = commands.add_parser("run", help="run an application from its build environment")
    run.add_argument("spec", metavar="SPEC", help="the stack spec file")
    run.add_argument(
        "app", metavar="APP", nargs="?", help="application name (`demo` or `app-demo`)"
    )
    run.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the application")
    run.add_argument("--cache-dir", metavar="DIR", help="cache folder (default: <spec dir>/cache)")
    run.set_defaults(handler=_cmd_run, runtime_source=None, python_mirror=None)

    listing = commands.add_parser("list", help="list the stack's tasks (doit list)")
    _add_spec_arguments(listing)
    listing.add_argument(
        "--cache-dir", metavar="DIR", help="cache folder (default: <spec dir>/cache)"
    )
    listing.add_argument(
        "--status", action="store_true", help="show whether each task is up to date"
    )
    listing.set_defaults(handler=_cmd_list)

    info = commands.add_parser(
        "info", help="show a task's dependencies, status and why it would run"
    )
    _add_spec_arguments(info)
    info.add_argument("task", metavar="TASK", help="a task name such as build:app-demo")
    info.add_argument("--cache-dir", metavar="DIR", help="cache folder (default: <spec dir>/cache)")
    info.add_argument("--json", action="store_true", help="print as JSON")
    info.set_defaults(handler=_cmd_info)

    for name, text in (
        ("forget", "forget the recorded state of tasks, so they run again"),
        ("clean", "remove what tasks produced (builds, archives, exports)"),
    ):
        sub = commands.add_parser(name, help=text)
        _add_spec_arguments(sub)
        sub.add_argument(
            "tasks",
            nargs="*",
            metavar="TASK",
            help="task names (default: every task of the layers --include matches, or of all)",
        )
        sub.add_argument(
            "--cache-dir", metavar="DIR", help="cache folder (default: <spec dir>/cache)"
        )
        sub.add_argument(
            "--no-wait", action="store_true", help="fail at once if another run holds the project"
        )
        sub.set_defaults(handler=_cmd_forget if name == "forget" else _cmd_clean)

    verify = commands.add_parser(
        "verify",
        help="compare locks, builds, archives and exports (or a deployed folder) with what "
        "was recorded, by full content hash",
    )
    verify.add_argument("spec", metavar="SPEC", nargs="?", help="the stack spec file")
    verify.add_argument(
        "--deployed", metavar="DIR", help="check a deployment folder instead of a stack"
    )
    verify.add_argument(
        "--include",
        metavar="PATTERN",
        action="append",
        default=[],
        help="only layers whose env name matches (fnmatch; repeatable)",
    )
    verify.add_argument(
        "--cache-dir", metavar="DIR", help="cache folder (default: <spec dir>/cache)"
    )
    verify.add_argument(
        "--output-dir",
        metavar="DIR",
        help="publish folder (default: every folder it was published to)",
    )
    verify.add_argument(
        "--export-dir",
        metavar="DIR",
        help="export folder (default: every folder it was exported to)",
    )
    verify.add_argument(
        "--allow-missing",
        action="store_true",
        help="a pattern that matches no layer is a warning, not an error",
    )
    verify.add_argument("--json", action="store_true", help="print the findings as JSON")
    verify.add_argument(
        "--no-wait", action="store_true", help="fail at once if another run holds the project"
    )
    verify.set_defaults(
        handler=_cmd_verify, allow_missing=False, runtime_source=None, python_mirror=None
    )

    deploy = commands.add_parser(
        "deploy", help="verify, unpack and post-install published archives on a target"
    )
    deploy.add_argument(
        "archive_dir", metavar="ARCHIVE_DIR", help="a publish output folder (with __stacks__/)"
    )
    deploy.add_argument("--target", required=True, metavar="DIR", help="the deployment folder")
    deploy.add_argument(
        "layers",
        nargs="*",
        metavar="LAYER",
        help="layers to deploy (default: all), with what they need",
    )
    deploy.set_defaults(handler=_cmd_deploy)
    return parser


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    _add_spec_arguments(parser)
    parser.add_argument(
        "--cache-dir", metavar="DIR", help="cache folder (default: <spec dir>/cache)"
    )
    parser.add_argument(
        "-n",
        "--jobs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="run up to N independent tasks at once (default: the number of cores)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the run's results (or the plan) as JSON"
    )
    parser.add_argument(
        "--dry-run",
        "--show-only",
        dest="dry_run",
        action="store_true",
        help="print which tasks would run and why, without running them",
    )
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="fail at once if another stacks run holds this project",
    )


def _add_lock_arguments(parser: argparse.ArgumentParser, *, reset: bool = True) -> None:
    if reset:
        parser.add_argument(
            "--reset-lock",
            metavar="PATTERN",
            action="append",
            default=[],
            help="re-resolve matching layers from scratch (fnmatch; repeatable)",
        )
    parser.add_argument(
        "--index-url", metavar="URL", help="use this package index instead of the default one"
    )
    index = parser.add_mutually_exclusive_group()
    index.add_argument(
        "--no-index", action="store_true", help="use no package index (only --local-wheels)"
    )
    index.add_argument(
        "--index",
        action="store_true",
        help="use the default package index (where a lock recorded --no-index)",
    )
    parser.add_argument(
        "--local-wheels",
        metavar="DIR",
        action="append",
        default=[],
        help="a folder of wheels to lock from (repeatable)",
    )


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


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
    import os
    from pathlib import Path

    from stacks.pipeline.output_folders import check_path_encoding
    from stacks.spec import load_spec

    check_path_encoding("spec", Path(os.path.abspath(args.spec)))
    spec = load_spec(
        args.spec, runtime_source=args.runtime_source, python_mirror=args.python_mirror
    )
    if not getattr(args, "quiet", False):
        for warning in spec.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    return spec


def _selected(args: argparse.Namespace, spec: Any, *, with_dependents: bool) -> tuple[Any, ...]:
    from stacks.spec import select_layers

    layers, unmatched = select_layers(spec, args.include, with_dependents=with_dependents)
    _report_unmatched(args, spec, unmatched, "")
    return layers


def _report_unmatched(
    args: argparse.Namespace, spec: Any, unmatched: list[str], option: str
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


def _check_reset_patterns(args: argparse.Namespace, spec: Any) -> None:
    """A --reset-lock pattern that matches no layer is a usage error (a typo would do nothing)."""
    from fnmatch import fnmatchcase

    unmatched = [
        pattern
        for pattern in args.reset_lock
        if not any(fnmatchcase(layer.env_name, pattern) for layer in spec.layers)
    ]
    _report_unmatched(args, spec, unmatched, "--reset-lock: ")


# ---------------------------------------------------------------- show


def _cmd_show(args: argparse.Namespace) -> int:
    from stacks.spec import LayerKind

    spec = _load(args)
    layers = _selected(args, spec, with_dependents=True)
    status = _lock_status(spec, layers, _context(args, spec).lock_options)
    if args.json:
        document: dict[str, Any] = {"spec_name": spec.name}
        for kind in LayerKind:
            document[kind.table] = [
                _layer_json(spec, layer, status) for layer in layers if layer.kind is kind
            ]
        print(json.dumps(document, indent=2))
        return 0
    for block in _render_tree(spec, layers, status):
        sys.stdout.write(block + "\n")
    return 0


def _lock_status(
    spec: Any, layers: Sequence[Any], options: Any
) -> dict[str, tuple[bool, int | None]]:
    """For each layer and its dependencies: (has a valid lock, lock version if it is valid).

    A stale lock's version is not the one the layer will deploy as, so it is not shown:
    a versioned layer without a valid lock shows as `<env>@???`, as venvstacks does.
    """
    from stacks.lock.locking import lock_state

    names = {layer.env_name for layer in layers}
    for layer in layers:
        names.update(layer.dependencies)
    status = {}
    for name in names:
        state = lock_state(spec, spec.layer(name), options)
        version = state.meta.lock_version if state.valid and state.meta else None
        status[name] = (state.valid, version)
    return status


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
) -> Iterator[str]:
    """The `show` tree, a layer at a time (a deep stack's tree is long: it is not built whole)."""
    from stacks.spec import LayerKind

    def label(env_name: str) -> str:
        valid, version = status[env_name]
        deployed = spec.layer(env_name).deployed_name(version)
        text = env_name if deployed == env_name else f"{env_name} -> {deployed}"
        return text if valid else f"*{text}"

    labels = {env_name: label(env_name) for env_name in status}

    tee, corner, pipe, blank = _tree_glyphs()
    yield spec.name
    groups = [(kind, [layer for layer in layers if layer.kind is kind]) for kind in LayerKind]
    groups = [(kind, members) for kind, members in groups if members]
    for group_index, (kind, members) in enumerate(groups):
        last_group = group_index == len(groups) - 1
        yield (corner if last_group else tee) + kind.table
        indent = blank if last_group else pipe
        for index, layer in enumerate(members):
            last = index == len(members) - 1
            head = indent + (corner if last else tee) + labels[layer.env_name]
            inner = indent + (blank if last else pipe)
            dependencies = layer.dependencies
            if not dependencies:
                yield head
                continue
            # One join per layer: a deep layer has thousands of dependency lines.
            between = "\n" + inner + tee
            above = between.join(map(labels.__getitem__, dependencies[:-1]))
            yield (
                head
                + (between + above if above else "")
                + "\n"
                + inner
                + corner
                + labels[dependencies[-1]]
            )
    if any(not status[layer.env_name][0] for layer in layers):
        yield "(* = no valid lock: run `stacks lock`)"


# ---------------------------------------------------------------- running steps


def _context(args: argparse.Namespace, spec: Any) -> Any:
    import os
    from pathlib import Path

    from stacks.lock.locking import LockOptions
    from stacks.pipeline.output_folders import check_path_encoding
    from stacks.pipeline.run_context import RunContext

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
    # Commands about tasks (list, info, forget, clean) see every task, as `doit list` does.
    return RunContext(
        spec=spec,
        cache_dir=folder(getattr(args, "cache_dir", None), "cache", "--cache-dir"),
        lock_options=options,
        reset_lock=tuple(getattr(args, "reset_lock", [])),
        output_dir=folder(getattr(args, "output_dir", None), "_artifacts", "--output-dir")
        if step in ("archive", None)
        else None,
        export_dir=folder(getattr(args, "output_dir", None), "_export", "--output-dir")
        if step in ("export", None)
        else None,
        archive_format=getattr(args, "format", "tar.xz"),
        tag_outputs=getattr(args, "tag_outputs", False),
        symlinks=not getattr(args, "no_symlinks", False),
    )


def _wanted(ctx: Any, step: str, layers: Sequence[Any]) -> list[str]:
    from stacks.pipeline.run_context import STACK_TASK, builds_here, task_name

    if step == "lock":
        return [task_name("lock", layer.env_name) for layer in layers]
    wanted = [task_name(step, layer.env_name) for layer in layers if builds_here(ctx, layer)]
    if step in ("archive", "export"):
        wanted.append(task_name(step, STACK_TASK))
    return wanted


def _cmd_steps(args: argparse.Namespace) -> int:
    import os

    from stacks.pipeline.engine import StacksReporter, plan, run_tasks

    spec = _load(args)
    layers = _selected(args, spec, with_dependents=False)
    _check_reset_patterns(args, spec)
    ctx = _context(args, spec)
    if args.step in ("archive", "export"):
        from stacks.pipeline.output_folders import check_output_folder
        from stacks.pipeline.run_context import builds_here

        check_output_folder(ctx, args.step, [lay for lay in layers if builds_here(ctx, lay)])
    if args.include:
        ctx = ctx.with_options(selected=frozenset(layer.env_name for layer in layers))
    wanted = _wanted(ctx, args.step, layers)
    skipped = [
        layer.env_name
        for layer in layers
        if args.step != "lock" and ctx.platform_tag not in layer.platforms
    ]
    if skipped and not args.quiet:
        print(f"note: not built here ({ctx.platform_tag}): {', '.join(skipped)}", file=sys.stderr)
    if getattr(args, "clean", False):
        # Only the layers asked for are forced; the layers they need are rebuilt only if needed.
        ctx = ctx.with_options(forced=frozenset(_wanted(ctx, args.step, _asked(args, layers))))
    if args.dry_run:
        planned = plan(ctx, wanted)
        if args.json:
            print(json.dumps({"plan": [p.to_json() for p in planned]}, indent=2))
        else:
            for item in planned:
                reasons = f": {'; '.join(item.reasons)}" if item.reasons else ""
                label = {"run": "would run", "maybe": "may run", "up-to-date": "up to date"}[
                    item.status
                ]
                print(f"{item.task:40} {label}{reasons}")
        return 0
    reporter = StacksReporter(verbose=args.verbose, quiet=args.quiet)
    jobs = args.jobs if args.jobs is not None else (os.cpu_count() or 1)
    result = run_tasks(ctx, wanted, jobs=jobs, reporter=reporter, wait=not args.no_wait)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    elif not args.quiet:
        print(result.summary(), file=sys.stderr)
        if result.exit_code == 0:
            _print_next_steps(ctx, args.step, layers)
    return 1 if result.exit_code else 0


def _asked(args: argparse.Namespace, layers: Sequence[Any]) -> list[Any]:
    """The layers `--include` names itself (all when there is no pattern), not those they need."""
    from fnmatch import fnmatchcase

    return [
        layer
        for layer in layers
        if not args.include or any(fnmatchcase(layer.env_name, p) for p in args.include)
    ]


def _print_next_steps(ctx: Any, step: str, layers: Sequence[Any]) -> None:
    import shlex

    from stacks.pipeline.run_context import deployed_name
    from stacks.spec import LayerKind

    apps = [
        layer
        for layer in layers
        if layer.kind is LayerKind.APPLICATION and ctx.platform_tag in layer.platforms
    ]
    if step == "build":
        for app in apps:
            command = shlex.join(["stacks", "run", str(ctx.spec.path), app.name])
            print(f"run {app.env_name}: {command}", file=sys.stderr)
    elif step == "archive" and ctx.output_dir is not None:
        print(f"archives and metadata in {ctx.output_dir}", file=sys.stderr)
    elif step == "export" and ctx.export_dir is not None:
        for app in apps:
            python = ctx.export_dir / deployed_name(ctx, app.env_name) / "bin" / "python"
            command = shlex.join([str(python), "-m", app.launch_module_name])
            print(f"run {app.env_name}: {command}", file=sys.stderr)


def _find_app(spec: Any, name: str) -> Any:
    from stacks.spec import LayerKind

    for layer in spec.of_kind(LayerKind.APPLICATION):
        if name in (layer.name, layer.env_name):
            return layer
    apps = ", ".join(layer.name for layer in spec.of_kind(LayerKind.APPLICATION)) or "none"
    if name in spec.disabled or f"app-{name}" in spec.disabled:
        raise UsageError(
            f"application '{name}' in {spec.name} is disabled: it targets no platform",
            hint="its `platforms` (or those of the layers below it) leave none; "
            f"enabled applications: {apps}",
        )
    raise UsageError(f"no application '{name}' in {spec.name}", hint=f"applications: {apps}")


def _cmd_run(args: argparse.Namespace) -> int:
    import os
    import subprocess

    from stacks.pipeline.build_steps import build_current

    spec = _load(args)
    if args.app is None:
        raise UsageError(
            "stacks run: which application?", hint=f"`stacks run {args.spec} APP [ARGS...]`"
        )
    app = _find_app(spec, args.app)
    ctx = _context(args, spec)
    python = ctx.build_dir(app.env_name) / "bin" / "python"
    if not python.exists() or not build_current(ctx, app.env_name):
        raise StacksError(
            f"application '{app.env_name}' is not built (or its build is out of date)",
            hint=f"run `stacks build {args.spec}` first",
        )
    extra = args.args[1:] if args.args[:1] == ["--"] else args.args
    command = [os.fspath(python), "-m", app.launch_module_name, *extra]
    return subprocess.run(command, check=False).returncode


def _cmd_list(args: argparse.Namespace) -> int:
    from stacks.pipeline.engine import run_doit_command

    spec = _load(args)
    ctx = _context(args, spec)
    names: list[str] = []
    if args.include:
        from stacks.pipeline.engine import task_graph

        # The tasks of the selected layers (those matched, and the layers they need).
        layers = {layer.env_name for layer in _selected(args, spec, with_dependents=False)}
        names = [name for name in task_graph(ctx) if name.partition(":")[2] in layers]
    if args.include and not names:
        return 0  # --allow-missing and nothing matched: doit would list everything
    if args.status:
        return _list_status(ctx, names)
    return run_doit_command(ctx, ["list", "--all", *names])


def _task_docs(ctx: Any) -> dict[str, str]:
    """task name -> its one-line description."""
    from stacks.pipeline.tasks import all_tasks

    return {f"{step}:{task['name']}": task.get("doc", "") for step, task in all_tasks(ctx)}


def _list_status(ctx: Any, names: list[str]) -> int:
    """Each step task with the status `--dry-run` would give it: R run, M may run, U up to date."""
    from stacks.pipeline.engine import plan, task_graph

    docs = _task_docs(ctx)
    planned = {item.task: item.status for item in plan(ctx, names or list(task_graph(ctx)))}
    shown = sorted(names or planned)
    width = max(map(len, shown), default=0) + 3
    codes = {"run": "R", "maybe": "M", "up-to-date": "U"}
    for name in shown:
        print(f"{codes[planned[name]]} {name:<{width}}{docs.get(name, '')}")
    print("R: will run, M: may run (after a task it needs), U: up to date", file=sys.stderr)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from stacks.hashing import read_stamp
    from stacks.pipeline.engine import closure, plan, task_graph
    from stacks.pipeline.stamps import task_products, task_stamp
    from stacks.pipeline.tasks import is_current

    spec = _load(args)
    ctx = _context(args, spec)
    graph = task_graph(ctx)
    if args.task not in graph:
        raise UsageError(f"unknown task '{args.task}'", hint="`stacks list SPEC` shows every task")
    step, _, env = args.task.partition(":")
    current = is_current(ctx, step, env)
    stamp = read_stamp(task_stamp(ctx, args.task)) or {}
    planned = plan(ctx, [args.task])[-1]  # the task itself comes last, after what it needs
    data = {
        "task": args.task,
        "depends_on": graph[args.task],
        "all_dependencies": closure(graph, [args.task])[:-1],
        "up_to_date": current,
        "status": planned.status,
        "reasons": planned.reasons,
        "last_finished": stamp.get("finished_at"),
        "outputs": stamp.get("outputs", {}),
    }
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    # In words, not doit's `info` (it would show our check functions and their arguments).
    print(f"{args.task}: {_task_docs(ctx).get(args.task, '')}")
    print(f"needs: {', '.join(data['depends_on']) or 'nothing'}")
    stamps = ctx.cache_dir / "stamps"
    products = [p for p in task_products(ctx, args.task) if p.exists() and stamps not in p.parents]
    if products:
        print("wrote: " + "\n       ".join(map(str, products)))
    label = {"run": "will run", "maybe": "may run", "up-to-date": "up to date"}[planned.status]
    print(f"status: {label}")
    for reason in data["reasons"]:
        print(f"  because: {reason}")
    if data["last_finished"]:
        print(f"last finished: {data['last_finished']}")
    return 0


def _tasks_for(args: argparse.Namespace, ctx: Any) -> list[str]:
    from stacks.pipeline.engine import task_graph

    graph = task_graph(ctx)
    if args.tasks:
        unknown = [t for t in args.tasks if t not in graph]
        if unknown:
            raise UsageError(
                f"unknown task: {', '.join(unknown)}", hint="`stacks list SPEC` shows every task"
            )
        return list(args.tasks)
    # Only the layers the patterns match: forgetting or cleaning an app leaves its runtime alone.
    layers = {
        layer.env_name for layer in _asked(args, _selected(args, ctx.spec, with_dependents=False))
    }
    if not args.include:
        return list(graph)  # the stack manifest tasks too
    return [name for name in graph if name.partition(":")[2] in layers]


def _cmd_forget(args: argparse.Namespace) -> int:
    from stacks.pipeline.engine import project_lock
    from stacks.pipeline.stamps import recorded_stamps

    spec = _load(args)
    ctx = _context(args, spec)
    names = _tasks_for(args, ctx)
    # The stamps alone decide what is up to date (doit's own database does not).
    with project_lock(ctx.cache_dir, wait=not args.no_wait):
        for name in names:
            if not name.startswith("lock:"):
                for stamp in recorded_stamps(ctx, name):  # of every destination
                    stamp.unlink(missing_ok=True)
    locks = sum(1 for name in names if name.startswith("lock:"))
    if not args.quiet:
        forgotten = len(names) - locks
        print(
            f"forgot {forgotten} task(s); they will run again"
            if forgotten
            else "nothing to forget",
            file=sys.stderr,
        )
        if locks:
            print(
                "note: lock tasks follow the committed lock files; "
                "`stacks lock SPEC --reset-lock PATTERN` re-resolves them",
                file=sys.stderr,
            )
    return 0


def _cmd_clean(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stacks.pipeline.engine import project_lock
    from stacks.pipeline.publish_steps import run_manifest
    from stacks.pipeline.run_context import STACK_TASK, stack_manifest_path
    from stacks.pipeline.stamps import remove_products

    spec = _load(args)
    ctx = _context(args, spec)
    names = _tasks_for(args, ctx)
    removed = 0
    refresh: set[tuple[str, Path]] = set()  # stack manifests listing a removed layer
    with project_lock(ctx.cache_dir, wait=not args.no_wait):
        for name in names:
            step, _, env = name.partition(":")
            for path in remove_products(ctx, name):
                removed += 1
                # An archive or an exported layer (not its stamp or metadata file): its folder.
                output = ctx.cache_dir not in path.parents and path.parent.name != "env_metadata"
                if step in ("archive", "export") and env != STACK_TASK and output:
                    refresh.add((step, path.parent))
        for step, folder in sorted(refresh):
            if f"{step}:{STACK_TASK}" in names:
                continue
            # A partial clean: the stack manifest of that folder lists what is left.
            folder_ctx = ctx.with_options(
                **{"output_dir" if step == "archive" else "export_dir": folder}
            )
            if stack_manifest_path(folder_ctx, step).is_file():
                run_manifest(folder_ctx, step)
    if not args.quiet:
        print(f"removed {removed} item(s) for {len(names)} task(s)", file=sys.stderr)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from stacks.pipeline.engine import project_lock
    from stacks.pipeline.verify import render, verify_deployed, verify_stack

    if (args.spec is None) == (args.deployed is None):
        raise UsageError(
            "verify needs either SPEC or --deployed DIR (not both)",
            hint="`stacks verify stack.toml` checks a stack; `stacks verify --deployed DIR` a deployment",
        )
    if args.deployed is not None:
        findings = verify_deployed(Path(os.path.abspath(args.deployed)))
    else:
        spec = _load(args)
        layers = _selected(args, spec, with_dependents=False)
        ctx = _context(args, spec).with_options(
            output_dir=Path(os.path.abspath(args.output_dir)) if args.output_dir else None,
            export_dir=Path(os.path.abspath(args.export_dir)) if args.export_dir else None,
        )
        # Under the project lock: a run swapping folders in would look like a difference.
        with project_lock(ctx.cache_dir, wait=not args.no_wait):
            findings = verify_stack(ctx, list(layers), args.spec)
    failed = any(f.failed for f in findings)
    if args.json:
        document = {"ok": not failed, "findings": [f.to_json() for f in findings]}
        print(json.dumps(document, indent=2))
    else:
        text = render(findings, quiet=args.quiet)
        if text:
            print(text)
    return 1 if failed else 0


def _cmd_deploy(args: argparse.Namespace) -> int:
    from stacks.deploy.deploy import main as deploy_main

    quiet = ["--quiet"] if args.quiet else []
    return deploy_main([args.archive_dir, "--target", args.target, *quiet, *args.layers])
