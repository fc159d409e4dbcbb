"""`python -m stacks` runs the command-line interface."""

from stacks.cli import console_main

console_main()
