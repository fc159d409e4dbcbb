"""The `stacks` entry points: run the chosen command, print errors, set exit codes."""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from stacks.cli.checks import cmd_deploy
from stacks.cli.compat import apply_options, show_first
from stacks.cli.parser import build_parser, command_word
from stacks.errors import EXIT_USAGE, StacksError


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
    except RuntimeError as exc:
        # A Ctrl-C inside a class's creation (a lazy import defining a dataclass) comes
        # wrapped: "Error calling __set_name__ ...", caused by the KeyboardInterrupt.
        if not isinstance(exc.__cause__, KeyboardInterrupt):
            raise
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


def console_main(*, restore_sigint: bool = False) -> NoReturn:
    """Run, then exit with the code; `restore_sigint`: Ctrl-C raises KeyboardInterrupt again.

    The entry points (`stacks.cli.console_main`, `python -m stacks`) import this module after
    `stacks.startup.quit_on_ctrl_c`, which ends the process on Ctrl-C until this runs.
    """
    try:
        if restore_sigint:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        code = main()
        # The work is done: a late Ctrl-C or SIGTERM must not turn the interpreter's shutdown
        # into a traceback. Blocked signals are simply dropped when the process exits.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    except KeyboardInterrupt:
        print("stacks: interrupted", file=sys.stderr)
        code = 130
    _exit(code)


def _exit(code: int) -> NoReturn:
    """Exit with `code`, skipping the interpreter's teardown when nothing else still runs.

    The atexit handlers run and the standard streams are flushed as in a normal exit; only
    freeing every object one by one is left out: after a big build (file records,
    manifests of ~10,000 entries) that took ~20 ms. A thread still running gets the normal
    shutdown, which waits for it.
    """
    import threading

    if threading.active_count() > 1:
        sys.exit(code)
    import atexit
    import contextlib
    import os

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(code)


def _run(argv: Sequence[str] | None) -> int:
    """Parse the arguments and run the chosen command."""
    _tolerant_output()
    parser = build_parser(only=command_word(argv))
    args, extra = parser.parse_known_args(argv)
    # Errors about a command's arguments show that command's usage.
    command_parser = getattr(args, "command_parser", parser)
    if extra and getattr(args, "handler", None) is cmd_deploy:
        # `stacks deploy DIR --target T LAYER...`: layers may follow the options too.
        if any(word.startswith("-") for word in extra):
            command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.layers = [*args.layers, *extra]
    elif extra:
        command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    apply_options(args)
    if getattr(args, "show", False):
        show_first(args)
    return int(args.handler(args) or 0)


def _tolerant_output() -> None:
    """Never crash on characters the terminal cannot encode."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def _print_error(exc: StacksError) -> None:
    print(f"error: {exc}", file=sys.stderr)
