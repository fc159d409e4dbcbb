"""Reading a spec file: TOML or YAML (by extension), syntax errors with their line, files on disk."""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

from stacks.errors import Problem, SpecError
from stacks.spec.report import show, type_name

MAX_SPEC_BYTES = 16 * 2**20  # far above any real spec; bounds what a wrong path can cost


def read_document(path: Path) -> dict[str, Any]:
    """Parse the spec file into a dict, turning syntax errors into a SpecError with the line."""
    shown = str(path)
    raw = read_spec_bytes(path, shown)
    try:
        text = raw.decode("utf-8-sig")  # tolerate the BOM some Windows editors write
    except UnicodeDecodeError as exc:
        raise SpecError(
            [Problem(shown, None, None, f"not UTF-8 text (byte {exc.start})")]
        ) from None
    if path.suffix.lower() in (".yaml", ".yml"):
        document = _parse_yaml(shown, text)
    elif path.suffix.lower() == ".toml":
        document = parse_toml(shown, text)
    else:
        try:
            document = parse_toml(shown, text)
        except SpecError as exc:
            here = f"'{path.suffix}'" if path.suffix else "no extension"
            hint = (
                "the format is chosen by extension: .yaml or .yml is read as YAML, anything"
                f" else (here {here}) as TOML; rename a YAML spec to .yaml"
            )
            raise SpecError([replace(p, hint=p.hint or hint) for p in exc.problems]) from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise SpecError(
            [Problem(shown, None, None, f"the document must be a table, not {type_name(document)}")]
        )
    return document


def read_spec_bytes(path: Path, shown: str) -> bytes:
    """The bytes of a spec file: a regular file of at most MAX_SPEC_BYTES, else a SpecError.

    It is opened without blocking and checked before it is read, so a FIFO, a device such
    as /dev/zero or a huge file is refused instead of hanging or filling memory.
    """

    def refuse(message: str, hint: str | None = None) -> SpecError:
        return SpecError([Problem(shown, None, None, message, hint)])

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise refuse("spec file not found", "check the path") from None
    except IsADirectoryError:
        raise refuse("is a folder, not a spec file") from None
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise refuse(f"cannot read spec file: {why}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise refuse("is a folder, not a spec file")
        raise refuse(
            "is not a regular file (a pipe, socket or device)",
            "save the spec to a file and pass its path",
        )
    with os.fdopen(fd, "rb") as handle:
        try:
            raw = handle.read(MAX_SPEC_BYTES + 1)
        except OSError as exc:
            raise refuse(f"cannot read spec file: {exc.strerror or exc}") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise refuse(
            f"is larger than {MAX_SPEC_BYTES // 2**20} MiB, the most a spec file may be",
            "a stack spec is a few kilobytes: check that this is the right file",
        )
    return raw


def parse_toml(shown: str, text: str) -> Any:
    """Parse TOML text; a syntax error becomes a SpecError naming `shown` and the line."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        line = getattr(exc, "lineno", None)
        column = getattr(exc, "colno", None)
        match = re.search(r"\(at line (\d+), column (\d+)\)", message)
        if line is None and match:
            line, column = int(match.group(1)), int(match.group(2))
        if line is None and "(at end of document)" in message:
            line = max(1, len(text.splitlines()))
        message = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", message)
        where = f"{shown}:{line}" if line else shown
        if line and column:
            where += f":{column}"
        raise SpecError([Problem(where, None, None, f"TOML syntax error: {message}")]) from None
    except ValueError as exc:  # an integer with more digits than Python converts
        raise SpecError(
            [
                Problem(
                    shown,
                    None,
                    None,
                    f"TOML value error: {exc}".split(";")[0],
                    "no spec field takes a number that long: shorten it (or quote it)",
                )
            ]
        ) from None
    except RecursionError:
        raise SpecError([Problem(shown, None, None, "TOML document nested too deeply")]) from None


def _parse_yaml(shown: str, text: str) -> Any:
    """Parse YAML text (plain data, no duplicate keys); an error becomes a SpecError with the line."""
    import yaml

    class DuplicateKey(yaml.MarkedYAMLError):
        """A key given twice in one mapping (YAML would keep the last; TOML rejects it)."""

    class ValueMarkingLoader(yaml.SafeLoader):
        """SafeLoader that blames bad tagged values (`!!int x`, `2021-13-45`) on their line,
        and rejects duplicate keys."""

        def construct_object(self, node: Any, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep)
            except (ValueError, KeyError, TypeError, OverflowError) as exc:
                raise yaml.constructor.ConstructorError(
                    None, None, f"cannot read {show(node.value)}: {exc}", node.start_mark
                ) from None

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                first_line: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue  # `<<: *base` entries may be overridden: that is their point
                    key = self.construct_object(key_node, deep=True)
                    try:
                        seen = key in first_line
                    except TypeError:
                        continue  # an unhashable key: the base class reports it
                    if seen:
                        raise DuplicateKey(
                            problem=f"duplicate key {show(key)} (first on line {first_line[key]})",
                            problem_mark=key_node.start_mark,
                        )
                    first_line[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep)

    try:
        return yaml.load(text, Loader=ValueMarkingLoader)  # a SafeLoader: plain data only
    except DuplicateKey as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        raise SpecError(
            [
                Problem(
                    f"{shown}:{line}",
                    None,
                    None,
                    f"YAML error: {exc.problem}",
                    "remove one of them (YAML would silently keep the last one)",
                )
            ]
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{shown}:{mark.line + 1}" if mark is not None else shown
        message = " ".join(p for p in (exc.context, exc.problem) if p)
        kind = "value" if isinstance(exc, yaml.constructor.ConstructorError) else "syntax"
        raise SpecError([Problem(where, None, None, f"YAML {kind} error: {message}")]) from None
    except yaml.YAMLError as exc:
        raise SpecError([Problem(shown, None, None, f"YAML error: {exc}")]) from None
    except RecursionError:
        raise SpecError([Problem(shown, None, None, "YAML document nested too deeply")]) from None


def path_kind(path: Path) -> str:
    """'file', 'dir', 'other', 'missing', or 'unusable: <why>' (too long, no permission ...)."""
    try:
        mode = path.stat().st_mode
    except ValueError:  # an embedded NUL or an unencodable character
        return "missing"
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return "missing"
        return f"unusable: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    return "other"
