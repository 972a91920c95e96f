"""Helpers for the tests of rules/, reports/ and security/ that run on both stores (issue 18): a change
made behind posture's back, "no inventory was made", and a mark for a test that stays on SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanner.db import connect, is_url
from tests.conftest import query


def execute(db: Path | str, sql: str, *params: object) -> None:
    """One `?` statement that changes the inventory behind posture's back (an older posture's rows, a forged
    finding), committed, on an SQLite file or a PostgreSQL URL."""
    store = connect(db)
    try:
        with store.transaction():
            store.execute(sql, params)
    finally:
        store.close()


def no_inventory(db: Path | str) -> bool:
    """Nothing was made: no SQLite file at the path, or not one table in the PostgreSQL database."""
    if is_url(db):
        return query(db, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'") == [(0,)]
    return not Path(db).exists()


# A test that stays on SQLite while its module's fixtures run on both stores (they ask for `store_kind`):
# `store_kind` given directly, "sqlite" only, replaces the session fixture's two params for that test (and
# `--store postgresql` deselects it). Say why beside each use.
SQLITE_ONLY = pytest.mark.parametrize("store_kind", ["sqlite"], scope="session")
