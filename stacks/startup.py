"""Start-up of the command line: a Ctrl-C before it can handle one ends it quietly."""

# `_signal` is the C module `signal` wraps: importing `signal` itself builds enums
# (milliseconds during which a Ctrl-C would still print a traceback). `os` is already
# imported by the interpreter's start-up. No `from __future__` import: it costs one more.
import _signal
import os


def quit_on_ctrl_c() -> bool:
    """Make Ctrl-C end the process at once (exit 130, one line); return whether it was set.

    For the imports of the command line: nothing has been done yet, so there is nothing to
    clean up, and a KeyboardInterrupt raised inside an import would print a traceback. Not
    set when SIGINT is ignored (a background job) or handled by an embedding program. The
    command line sets `signal.default_int_handler` back once it handles Ctrl-C itself.
    """
    if _signal.getsignal(_signal.SIGINT) is not _signal.default_int_handler:
        return False
    _signal.signal(_signal.SIGINT, _interrupted_while_starting)
    return True


def _interrupted_while_starting(signum: int, frame: object) -> None:
    os.write(2, b"stacks: interrupted\n")
    os._exit(130)
