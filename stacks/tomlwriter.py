"""A small, deterministic TOML writer for the files stacks generates (pylocks, uv projects)."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def dumps(document: Mapping[str, Any], *, inline_arrays: Collection[str] = ()) -> str:
    """TOML text for `document`, keys in insertion order.

    Tables become `[a.b]` sections and arrays of tables `[[a.b]]` sections, except arrays
    whose key is in `inline_arrays`: those are written as one inline table per line.
    """
    lines: list[str] = []
    _table(lines, (), document, frozenset(inline_arrays))
    return "\n".join(lines).strip("\n") + "\n"


def _table(
    lines: list[str], path: tuple[str, ...], table: Mapping[str, Any], inline: frozenset[str]
) -> None:
    sections: list[tuple[str, Any]] = []
    for key, value in table.items():
        if value is None:
            continue
        if isinstance(value, Mapping) or (_is_table_array(value) and key not in inline):
            sections.append((key, value))
        elif _is_table_array(value):
            lines.append(f"{_key(key)} = [")
            lines.extend(f"    {_inline(item)}," for item in value)
            lines.append("]")
        else:
            lines.append(f"{_key(key)} = {_inline(value)}")
    for key, value in sections:
        child = (*path, key)
        header = ".".join(_key(part) for part in child)
        if isinstance(value, Mapping):
            if _has_own_values(value, inline):
                lines.extend(["", f"[{header}]"])
            _table(lines, child, value, inline)
        else:
            for item in value:
                lines.extend(["", f"[[{header}]]"])
                _table(lines, child, item, inline)


def _has_own_values(table: Mapping[str, Any], inline: frozenset[str]) -> bool:
    """Whether a table needs its own header (it has values that are not sub-tables)."""
    return not table or any(
        value is not None
        and not isinstance(value, Mapping)
        and not (_is_table_array(value) and key not in inline)
        for key, value in table.items()
    )


def _is_table_array(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and bool(value)
        and all(isinstance(item, Mapping) for item in value)
    )


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


def _string(text: str) -> str:
    # A JSON string is a valid TOML basic string (same escapes, \uXXXX for controls).
    return json.dumps(text, ensure_ascii=False)


def _inline(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, Mapping):
        items = [f"{_key(k)} = {_inline(v)}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(_inline(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
