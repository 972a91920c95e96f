"""Two sites and their collectors in network namespaces this test makes (issue 18's test): `posture serve` in
the central namespace (127.0.0.1 and the sites' links, TLS with a certificate the lab makes, PostgreSQL through
its unix socket), a collector in each site's namespace scanning its own LAN's real daemons through the queue; a
collector whose link is cut keeps its result in its outbox and uploads it when the link is back; a collector
killed with SIGKILL mid-chunk leaves it to be given out again; a key trusted for one site is refused for the
other. The topology is tests/scanner/sites_lab.py's."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scanner.lab import PostgresLab
from tests.conftest import POSTURE, query, run_posture
from tests.scanner.sites_lab import SERVER_PORT, Site, SitesLab, socket_url
from tests.scanner.test_collectors import home, signing_line

STALLED_AFTER = 6


class Collector:
    """A `posture collector` running in its site's namespace, its log lines read as they come."""

    def __init__(self, lab: SitesLab, site: Site, env: dict[str, str], *args: str) -> None:
        self.lines: list[str] = []
        self.process = lab.exec(site.ns, [POSTURE, "collector", "--server", site.server_url, "--site", site.name,
                                          "--scope", site.scope, "--ca", str(lab.ca), "--poll", "0.5", *args],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def log(self) -> str:
        return "\n".join(self.lines)

    def finish(self, timeout: float = 30) -> str:
        """Its standard output, once it has ended; its pipes closed."""
        self.process.wait(timeout)
        self.reader.join(timeout)
        assert self.process.stdout is not None and self.process.stderr is not None
        out = self.process.stdout.read()
        self.process.stdout.close()
        self.process.stderr.close()
        return str(out)


def wait_for(what: str, check: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def outbox_count(env: dict[str, str]) -> int:
    path = Path(env["XDG_STATE_HOME"]) / "posture" / "collector" / "outbox.db"
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])


