"""The stack spec: reading a TOML/YAML spec, checking all of it, and the frozen model it becomes.

Everything outside this package imports the spec through these names.
"""

from stacks.spec.loader import load_spec
from stacks.spec.model import (
    RUNTIME_SOURCES,
    LayerKind,
    LayerSpec,
    RuntimeSource,
    StackSettings,
    StackSpec,
    module_name,
    normalise_package,
)
from stacks.spec.selection import select_layers

__all__ = [
    "RUNTIME_SOURCES",
    "LayerKind",
    "LayerSpec",
    "RuntimeSource",
    "StackSettings",
    "StackSpec",
    "load_spec",
    "module_name",
    "normalise_package",
    "select_layers",
]
