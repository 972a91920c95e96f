"""Every command's --help has examples and fits an 80-column terminal (issue 16 item 5).

Run in-process over the real command tree, every stage's commands loaded through their entry points as
`posture` loads them: a command added without examples, or a hand-wrapped (\\b) block wider than a
terminal, fails here.
"""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest

from scanner.cli import _load_plugins, cli


def _commands(group: click.Group, path: list[str]) -> Iterator[tuple[str, click.Command]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # a group that loads its commands when asked (`posture share`) too
        command = group.get_command(ctx, name)
        assert command is not None, name
        if isinstance(command, click.Group):
            yield from _commands(command, [*path, name])
        else:
            yield " ".join([*path, name]), command


_load_plugins()
COMMANDS = sorted(_commands(cli, []), key=lambda pair: pair[0])


def test_the_tree_is_whole() -> None:
    names = {name for name, _ in COMMANDS}
    assert {"scan", "evaluate", "report", "plan remediation", "agent collect", "import ad", "browse"} <= names, names


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_help_has_examples_and_fits_80_columns(name: str, command: click.Command) -> None:
    ctx = click.Context(command, info_name=f"posture {name}", terminal_width=80, max_content_width=80)
    text = command.get_help(ctx)
    assert "Examples:" in text
    examples = text.split("Examples:", 1)[1]
    assert f"posture {name.split()[0]}" in examples or "posture --" in examples  # examples of this command
    wide = [line for line in text.splitlines() if len(line) > 80]
    assert wide == []
