"""Every command's --help has examples and fits an 80-column terminal (issue 16 item 5).

Run in-process over the real command tree, every stage's commands loaded through their entry points as
`posture` loads them: a command added without examples, or a hand-wrapped (\\b) block wider than a
terminal, fails here.
"""

from __future__ import annotations

import click
import pytest

from scanner.cli import _load_plugins, cli
from scanner.manpage import walk

_load_plugins()
COMMANDS = [(sub.command_path.removeprefix("posture "), command)
            for sub, command in walk(cli, click.Context(cli, info_name="posture"))
            if not isinstance(command, click.Group)]  # lazy groups (`share`) asked as `posture` asks them


def test_the_tree_is_whole() -> None:
    names = {name for name, _ in COMMANDS}
    assert {"scan", "evaluate", "report", "plan remediation", "agent collect", "import ad", "browse",
            "share summary", "run", "schedule install", "demo"} <= names, names  # the last: the application layer


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_help_has_examples_and_fits_80_columns(name: str, command: click.Command) -> None:
    ctx = click.Context(command, info_name=f"posture {name}", terminal_width=80, max_content_width=80)
    text = command.get_help(ctx)
    assert "Examples:" in text
    examples = text.split("Examples:", 1)[1]
    assert f"posture {name.split()[0]}" in examples or "posture --" in examples  # examples of this command
    wide = [line for line in text.splitlines() if len(line) > 80]
    assert wide == []


def test_the_documented_bash_completion_works() -> None:
    """The README's line for ~/.bashrc registers a completion, and it completes lazily loaded commands."""
    import os
    import subprocess
    from pathlib import Path

    from tests.conftest import POSTURE

    env = {**os.environ, "PATH": f"{Path(POSTURE).parent}:{os.environ['PATH']}"}
    shown = subprocess.run(["bash", "-c", 'eval "$(_POSTURE_COMPLETE=bash_source posture)" && complete -p posture'],
                           capture_output=True, text=True, env=env, check=False)  # fmt: skip
    assert shown.returncode == 0 and "posture" in shown.stdout, shown.stderr
    asked = subprocess.run([POSTURE], capture_output=True, text=True, check=False,
                           env={**env, "_POSTURE_COMPLETE": "bash_complete", "COMP_WORDS": "posture plan ",
                                "COMP_CWORD": "2"})  # fmt: skip
    assert asked.stdout.split() == ["plain,decommission", "plain,investigate", "plain,procurement",
                                    "plain,remediation"]  # fmt: skip


def test_config_help_names_every_table() -> None:
    """`posture config --help` lists every table `config check` accepts, the later stages' included."""
    from scanner import config

    config.check_config({"report": {}}, "[report]\n", "x.toml")  # loads the stages' tables
    group = cli.get_command(click.Context(cli), "config")
    assert group is not None and group.help is not None
    for table in ["scan", "log", "files", "directory", *config._TABLES]:
        assert f"[{table}]" in group.help, table
