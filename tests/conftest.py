"""Shared test helpers: run the real `posture` command, start the lab of real daemons once per session."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scanner.lab import Lab
from scanner.store import sqlite_uri

POSTURE = str(Path(sys.executable).parent / "posture")


def run_posture(
    *args: str,
    db: Path | None = None,
    env: dict[str, str] | None = None,
    netns: str | None = None,
    timeout: float = 300,
    **kw: object,
) -> subprocess.CompletedProcess[str]:
    """Run the installed console script, as a user would (inside network namespace `netns` if given)."""
    full_env = {**os.environ, **(env or {})}
    argv = [*(["ip", "netns", "exec", netns] if netns else []), POSTURE, *(["--db", str(db)] if db else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=timeout, check=False, **kw)  # type: ignore[call-overload]


def on_a_terminal(argv: list[str], env: dict[str, str], stdout: Any = None, timeout: float = 300) -> str:
    """Run `argv` with stderr (and stdout, unless given a file) on a real pseudo-terminal; everything the
    terminal received. The child must exit 0."""
    import pty

    main, child = pty.openpty()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=child if stdout is None else stdout,
                                stderr=child, env={**os.environ, **env})  # fmt: skip
        os.close(child)
        seen = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(timeout=timeout) == 0, seen
        return seen.decode(errors="replace")
    finally:
        os.close(main)


def db_fingerprint(db: Path) -> str:
    """A digest of every row of every table: equal before and after means nothing was lost or changed."""
    conn = sqlite3.connect(f"{sqlite_uri(db)}?mode=ro", uri=True)
    try:
        digest = hashlib.sha256()
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        for table in tables:
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY rowid"):
                digest.update(repr((table, row)).encode())
        return digest.hexdigest()
    finally:
        conn.close()


def assets_json(db: Path) -> list[dict[str, Any]]:
    """`posture assets --format json`, parsed."""
    result = run_posture("assets", "--format", "json", db=db)
    assert result.returncode == 0, result.stderr
    assets: list[dict[str, Any]] = json.loads(result.stdout)
    return assets


def query(db: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"{sqlite_uri(db)}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


# Fixtures that start real daemons, simulators or network namespaces: a test using one is a `lab` test, so
# `pytest -m "not lab"` is the quick run (the full suite, the README's command, runs them all).
LAB_FIXTURES = frozenset({"lab", "lab_scan_db", "lab_job", "demo_sims", "sims", "simlab", "sim_db", "snmpd",
                          "empty_netns", "samba_dc", "directory_db", "lab_xml", "smb_scan", "outside"})  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if LAB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.lab)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own XDG folders: no default inventory, vault or catalogue update leaks in or out."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))
    # --system's folders (/etc/posture, /var/lib/posture) under a root of the test's own: never the real ones
    monkeypatch.setenv("POSTURE_SYSTEM_ROOT", str(home / "system-root"))
    for name in ("POSTURE_DB", "POSTURE_KEY", "POSTURE_CONFIG", "POSTURE_VAULT", "POSTURE_SYSTEM", "POSTURE_LOG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """Real sshd, nginx and vsftpd on 127.0.0.21-23."""
    with Lab() as running:
        yield running


@pytest.fixture(scope="session")
def lab_scan_db(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real `posture scan` of the lab, shared by the tests that only read its result."""
    db = tmp_path_factory.mktemp("labscan") / "inventory.db"
    result = run_posture("scan", *lab.targets, "--ports", lab.ports_spec, "--no-dns", db=db)
    assert result.returncode == 0, result.stderr
    return db
