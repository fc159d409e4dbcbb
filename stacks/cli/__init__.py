"""The `stacks` command line; importing this package stays light (see `console_main`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

from stacks.startup import quit_on_ctrl_c

if TYPE_CHECKING:
    from collections.abc import Sequence


def console_main() -> NoReturn:
    """The `stacks` entry point: run the command line and exit with its code.

    The command line's modules are imported only here, after `quit_on_ctrl_c`: a Ctrl-C
    during those imports exits 130 with one line instead of an import's traceback.
    """
    restore_sigint = quit_on_ctrl_c()
    from stacks.cli.entry import console_main as run

    run(restore_sigint=restore_sigint)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default: the process's arguments); return the exit code."""
    from stacks.cli.entry import main as run

    return run(argv)


__all__ = ["console_main", "main"]
