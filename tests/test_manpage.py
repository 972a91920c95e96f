"""`posture man`: the manual page made from the command tree (scanner/manpage.py), rendered by groff as man(1)
would render it: every command of every stage is in it, plugins and lazily loaded groups included, and groff
finds nothing to warn about."""

from __future__ import annotations

import os
import subprocess

import click

from scanner.cli import _load_plugins, cli
from scanner.manpage import walk
from tests.conftest import run_posture


def test_the_page_renders_cleanly_and_names_every_command() -> None:
    made = run_posture("man")
    assert made.returncode == 0, made.stderr
    shown = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-P-cbou"], input=made.stdout, capture_output=True,
                           text=True, env={**os.environ, "LC_ALL": "C.UTF-8"}, check=True)  # fmt: skip
    assert shown.stderr == ""  # groff -ww: no warning of any kind (bad escapes, unknown requests)
    _load_plugins()
    ctx = click.Context(cli, info_name="posture")
    paths = [sub.command_path for sub, _ in walk(cli, ctx)]
    assert {"posture scan", "posture evaluate", "posture share", "posture import ad", "posture man"} <= set(paths)
    text = shown.stdout
    for path in paths:
        assert path in text, path
    assert "--targets-file" in text or "--top-ports" in text  # options of scan are listed with their help
    assert "POSTURE_DB" in text and "EXIT STATUS" in text


def test_hostile_help_text_cannot_become_troff_requests() -> None:
    """A plugin's help that starts a line with a dot or holds backslashes is printed, not executed."""
    from scanner.manpage import render

    @click.group()
    def root() -> None:
        """Root."""

    @root.command("evil")
    def evil() -> None:
        """First line.

        .so /etc/passwd
        \\fBnot bold\\fR and a \\ backslash"""

    page = render(root)
    shown = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-P-cbou"], input=page, capture_output=True, text=True,
                           env={**os.environ, "LC_ALL": "C.UTF-8"}, check=True)  # fmt: skip
    assert ".so /etc/passwd" in shown.stdout and "root:" not in shown.stdout
    assert "\\fBnot bold\\fR and a \\ backslash" in shown.stdout
