"""A run builds only its own command's parser: the same arguments as the whole parser gives."""

from __future__ import annotations

import argparse

import pytest

from stacks.cli.parser import build_parser, command_word, subcommands

ARGVS = [
    ["export", "s.toml", "--include", "app-*", "--no-symlinks", "-n", "2", "--json"],
    ["publish", "s.toml", "--format", "tar.zst", "--tag-outputs", "--show"],
    ["lock", "s.toml", "--reset-lock", "x", "--no-index", "--clean"],
    ["local-export", "s.toml", "-v"],
    ["ci", "matrix", "s.toml", "--format", "github"],
    ["merge", "out", "a", "b"],
    ["deploy", "dir", "--target", "t", "layer"],
    ["verify", "--release", "r", "--json"],
    ["show", "s.toml", "--json"],
    ["init", "folder"],
]


def comparable(parsed: tuple[argparse.Namespace, list[str]]) -> tuple[dict[str, object], list[str]]:
    namespace, extra = parsed
    return {k: v for k, v in vars(namespace).items() if k != "command_parser"}, extra


@pytest.mark.parametrize("argv", ARGVS, ids=lambda argv: argv[0])
def test_one_commands_parser_parses_as_the_whole_parser(argv: list[str]) -> None:
    lazy = build_parser(only=command_word(argv))
    assert list(subcommands(lazy)) == [argv[0]]
    whole = build_parser()
    assert comparable(lazy.parse_known_args(argv)) == comparable(whole.parse_known_args(argv))


def test_anything_but_a_command_first_gets_the_whole_parser() -> None:
    every = list(subcommands(build_parser()))
    assert len(every) > 15
    for argv in (["-v", "export", "s.toml"], ["lokc"], [], ["--help"]):
        assert list(subcommands(build_parser(only=command_word(argv)))) == every


def test_a_ctrl_c_wrapped_by_class_creation_is_an_interruption(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Python 3.11 wraps a KeyboardInterrupt raised inside `__set_name__` (a Ctrl-C landing
    while a lazily imported module defines a dataclass) in a RuntimeError."""
    from stacks.cli import entry

    class Interrupted:
        def __set_name__(self, owner: type, name: str) -> None:
            raise KeyboardInterrupt

    def run(argv: object) -> int:
        try:
            type("Defined", (), {"field": Interrupted()})
        except KeyboardInterrupt:  # Python 3.12 and later: not wrapped
            raise RuntimeError("Error calling __set_name__") from KeyboardInterrupt()
        return 0

    monkeypatch.setattr(entry, "_run", run)
    assert entry.main(["show"]) == 130
    assert capsys.readouterr().err == "stacks: interrupted\n"

    def failing(argv: object) -> int:
        raise RuntimeError("a bug, not an interrupt")

    monkeypatch.setattr(entry, "_run", failing)
    with pytest.raises(RuntimeError, match="a bug"):
        entry.main(["show"])
