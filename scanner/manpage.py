"""posture(1): a man page written from the click command tree, so it never disagrees with `--help`.

`posture man` prints it (`posture man > posture.1; man -l posture.1`; a package build writes it to
share/man/man1). It is made from the commands themselves rather than kept as a file: the later stages'
commands come from entry points, and a page written by hand or frozen at build time would miss a plugin's.
One page for the whole tool (as git's and ip's overviews are), each command a subsection, found with `/`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import click

from scanner import __version__

ENVIRONMENT = (
    ("POSTURE_DB", "The inventory database, as --db."),
    ("POSTURE_CONFIG", "The config file, as --config."),
    ("POSTURE_SYSTEM", "1: use the service's files, as --system (the scheduled units set it)."),
    ("POSTURE_KEY", "The vault key (base64), instead of the key file beside the credentials."),
    ("POSTURE_VAULT", "The encrypted credentials file."),
    ("POSTURE_LOG", "The run log file of unattended commands (run, import bundle)."),
    ("POSTURE_DB_TIMEOUT", "Seconds to wait for another run's write lock (default 30)."),
    ("NO_COLOR", "Any value: no colour in progress bars (https://no-color.org)."),
)
EXIT_STATUS = (
    ("0", "Done."),
    ("1", "evaluate --fail-on: findings at or above that severity are open."),
    ("2", "Bad input or setup: the message says what and how to fix it; nothing was changed."),
    ("3", "Nothing answered: no host or device was found."),
    ("130", "Interrupted: what was finished is kept (scan --resume)."),
)


def walk(group: click.Group, ctx: click.Context) -> Iterator[tuple[click.Context, click.Command]]:
    """Every command under `group`, depth first in name order, each with its own context (for its usage
    line); lazy groups (plugins, `share`) are asked by name as `posture` itself asks them."""
    for name in sorted(group.list_commands(ctx)):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub = click.Context(command, info_name=name, parent=ctx)
        yield sub, command
        if isinstance(command, click.Group):
            yield from walk(command, sub)


def _text(value: str) -> str:
    """Text for troff: backslashes doubled, and a line starting with . or ' escaped so it is not a request."""
    lines = []
    for line in value.replace("\\", "\\e").splitlines():
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def _help(command: click.Command) -> list[str]:
    """The command's help as paragraphs; click's \\b blocks (examples, lists) kept as they are laid out."""
    out: list[str] = []
    for block in (command.help or "").strip().split("\n\n"):
        lines = [line.strip() if not block.lstrip().startswith("\b") else line for line in block.splitlines()]
        if lines and lines[0].strip() == "\b":
            out += [".PP", ".nf", ".RS 4", _text("\n".join(lines[1:])), ".RE", ".fi"]
        else:
            out += [".PP", _text(" ".join(line.strip() for line in lines))]
    return out


def _options(command: click.Command, ctx: click.Context) -> list[str]:
    out: list[str] = []
    for param in command.get_params(ctx):
        if isinstance(param, click.Argument):  # named in the usage line; the help text says what they are
            continue
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, helptext = record
        out += [".TP", f"\\fB{_text(names)}\\fR", _text(helptext or "")]
    return out


def render(root: click.Group, today: date | None = None) -> str:
    """The whole page, troff `man` macros, for `root` (posture's command group)."""
    ctx = click.Context(root, info_name="posture", terminal_width=80, max_content_width=80)
    day = (today or date.today()).isoformat()
    out = [f'.TH POSTURE 1 "{day}" "posture {__version__}" "posture manual"', ".SH NAME",
           "posture \\- find what is on your network, what it runs, and what is out of support",
           ".SH SYNOPSIS", "\\fBposture\\fR [\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
           ".SH DESCRIPTION", *_help(root), ".SH GLOBAL OPTIONS", *_options(root, ctx), ".SH COMMANDS"]  # fmt: skip
    for sub, command in walk(root, ctx):
        path = sub.command_path
        out += [f".SS {_text(path)}"]
        if isinstance(command, click.Group):
            out += [".PP", _text(command.get_short_help_str(200))]
            continue
        pieces = " ".join(command.collect_usage_pieces(sub))
        out += [".PP", f"\\fB{_text(path)}\\fR {_text(pieces)}", *_help(command), *_options(command, sub)]
    out += [".SH ENVIRONMENT"]
    for name, meaning in ENVIRONMENT:
        out += [".TP", f"\\fB{name}\\fR", meaning]
    out += [".SH EXIT STATUS"]
    for code, meaning in EXIT_STATUS:
        out += [".TP", f"\\fB{code}\\fR", meaning]
    out += [".SH FILES", ".TP", "~/.config/posture/config.toml, ~/.local/share/posture/inventory.db",
            "A person's config and inventory (XDG paths).", ".TP",
            "/etc/posture/config.toml, /var/lib/posture/inventory.db, /var/log/posture/",
            "The service's, with --system.", ".SH SEE ALSO", "\\fBnmap\\fR(1), \\fBsnmpwalk\\fR(1)"]  # fmt: skip
    return "\n".join(out) + "\n"
