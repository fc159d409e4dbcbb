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
