"""Every option and argument of every `harness` sub-command has help text."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from harness.cli import build_parser


def _parsers(
    parser: argparse.ArgumentParser, path: str = "harness"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:  # argparse has no public walk of its tree
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, f"{path} {name}")


def test_every_cli_option_has_help() -> None:
    missing = [
        f"{path}: {'/'.join(action.option_strings) or action.dest}"
        for path, parser in _parsers(build_parser())
        for action in parser._actions
        if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) and not action.help
    ]
    assert missing == []


def test_the_walk_reaches_every_sub_command() -> None:
    paths = [path for path, _ in _parsers(build_parser())]
    assert {"harness gguf build", "harness modelfile check", "harness load", "harness report"} <= set(paths)
