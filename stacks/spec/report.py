"""What checking a spec reports: its problems and warnings in order, and the wording they share."""

from __future__ import annotations

import difflib
import re
import reprlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from stacks.errors import Problem


@dataclass
class SpecReport:
    """The problems and warnings found in one spec file, in the order they were found."""

    shown: str  # the spec file, as messages name it
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def problem(
        self, layer: str | None, fld: str | None, message: str, hint: str | None = None
    ) -> None:
        """Record a problem with a layer's field (None: the spec's top level, or the whole layer)."""
        self.problems.append(Problem(self.shown, layer, fld, message, hint))

    def warn(self, text: str) -> None:
        """Record a warning about the spec file."""
        self.warnings.append(f"{self.shown}: {text}")


def type_name(value: object) -> str:
    """What a spec value is, as messages say it ('a string', 'an array', 'null' ...)."""
    names = {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        list: "an array",
        dict: "a table",
    }
    if value is None:
        return "null"
    return names.get(type(value), f"a {type(value).__name__}")


_SHOWN = reprlib.Repr()
_SHOWN.maxstring = 80
_SHOWN.maxother = 80
_SHOWN.maxlevel = 3


def show(value: object) -> str:
    """A bounded repr of a spec value for messages (spec values can be huge or self-referential)."""
    try:
        return _SHOWN.repr(value)
    except ValueError:  # an integer too long to write in decimal (TOML hex, octal, binary)
        return f"<an integer of {value.bit_length()} bits>" if isinstance(value, int) else "<?>"


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A 'did you mean ...?' hint naming the choice closest to `word`, if one is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def toml_key(key: str) -> str:
    """`key` as written in a TOML table: bare if it can be, quoted otherwise."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_string(key)


def toml_string(text: str) -> str:
    """`text` as a TOML basic string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def toml_list(items: Sequence[str]) -> str:
    """`items` as a TOML array of strings."""
    return "[" + ", ".join(toml_string(item) for item in items) + "]"
