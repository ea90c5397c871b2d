"""Every subcommand's --help says what it does, what each flag does, and each flag's default."""

from __future__ import annotations

import argparse

import pytest

from tunelab import cli

NO_DEFAULT = (None, False, [], "", argparse.SUPPRESS)


def _parsers(name: str) -> list[tuple[str, argparse.ArgumentParser]]:
    """The command's parser and those of its actions (`data check`, `bench serve`)."""
    _, chosen = cli._build_parser(name)
    found = [(name, chosen)]
    for action in chosen._actions:
        if isinstance(action, argparse._SubParsersAction):
            found += [(f"{name} {sub}", p) for sub, p in action.choices.items()]
    return found


def _problems(label: str, parser: argparse.ArgumentParser) -> list[str]:
    out = [] if parser.description else [f"{label}: no description"]
    helped = {a.dest for a in parser._actions if a.help not in (None, "", argparse.SUPPRESS)}
    for action in parser._actions:
        flag = "/".join(action.option_strings) or action.dest
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or (
                action.dest in helped and action.help == argparse.SUPPRESS):
            continue  # a hidden spelling of a flag that has help
        if action.help in (None, ""):
            out.append(f"{label} {flag}: no help")
        elif action.default not in NO_DEFAULT and "default" not in action.help:
            out.append(f"{label} {flag}: default {action.default!r} not shown")
    return out


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_flag_has_help_and_its_default(name):
    problems = [p for label, parser in _parsers(name) for p in _problems(label, parser)]
    assert not problems, "\n".join(problems)


def test_help_of_every_command_prints(capsys):
    for name in cli.COMMANDS:
        with pytest.raises(SystemExit) as done:
            cli.parse([name, "--help"])
        assert done.value.code == 0
        shown = " ".join(capsys.readouterr().out.split())
        assert cli.COMMANDS[name][1] in shown  # the description leads the help
