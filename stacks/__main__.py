"""`python -m stacks` runs the command-line interface."""

from stacks.startup import quit_on_ctrl_c

restore_sigint = quit_on_ctrl_c()  # first: the imports below take a while

from stacks.cli.entry import console_main  # noqa: E402

console_main(restore_sigint=restore_sigint)
