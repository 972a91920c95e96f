"""The tests' own PostgreSQL (scanner.lab.PostgresLab): a real server, reached over TCP with a password,
refusing a wrong one, listening on its one loopback address only, and gone without a trace when stopped."""

from __future__ import annotations

import errno
import os
import pwd
import socket
import stat
import subprocess
from pathlib import Path

import psycopg
import pytest

from scanner.lab import PostgresLab


def _pgrep(tag: str) -> list[str]:
    """The processes whose command line names `tag` (pgrep -f), as "pid command" lines."""
    found = subprocess.run(["pgrep", "-a", "-f", tag], capture_output=True, text=True, check=False)
    assert found.returncode in (0, 1), found.stderr
    return found.stdout.splitlines()


def _tcp_listeners(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket process `pid` listens on, read from /proc: its socket inodes
    matched with the kernel's tables of IPv4 and IPv6 sockets in state LISTEN (0A)."""
    targets = [str(fd.readlink()) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    inodes = {target[8:-1] for target in targets if target.startswith("socket:[")}
    listening = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:
                address, port = local.split(":")
                raw = bytes.fromhex(address)
                if len(raw) == 4:
                    shown = socket.inet_ntop(socket.AF_INET, raw[::-1])
                else:  # four 32-bit words, each in host (little-endian) order
                    shown = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
                listening.add((shown, int(port, 16)))
    return listening


def test_connects_over_tcp_with_its_password(postgres: PostgresLab) -> None:
    """The url has no password; the pass file (0600) gives it; the session is TCP from loopback to the lab's
    address, authenticated by SCRAM; the server is a PostgreSQL of this machine running as no root."""
    assert postgres.url == f"postgresql://posture@127.107.0.1:{postgres.port}/posture"
    assert postgres.password not in postgres.url
    assert stat.S_IMODE(postgres.passfile.stat().st_mode) == 0o600
    with postgres.connect() as conn:
        row = conn.execute(
            "SELECT current_user, current_database(), host(inet_server_addr()), inet_server_port(), "
            "host(inet_client_addr()), current_setting('server_encoding'), current_setting('lc_collate'), "
            "current_setting('fsync'), (SELECT rolpassword FROM pg_authid WHERE rolname = current_user)"
        ).fetchone()
        assert row is not None
        user, database, server, port, client, encoding, collation, fsync, verifier = row
        assert (user, database, server, port, encoding, collation, fsync) == (
            "posture", "posture", "127.107.0.1", postgres.port, "UTF8", "C", "off"
        )  # fmt: skip
        assert client is not None and client.startswith("127.")
        assert verifier.startswith("SCRAM-SHA-256$")
        rules = conn.execute("SELECT type, auth_method FROM pg_hba_file_rules ORDER BY line_number").fetchall()
        assert rules == [("local", "scram-sha-256"), ("host", "scram-sha-256")]
        conn.execute("CREATE TEMP TABLE t (id bigint PRIMARY KEY, name text NOT NULL)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO t VALUES (%s, %s)", [(1, "a"), (2, "b")])
        assert conn.execute("SELECT string_agg(name, ',' ORDER BY id) FROM t").fetchone() == ("a,b",)
    assert postgres.pid is not None
    if os.geteuid() == 0:  # the server refuses root: it runs as Debian's postgres user
        assert Path(f"/proc/{postgres.pid}").stat().st_uid == pwd.getpwnam("postgres").pw_uid
    # The password was on no command line: not initdb's (it read a file), not the server's.
    for line in _pgrep(postgres.tag):
        assert postgres.password not in line


def test_refuses_a_wrong_password_or_none(postgres: PostgresLab, tmp_path: Path) -> None:
    empty = tmp_path / "empty.pgpass"
    empty.write_text("")
    empty.chmod(0o600)
    with pytest.raises(psycopg.OperationalError, match='password authentication failed for user "posture"'):
        psycopg.connect(postgres.url, password="not-" + postgres.password, connect_timeout=10)
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(postgres.url, passfile=str(empty), connect_timeout=10)
    with postgres.connect(password=postgres.password) as conn:  # the right one, given as a parameter
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_listens_on_its_loopback_address_only(postgres: PostgresLab) -> None:
    """One TCP listener, on 127.107.0.1 (nothing on 127.0.0.1, nothing on IPv6), and one unix socket, in the
    lab's own folder."""
    assert postgres.pid is not None
    assert _tcp_listeners(postgres.pid) == {("127.107.0.1", postgres.port)}
    with socket.socket() as s:
        s.settimeout(5)
        assert s.connect_ex(("127.0.0.1", postgres.port)) == errno.ECONNREFUSED
    with postgres.connect() as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.107.0.1",)
        assert conn.execute("SHOW unix_socket_directories").fetchone() == (str(postgres.socket_dir),)
    assert stat.S_ISSOCK((postgres.socket_dir / f".s.PGSQL.{postgres.port}").stat().st_mode)


@pytest.mark.lab
def test_stop_leaves_no_process_and_no_folder() -> None:
    """Stopped with a client still connected, the server and all its processes (its background workers and
    the client's backend, each a session of its own) are gone, and so is its folder."""
    with PostgresLab(address="127.107.0.2") as lab:
        conn = lab.connect()
        assert conn.execute("SELECT 1").fetchone() == (1,)
        running = _pgrep(lab.tag)
        assert len(running) >= 6, running  # the server, checkpointer, writers, launchers, this backend
        tag, root = lab.tag, lab.root
    try:
        assert _pgrep(tag) == []
        assert not root.exists()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    finally:
        conn.close()
