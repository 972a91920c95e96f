"""`posture browse`: the inventory in Datasette, read-only, on this machine only.

Datasette (an optional extra: `pip install 'posture-scanner[browse]'`) gives a person tables, facets and SQL
over the inventory without writing any; posture adds the metadata that makes it readable (what each view and
column means, and canned queries: unsupported systems by owner, end of life in the next 12 months, unknown
coverage: `reports/datasette/metadata.json`). The views it starts from (asset_status, open_findings,
eol_by_year) are created by `posture evaluate` (rules/identities.py).

It listens on 127.0.0.1 only (an inventory says which machines are unsupported: not for the network), opens
the file read-only (Datasette's own `mode=ro` for a database it may not write), and is started with an
argument list, never a shell.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from scanner.errors import PostureError

METADATA = Path(__file__).parent / "datasette" / "metadata.json"


def metadata_for(db: Path) -> dict[str, Any]:
    """The shipped metadata with its database section under this file's name (Datasette names a database
    after its file: demo.db is "demo")."""
    data: dict[str, Any] = json.loads(METADATA.read_text(encoding="utf-8"))
    data["databases"] = {db.stem: data["databases"]["*"]}
    return data


def datasette_argv(db: Path, metadata: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "datasette", "serve", str(db), "--host", "127.0.0.1", "--port", str(port),
            "--metadata", str(metadata), "--setting", "sql_time_limit_ms", "5000"]  # fmt: skip


@click.command("browse")
@click.option("--port", type=click.IntRange(1024, 65535), default=8001, show_default=True,
              help="Port on 127.0.0.1 (only this machine can connect).")  # fmt: skip
@click.pass_context
def browse(ctx: click.Context, port: int) -> None:
    """Open the inventory in Datasette (read-only, on 127.0.0.1) with tables and columns explained and
    canned queries: unsupported systems by owner, end of life in the next 12 months, unknown coverage.

    Needs the browse extra (pip install 'posture-scanner[browse]') and an evaluated inventory.

    \b
    Examples:
      posture browse                      then open http://127.0.0.1:8001/
      posture --db demo.db browse --port 8002
    """
    from scanner.command import db_path, open_store
    from scanner.db import is_url

    if is_url(db_path(ctx)):
        raise PostureError("posture browse reads an SQLite file (Datasette), not PostgreSQL",
                           "query PostgreSQL's views (asset_status, open_findings, eol_by_year) with psql")  # fmt: skip
    if importlib.util.find_spec("datasette") is None:
        raise PostureError("Datasette is not installed", "pip install 'posture-scanner[browse]' (or datasette)")
    with open_store(ctx, readonly=True) as store:
        path = Path(store.path)
        views = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'view'")}
    if "asset_status" not in views:
        raise PostureError(f"{path} has no views yet", "run `posture evaluate` once: it creates them")
    folder = Path(tempfile.mkdtemp(prefix="posture-browse-"))
    metadata = folder / "metadata.json"
    metadata.write_text(json.dumps(metadata_for(path)), encoding="utf-8")
    click.echo(f"Datasette on http://127.0.0.1:{port}/{path.stem} (read-only; Ctrl-C stops it)", err=True)
    sys.stdout.flush()
    # replaces this process (Ctrl-C reaches Datasette); an argument list, no shell
    os.execv(sys.executable, datasette_argv(path, metadata, port))  # noqa: S606
