"""Every option and argument of every CLI command says what it is for (`--help`)."""

from __future__ import annotations

import argparse

from dynostore.cli import build_parser


def commands(parser: argparse.ArgumentParser, prefix: str = "dynostore") -> list[tuple[str, argparse.ArgumentParser]]:
    """``(name, parser)`` of the parser and of every sub-command below it."""
    found = [(prefix, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += commands(sub, f"{prefix} {name}")
    return found


def test_every_option_has_help() -> None:
    missing = [
        f"{name} {action.option_strings or action.dest}"
        for name, parser in commands(build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction | argparse._HelpAction) and not action.help
    ]
    assert missing == []


def test_every_command_has_help() -> None:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            assert all(helps.values()), helps
