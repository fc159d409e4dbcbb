"""The `stacks` command line."""

from stacks.cli.entry import console_main, main

__all__ = ["console_main", "main"]
