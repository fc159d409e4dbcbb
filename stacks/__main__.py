"""`python -m stacks` runs the command-line interface."""

from stacks.cli.commands import console_main

console_main()
