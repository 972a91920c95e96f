"""Shared test helpers: run the real `posture` command, start the lab of real daemons once per session."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scanner.db import is_url
from scanner.lab import Lab, PostgresLab
from scanner.store import sqlite_uri
from tests.scanner.sites_lab import sites_lab  # noqa: F401 - the fixture, for every test module

POSTURE = str(Path(sys.executable).parent / "posture")


def run_posture(
    *args: str,
    db: Path | str | None = None,
    env: dict[str, str] | None = None,
    netns: str | None = None,
    timeout: float = 300,
    process: bool = False,
    **kw: object,
) -> subprocess.CompletedProcess[str]:
    """Run posture as a user would, with `args` after `posture [--db DB]`.

    In this test process through click's CliRunner (the same command tree, options, exit codes, stdout
    and stderr; an unexpected exception's traceback appended to stderr as the interpreter would print it):
    a fresh `posture` costs 0.3-0.9 s of imports and data loading, hundreds of times over. The installed
    console script itself, in a child process, with `process=True`, inside a network namespace (`netns`),
    or for everything when POSTURE_TESTS_IN_PROCESS=0: the smoke set that keeps the real entry point
    honest (test_cli_help, test_install, test_cli_pipe, the interrupt and job tests call it directly too).
    """
    if netns and is_url(db):  # the namespace has a loopback of its own: the server's unix socket reaches it
        through_socket = _SOCKETS.get(str(db).split("@", 1)[1].split("/", 1)[0])
        db = through_socket(str(db)) if through_socket else db
    argv = [*(["--db", str(db)] if db else []), *args]
    if netns or process or os.environ.get("POSTURE_TESTS_IN_PROCESS") == "0" or set(kw) - {"input", "cwd"}:
        full_env = {**os.environ, **(env or {})}
        command = [*(["ip", "netns", "exec", netns] if netns else []), POSTURE, *argv]
        return subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=timeout, check=False, **kw)  # type: ignore[call-overload]
    return _in_process(argv, env or {}, kw.get("input"), kw.get("cwd"))  # type: ignore[arg-type]


def _in_process(
    argv: list[str], env: dict[str, str], stdin: str | None, cwd: Path | str | None
) -> subprocess.CompletedProcess[str]:
    """One `posture` command in this process, left as a finished child process would leave things: its
    run log closed, the working folder and the environment (`--system` sets POSTURE_SYSTEM for its
    children) restored, and no hook left reading its config file."""
    import traceback

    from click.testing import CliRunner

    from scanner.cli import cli
    from scanner.runlog import close_log
    from scanner.safefs import share_with

    here, environment = Path.cwd(), dict(os.environ)
    try:
        if cwd is not None:
            os.chdir(cwd)
        result = CliRunner().invoke(cli, argv, input=stdin, env=env, prog_name="posture", catch_exceptions=True)
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(environment)
        close_log()
        share_with(lambda: None)  # the command's [files] group hook reads its config: not the next test's
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "Traceback (most recent call last):\n" + "".join(traceback.format_exception(result.exception)[1:])
    return subprocess.CompletedProcess([POSTURE, *argv], result.exit_code, result.stdout, stderr)


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


def db_fingerprint(db: Path | str) -> str:
    """A digest of every row of every table: equal before and after means nothing was lost or changed. An
    SQLite file or a PostgreSQL URL (its rows in the order of all their columns)."""
    digest = hashlib.sha256()
    if is_url(db):
        from scanner.db import connect

        conn = connect(db, readonly=True)
        try:
            tables = [r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables WHERE "
                                                 "table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1")]
            for table in tables:
                width = len(conn.execute(f"SELECT * FROM {table} LIMIT 0").description)
                order = ", ".join(str(n + 1) for n in range(width))
                for row in conn.execute(f"SELECT * FROM {table} ORDER BY {order}"):
                    digest.update(repr((table, row)).encode())
            return digest.hexdigest()
        finally:
            conn.close()
    lite = sqlite3.connect(f"{sqlite_uri(Path(db))}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in lite.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        for table in tables:
            for row in lite.execute(f"SELECT * FROM {table} ORDER BY rowid"):
                digest.update(repr((table, row)).encode())
        return digest.hexdigest()
    finally:
        lite.close()


def assets_json(db: Path | str) -> list[dict[str, Any]]:
    """`posture assets --format json`, parsed."""
    result = run_posture("assets", "--format", "json", db=db)
    assert result.returncode == 0, result.stderr
    assets: list[dict[str, Any]] = json.loads(result.stdout)
    return assets


def query(db: Path | str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Rows of a read-only `?` statement, from an SQLite file or a PostgreSQL URL (scanner.db translates)."""
    if is_url(db):
        from scanner.db import connect

        store = connect(db, readonly=True)
        try:
            return [tuple(r) for r in store.execute(sql, params).fetchall()]
        finally:
            store.close()
    conn = sqlite3.connect(f"{sqlite_uri(Path(db))}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def assert_intact(db: Path | str) -> None:
    """The store is whole: SQLite's integrity and foreign-key checks pass (PostgreSQL checks its pages and
    every foreign key itself, at each commit, so there is nothing to ask it)."""
    if not is_url(db):
        assert query(db, "PRAGMA integrity_check") == [("ok",)]
        assert query(db, "PRAGMA foreign_key_check") == []


def execute(db: Path | str, sql: str, *params: object) -> None:
    """One `?` statement that changes the inventory behind posture's back (ageing a scan, say), committed, on
    an SQLite file or a PostgreSQL URL."""
    from scanner.db import connect

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


# Fixtures that start real daemons, simulators or network namespaces: a test using one is a `lab` test, so
# `pytest -m "not lab"` is the quick run (the full suite, the README's command, runs them all).
LAB_FIXTURES = frozenset({"lab", "lab_scan_db", "lab_scan_sqlite", "lab_scan_postgresql", "lab_job", "demo_sims",
                          "sims", "simlab", "sim_db", "snmpd", "empty_netns", "samba_dc", "directory_db", "lab_xml",
                          "smb_scan", "outside", "postgres", "sites_lab"})  # fmt: skip


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks (--dist loadgroup)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _deselect_other_stores(config, items)
    for item in items:
        # pytest-xdist (`-n`, with `--dist loadgroup` from pyproject.toml) runs a group on one worker, one
        # test after another: the lab's on fixed addresses all in one group, the rest a group per module
        # (a module's tests share the loopback addresses it binds, such as a fake agent's).
        item.add_marker(pytest.mark.xdist_group("fixed-addresses" if _on_fixed_addresses(item) else
                                                item.nodeid.split("::", 1)[0]))  # fmt: skip
        if LAB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.lab)


