"""A small TOML writer for tests: any nested dict/list/scalar document as TOML 1.0.

Tables nested in arrays become inline tables, so every document is written as
top-level `key = value` lines; what it writes reads back equal with `tomllib`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f"}
_ESCAPES["\r"] = "\\r"


def dumps(document: Mapping[str, Any]) -> str:
    """The TOML text of `document` (string keys; str, int, float, bool, date, list, dict values)."""
    return "".join(f"{key_text(key)} = {value_text(value)}\n" for key, value in document.items())


def key_text(key: str) -> str:
    """A TOML key: bare when it can be, quoted otherwise."""
    if not isinstance(key, str):
        raise TypeError(f"TOML keys are strings, not {type(key).__name__}")
    return key if _BARE_KEY.fullmatch(key) else string_text(key)


def string_text(text: str) -> str:
    """A TOML basic string."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def value_text(value: Any) -> str:
    """A TOML value, with tables inline."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return string_text(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(value_text(item) for item in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{key_text(k)} = {value_text(v)}" for k, v in value.items())
        return "{" + items + "}" if items else "{}"
    raise TypeError(f"no TOML form for {type(value).__name__}")