@pytest.fixture
def central(sites_lab: SitesLab, postgres: PostgresLab, pg_database: str, tmp_path: Path) -> Iterator[Central]:
    """The central server in its namespace, a site table per lab site listing that site's collector key, a
    job per site (its LAN host, its daemons' ports) queued; the collectors' homes (keys, outbox) made."""
    lab = sites_lab
    homes = {name: home(tmp_path, f"collector-{name}") for name in lab.sites}
    config = tmp_path / "central.toml"
    text = ""
    for name, site in lab.sites.items():
        text += (f'[sites.{name}]\nscope = ["{site.scope}"]\nmax_rate = 300\ncap = 1\n'
                 f'collectors = ["{signing_line(homes[name], f"{name}-collector")}"]\n\n'
                 f'[jobs.{name}]\ntargets = ["{site.target}"]\nports = "{",".join(map(str, site.ports))}"\n'
                 f'dns = false\nsite = "{name}"\n\n')  # fmt: skip
    config.write_text(text, encoding="utf-8")
    assert run_posture("--config", str(config), "queue", "init", db=pg_database, process=True).returncode == 0
    for name in lab.sites:
        queued = run_posture("--config", str(config), "run", name, "--queue", db=pg_database, process=True)
        assert queued.returncode == 0, queued.stderr
    server = lab.exec(lab.central, [POSTURE, "--db", socket_url(postgres, pg_database), "--config", str(config),
                                    "serve", "--listen", f"0.0.0.0:{SERVER_PORT}", "--tls-cert", str(lab.cert),
                                    "--tls-key", str(lab.key), "--stalled-after", str(STALLED_AFTER)],
                      env=postgres.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    lab.wait_listening(lab.central, "127.0.0.1", SERVER_PORT, server)
    yield Central(pg_database, homes)
    server.terminate()
    _, log = server.communicate(timeout=30)
    print("posture serve's log:\n" + log)


@dataclass
class Central:
    db: str  # the inventory's URL (TCP, from this namespace)
    homes: dict[str, dict[str, str]]  # each site's collector's environment: its keys and outbox


def stored(db: str, site: str) -> list[tuple[object, ...]]:
    return query(db, "SELECT c.status, count(i.seq) FROM scan_chunks c JOIN procrastinate_jobs j ON "
                     "(j.args->>'scan_id')::bigint = c.scan_id AND (j.args->>'seq')::bigint = c.seq LEFT JOIN "
                     "queue_ingests i ON i.scan_id = c.scan_id AND i.seq = c.seq WHERE j.queue_name = ? "
                     "GROUP BY c.status", f"posture-{site}")  # fmt: skip


def services(db: str, address: str) -> list[int]:
    return [r[0] for r in query(db, "SELECT DISTINCT s.port FROM services s JOIN asset_identifiers i ON "
                                    "i.asset_id = s.asset_id WHERE i.kind = 'ipv4' AND i.value = ? ORDER BY 1",
                                address)]  # fmt: skip


def test_each_site_scanned_by_its_own_collector(sites_lab: SitesLab, central: Central) -> None:
    """Each collector, in its own site, takes its site's chunk over its own link, scans its own LAN's daemons
    and uploads; the other site's key is refused for it."""
    lab, db, homes = sites_lab, central.db, central.homes
    a, b = lab.sites["a"], lab.sites["b"]
    wrong = lab.run(a.ns, [POSTURE, "collector", "--server", a.server_url, "--site", "b", "--scope", b.scope, "--ca",
                           str(lab.ca), "--once"], env=homes["a"])  # fmt: skip
    assert wrong.returncode == 2 and "(403): key " in wrong.stderr and "is not a collector of this site" in wrong.stderr
    for site in (a, b):
        ran = lab.run(site.ns, [POSTURE, "collector", "--server", site.server_url, "--site", site.name, "--scope",
                                site.scope, "--ca", str(lab.ca), "--poll", "0.5", "--once"],
                      env=homes[site.name])  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == "collector stopped after 1 chunk(s)"
        assert stored(db, site.name) == [("done", 1)]
        assert services(db, site.target) == sorted(site.ports)
    assert query(db, "SELECT site, address FROM collectors ORDER BY site") == [("a", a.address), ("b", b.address)]


def test_cut_link_buffers_and_catches_up(sites_lab: SitesLab, central: Central) -> None:
    """Site A's link is cut while its collector scans: the result waits in its outbox, the server gives the
    silent collector's chunk back to the queue, site B goes on meanwhile; when the link is back the collector
    uploads the result (stored once) and the given-back job ends as done, not scanned again."""
    lab, db, homes = sites_lab, central.db, central.homes
    a, b = lab.sites["a"], lab.sites["b"]
    collector = Collector(lab, a, homes["a"], "--timeout", "5")  # a cut link: a request answered in 5 s, or not
    try:
        wait_for("site A's chunk taken", lambda: query(db, "SELECT chunks_taken FROM collectors") == [(1,)])
        lab.cut("a")
        wait_for("the result kept in A's outbox", lambda: outbox_count(homes["a"]) == 1)
        wait_for("A's chunk given back to the queue", lambda: query(
            db, "SELECT status, attempts FROM procrastinate_jobs WHERE queue_name = 'posture-a'") == [("todo", 1)])
        assert stored(db, "a") == [("pending", 0)]
        other = lab.run(b.ns, [POSTURE, "collector", "--server", b.server_url, "--site", "b", "--scope", b.scope,
                               "--ca", str(lab.ca), "--poll", "0.5", "--once"], env=homes["b"])  # fmt: skip
        assert other.returncode == 0, other.stderr
        assert stored(db, "b") == [("done", 1)]
    finally:
        lab.restore("a")
    wait_for("A's outbox uploaded", lambda: outbox_count(homes["a"]) == 0)
    wait_for("the given-back job ended", lambda: query(
        db, "SELECT status FROM procrastinate_jobs WHERE queue_name = 'posture-a'") == [("succeeded",)])
    assert stored(db, "a") == [("done", 1)]
    assert services(db, a.target) == sorted(a.ports)
    assert query(db, "SELECT count(*), sum(stored) FROM collector_uploads") == [(2, 2)]
    assert "kept in the outbox" in collector.log()
    assert collector.log().count("nmap on 1 target(s)") == 1  # the chunk was not scanned twice
    collector.process.send_signal(signal.SIGTERM)
    out = collector.finish()
    assert collector.process.returncode == 0 and out.strip() == "collector stopped after 1 chunk(s)"


def test_collector_killed_mid_chunk(sites_lab: SitesLab, central: Central) -> None:
    """A collector SIGKILLed while its nmap runs stores nothing; started again at once (as systemd restarts
    it, well inside the chunk's lease), it asks for work, the chunk it held is given back, and it stores it
    once, as the chunk's second attempt."""
    lab, db, homes = sites_lab, central.db, central.homes
    b = lab.sites["b"]
    collector = Collector(lab, b, homes["b"])
    wait_for("B's nmap started", lambda: "nmap on 1 target(s)" in collector.log())
    os.kill(collector.process.pid, signal.SIGKILL)  # `ip netns exec` execs the collector: this pid is posture's
    collector.finish()
    assert stored(db, "b") == [("pending", 0)] and outbox_count(homes["b"]) == 0
    assert query(db, "SELECT status FROM procrastinate_jobs WHERE queue_name = 'posture-b'") == [("doing",)]
    again = lab.run(b.ns, [POSTURE, "collector", "--server", b.server_url, "--site", "b", "--scope", b.scope, "--ca",
                           str(lab.ca), "--poll", "0.5", "--once"], env=homes["b"])  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert stored(db, "b") == [("done", 1)]
    assert query(db, "SELECT attempt FROM queue_ingests i JOIN procrastinate_jobs j ON j.id = i.queue_job "
                     "WHERE j.queue_name = 'posture-b'") == [(1,)]  # fmt: skip
    assert query(db, "SELECT count(*), sum(stored) FROM collector_uploads") == [(1, 1)]