def _on_fixed_addresses(item: pytest.Item) -> bool:
    """Whether the test starts daemons on fixed loopback addresses (or namespaces), so that two such tests
    must never run at once. The tests' own PostgreSQL listens on a free port, so a test that is `lab` only
    because it runs on PostgreSQL runs anywhere."""
    names = set(getattr(item, "fixturenames", ()))
    if (LAB_FIXTURES - {"postgres"}) & names:
        return True
    from_param = [m for m in getattr(getattr(item, "callspec", None), "marks", ()) if m.name == "lab"]
    return len(list(item.iter_markers("lab"))) > len(from_param)


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


def _scan_lab(lab: Lab, db: Path | str) -> Path | str:
    result = run_posture("scan", *lab.targets, "--ports", lab.ports_spec, "--no-dns", db=db)
    assert result.returncode == 0, result.stderr
    assert f"Inventory: {db}" in result.stdout
    return db


@pytest.fixture(scope="session")
def lab_scan_sqlite(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real `posture scan` of the lab into an SQLite file: what a scan into PostgreSQL is compared with."""
    return Path(_scan_lab(lab, tmp_path_factory.mktemp("labscan") / "inventory.db"))


@pytest.fixture(scope="session")
def lab_scan_postgresql(lab: Lab, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The same scan straight into a PostgreSQL database (its URL)."""
    return str(_scan_lab(lab, new_store(request, "postgresql", tmp_path_factory.mktemp("labscan"))))


@pytest.fixture(scope="session")
def lab_scan_db(store_kind: str, request: pytest.FixtureRequest) -> Path | str:
    """One real `posture scan` of the lab on each store, shared by the tests that only read its result."""
    return Path(request.getfixturevalue("lab_scan_sqlite")) if store_kind == "sqlite" else str(
        request.getfixturevalue("lab_scan_postgresql"))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresLab]:
    """A real PostgreSQL of the tests' own on 127.107.0.1 and a free port: role and database `posture`, its
    password in `postgres.passfile`. PGPASSFILE names that file for the whole session (this process and the
    commands it starts), so the URLs of the stores the tests make carry no password."""
    with PostgresLab() as running, pytest.MonkeyPatch.context() as session_env:
        session_env.setenv("PGPASSFILE", str(running.passfile))
        where = f"{running.address}:{running.port}"
        socket = f"?host={running.socket_dir}&port={running.port}"
        _SOCKETS[where] = lambda url: url.replace(f"@{where}/", "@/") + socket
        try:
            yield running
        finally:
            del _SOCKETS[where]


