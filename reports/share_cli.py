"""`posture share`: the sector-sharing commands (issue 17). The group lists its commands by module so each
lives in its own file: `summary` (reports/share.py, an anonymised legacy-technology summary of this
inventory) and `aggregate` (reports/pool.py, pooling many councils' summaries)."""

from __future__ import annotations

import importlib

import click

_COMMANDS = {  # name -> "module:attribute"; a module not present yet is not listed
    "summary": "reports.share:summary_command",
    "aggregate": "reports.pool:aggregate_command",
}


class _ShareGroup(click.Group):
    """Loads each subcommand from its own module when asked for, so the group stays one small file."""

    def _load(self, name: str) -> click.Command | None:
        module_name, _, attribute = _COMMANDS[name].partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            return None
        command = getattr(module, attribute)
        assert isinstance(command, click.Command)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in _COMMANDS if self._load(name) is not None]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name) if cmd_name in _COMMANDS else None


@click.group("share", cls=_ShareGroup)
def share_group() -> None:
    """Share how many of what is ending when, with nothing that identifies a machine, and pool such
    summaries across councils for joint procurement.

    \b
    Examples:
      posture share summary --out summary.json --sign
      posture share aggregate summaries/*.json --out pooled/
    """
