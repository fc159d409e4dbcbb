"""stacks: build layered, relocatable Python environment stacks."""

__version__ = "0.1.0"