# host:port of the session's PostgreSQL -> the same database's URL through its unix socket (run_posture's netns)
_SOCKETS: dict[str, Callable[[str], str]] = {}


# Every test that touches the inventory runs on both stores (issue 18: "every test that touches the store run
# against both"). It asks for `store_db` (a new, empty inventory per test) or, for a fixture that builds one
# inventory for a module, for `store_kind` and `new_store`. `store_kind` is a session fixture with one param
# per store, so pytest gives each test once per store and groups them by store. The PostgreSQL param is a
# `lab` test (it starts the tests' own server): the quick run, `-m "not lab"`, stays on SQLite. `--store`
# keeps one of the two.
STORES = ("sqlite", "postgresql")
_STORE_PARAMS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.lab)]

# A test that stays on SQLite while its module's fixtures run on both stores (they ask for `store_kind`): its
# PostgreSQL run is deselected. (Giving `store_kind` directly, "sqlite" only, would not do: pytest keeps a
# module fixture made for the other store's param and hands the test a PostgreSQL inventory.) Say why beside
# each use.
SQLITE_ONLY = pytest.mark.sqlite_only


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store", choices=(*STORES, "both"), default=os.environ.get("POSTURE_TEST_STORE") or "both",
        help="which store the tests that touch the inventory run on (also POSTURE_TEST_STORE): an SQLite file, "
             "a fresh database on the tests' own PostgreSQL, or both (the default)")  # fmt: skip


@pytest.fixture(scope="session", params=_STORE_PARAMS)
def store_kind(request: pytest.FixtureRequest) -> str:
    """The store this test runs on: "sqlite" or "postgresql"."""
    return str(request.param)


def _deselect_other_stores(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`--store sqlite|postgresql`: the other store's runs are deselected (reported as such, not skipped); so
    are the PostgreSQL runs of a test marked SQLITE_ONLY."""
    chosen = config.getoption("--store")
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        kind = getattr(getattr(item, "callspec", None), "params", {}).get("store_kind")
        other = kind is not None and chosen != "both" and kind != chosen
        (dropped if other or (kind == "postgresql" and item.get_closest_marker("sqlite_only")) else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def new_store(request: pytest.FixtureRequest, kind: str, folder: Path) -> Path | str:
    """An inventory that does not exist yet, of `kind`: `folder/inventory.db`, or the URL of a fresh, empty
    database on the session's PostgreSQL (C collation, as the store requires), dropped when `request`'s scope
    ends. The URL carries no password (PGPASSFILE is set for the session)."""
    if kind != "postgresql":
        return folder / "inventory.db"
    return _new_database(request, request.getfixturevalue("postgres"), _EMPTY)


def copy_store(request: pytest.FixtureRequest, db: Path | str, folder: Path) -> Path | str:
    """A copy of inventory `db` that a test may change: the SQLite file copied into `folder`, or a new
    PostgreSQL database made from `db` as its template (dropped when `request`'s scope ends)."""
    if not is_url(db):
        copy = folder / Path(db).name
        shutil.copy(db, copy)
        return copy
    return _new_database(request, request.getfixturevalue("postgres"), f"TEMPLATE {str(db).rsplit('/', 1)[1]}")


def _new_database(request: pytest.FixtureRequest, postgres: PostgresLab, how: str) -> str:
    """A database made on the session's PostgreSQL (`CREATE DATABASE name {how}`), dropped with `request`."""
    name = f"t_{os.getpid()}_{next(_DATABASES)}"
    with postgres.connect(autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} {how}")
    request.addfinalizer(lambda: _drop_database(postgres, name))
    return postgres.url.rsplit("/", 1)[0] + "/" + name


def _drop_database(postgres: PostgresLab, name: str) -> None:
    with postgres.connect(autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


_DATABASES = itertools.count(1)
_EMPTY = "TEMPLATE template0 LOCALE 'C' ENCODING 'UTF8'"  # C collation, as the store requires


@pytest.fixture
def pg_database(request: pytest.FixtureRequest, postgres: PostgresLab) -> str:
    """A fresh, empty PostgreSQL database, for the tests about PostgreSQL itself (whatever --store says). It
    names `postgres` as a fixture, not through getfixturevalue, so that its tests are `lab` tests."""
    return _new_database(request, postgres, _EMPTY)


@pytest.fixture
def store_db(request: pytest.FixtureRequest, store_kind: str, tmp_path: Path) -> Path | str:
    """An inventory that does not exist yet, on the store this run of the test is for: `tmp_path/inventory.db`
    or a fresh PostgreSQL database's URL."""
    return new_store(request, store_kind, tmp_path)

