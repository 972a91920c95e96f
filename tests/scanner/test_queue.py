"""The job queue on a real PostgreSQL (issue 18 item 2): `posture run JOB --queue`, real `posture worker`
processes running real nmap against lab daemons of this test's own (127.108.x.x), a worker SIGKILLed
mid-chunk, one-line refusals."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanner.lab import Lab
from tests.conftest import POSTURE, db_fingerprint, query, run_posture

SITE_NET = "127.108.0.0/16"


@pytest.fixture(scope="module")
def site_lab() -> Iterator[Lab]:
    """sshd, nginx and vsftpd on three addresses of this test's own range."""
    with Lab(addresses=("127.108.0.21", "127.108.0.22", "127.108.0.23")) as running:
        yield running


def write_config(tmp_path: Path, targets: list[str], ports: str, cap: int = 2, scope: str = SITE_NET) -> Path:
    config = tmp_path / "posture.toml"
    config.write_text(
        f'[sites.lab]\nscope = ["{scope}"]\nmax_rate = 300\ncap = {cap}\n\n'
        f"[jobs.lab]\ntargets = {json.dumps(targets)}\nports = \"{ports}\"\ndns = false\nsite = \"lab\"\n"
        "max_rate = 200\n",
        encoding="utf-8",
    )
    return config


def posture(db: str, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_posture("--config", str(config), *args, db=db, process=True)


def start_worker(db: str, config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([POSTURE, "--db", db, "--config", str(config), "worker", *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))  # fmt: skip


def finished(worker: subprocess.Popen[str], timeout: float = 180) -> str:
    out, err = worker.communicate(timeout=timeout)
    assert worker.returncode == 0, err
    return out


def jobs(db: str) -> list[tuple[str, str, str | None, int]]:
    return [(r[0], r[1], r[2], r[3]) for r in query(
        db, "SELECT task_name, status, lock, attempts FROM procrastinate_jobs ORDER BY id")]  # fmt: skip


def test_sqlite_store_refused(tmp_path: Path) -> None:
    """The queue lives on the central PostgreSQL inventory only: each queue command refuses SQLite in one line."""
    config = write_config(tmp_path, ["127.108.0.21"], "22")
    db = str(tmp_path / "inventory.db")
    for argv in (("run", "lab", "--queue"), ("worker", "--once"), ("queue", "init"), ("queue", "status")):
        result = run_posture("--config", str(config), *argv, db=db)
        assert result.returncode == 2, (argv, result.stderr)
        [line] = result.stderr.splitlines()
        assert line.startswith("posture: error: the queue needs the central PostgreSQL inventory"), argv
    assert not Path(db).exists()


def test_sites_in_the_config_checked(tmp_path: Path) -> None:
    """[sites.NAME] and a job's site are checked by `config check` like every other table, FILE:LINE first."""
    config = write_config(tmp_path, ["127.108.0.21"], "22", cap=0)
    result = run_posture("--config", str(config), "config", "check")
    assert result.returncode == 2 and ":1: [sites.lab] cap must be a whole number from 1 to 64" in result.stderr
    config = write_config(tmp_path, ["127.108.0.21"], "22")
    config.write_text(config.read_text(encoding="utf-8").replace('site = "lab"', 'site = "annex"'), encoding="utf-8")
    result = run_posture("--config", str(config), "config", "check")
    assert result.returncode == 2 and "jobs.lab: no [sites.annex] table in the config" in result.stderr


def test_out_of_scope_refused_at_enqueue(pg_database: str, tmp_path: Path) -> None:
    """A target outside the site's scope (or the job's) is refused before anything is queued."""
    config = write_config(tmp_path, ["127.108.0.21", "127.109.0.5"], "22")
    assert posture(pg_database, config, "queue", "init").stdout.strip() == "queue created"
    assert posture(pg_database, config, "queue", "init").stdout.strip() == "the queue is there already"
    result = posture(pg_database, config, "run", "lab", "--queue")
    assert result.returncode == 2
    assert "lies outside the scope 127.108.0.0/16" in result.stderr and len(result.stderr.splitlines()) <= 2
    assert query(pg_database, "SELECT count(*) FROM procrastinate_jobs") == [(0,)]
    assert query(pg_database, "SELECT count(*) FROM scans") == [(0,)]
    # The job's own scope binds too, inside the site's.
    narrowed = config.read_text(encoding="utf-8").replace('site = "lab"', 'site = "lab"\nscope = ["127.108.1.0/24"]')
    config.write_text(narrowed, encoding="utf-8")
    narrower = posture(pg_database, config, "run", "lab", "--queue")
    assert narrower.returncode == 2 and "outside the scope 127.108.1.0/24" in narrower.stderr
    assert query(pg_database, "SELECT count(*) FROM procrastinate_jobs") == [(0,)]


def test_one_run_of_a_job_in_the_queue_at_a_time(pg_database: str, tmp_path: Path) -> None:
    """A job whose last run is still in the queue is not queued again (one line, exit 2, nothing added)."""
    config = write_config(tmp_path, ["127.108.3.0/25"], "22")
    assert posture(pg_database, config, "queue", "init").returncode == 0
    assert posture(pg_database, config, "run", "lab", "--queue", "--chunk-size", "64").returncode == 0
    before = db_fingerprint(pg_database)
    again = posture(pg_database, config, "run", "lab", "--queue")
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and again.stderr.startswith(
        "posture: job lab failed: its run 1 is still in the queue (2 chunk(s) left): not queued again")
    assert db_fingerprint(pg_database) == before


def test_two_workers_finish_a_job(site_lab: Lab, pg_database: str, tmp_path: Path) -> None:
    """Three chunks (one address each), two worker processes: every chunk stored once, each host once in the
    inventory, the site's cap as locks, its rate split across the cap, and the run finished by a final task."""
    config = write_config(tmp_path, site_lab.targets, site_lab.ports_spec)
    assert posture(pg_database, config, "queue", "init").returncode == 0
    queued = posture(pg_database, config, "run", "lab", "--queue", "--chunk-size", "1")
    assert queued.returncode == 0, queued.stderr
    assert queued.stdout.strip() == "lab: scan 1 queued: 3 chunk(s) of 3 addresses for site lab"
    assert [(j[0], j[1], j[2]) for j in jobs(pg_database)] == [
        ("scan_chunk", "todo", "lab:0"), ("scan_chunk", "todo", "lab:1"), ("scan_chunk", "todo", "lab:0")]
    options = json.loads(query(pg_database, "SELECT options FROM scans WHERE id = 1")[0][0])
    assert options["max_rate"] == 100  # min(job 200, site 300) // cap 2
    status = posture(pg_database, config, "queue", "status")
    assert status.stdout.splitlines()[1].split() == ["lab", "3", "0", "0", "0"]

    workers = [start_worker(pg_database, config, "--once", "--site", "lab") for _ in range(2)]
    outputs = [finished(w) for w in workers]
    if any(j[1] == "todo" for j in jobs(pg_database)):  # a worker left when the last task was not yet queued
        outputs.append(finished(start_worker(pg_database, config, "--once")))
    assert all(line.startswith("worker stopped after") for line in outputs)

    stored = query(pg_database, "SELECT seq, attempt, worker FROM queue_ingests ORDER BY seq")
    assert [r[:2] for r in stored] == [(0, 0), (1, 0), (2, 0)]
    assert len({r[2] for r in stored}) == 2  # both workers stored chunks
    assert query(pg_database, "SELECT status, hosts_done, hosts_up FROM scans") == [("complete", 3, 3)]
    addresses = query(pg_database, "SELECT value, count(DISTINCT asset_id) FROM asset_identifiers WHERE kind = 'ipv4' "
                                   "GROUP BY value ORDER BY value")  # fmt: skip
    assert addresses == [(a, 1) for a in sorted(site_lab.targets)]
    assert query(pg_database, "SELECT count(*) FROM observations") == [(3,)]
    assert query(pg_database, "SELECT count(*) FROM services WHERE port IN (2222, 8080, 2121)") == [(3,)]
    assert [j[:2] for j in jobs(pg_database)][:3] == [("scan_chunk", "succeeded")] * 3
    assert [j[0] for j in jobs(pg_database)][3:] == ["finish_run"]  # once (its outcome: test_finish_runs_the_rules)

    # A chunk run again after its attempt stored it (here: marked failed and retried by hand) stores nothing.
    before = query(pg_database, "SELECT count(*) FROM observations UNION ALL SELECT count(*) FROM services")
    first = query(pg_database, "SELECT id FROM procrastinate_jobs WHERE task_name = 'scan_chunk' ORDER BY id")[0][0]
    from scanner.db import connect

    conn = connect(pg_database)
    try:
        conn.execute("UPDATE procrastinate_jobs SET status = 'failed' WHERE id = ?", (first,))
        conn.execute("SELECT procrastinate_retry_job_v2(?, now(), NULL, NULL, NULL)", (first,))
    finally:
        conn.close()
    finished(start_worker(pg_database, config, "--once"))
    assert query(pg_database, "SELECT count(*) FROM observations UNION ALL SELECT count(*) FROM services") == before
    assert query(pg_database, "SELECT attempt FROM queue_ingests WHERE seq = 0") == [(0,)]


def test_site_cap_holds_across_workers(site_lab: Lab, pg_database: str, tmp_path: Path) -> None:
    """cap = 1: two workers, three chunks, and never two of the site's chunks running at once (procrastinate's
    own event times say when each ran)."""
    config = write_config(tmp_path, site_lab.targets, site_lab.ports_spec, cap=1)
    assert posture(pg_database, config, "queue", "init").returncode == 0
    assert posture(pg_database, config, "run", "lab", "--queue", "--chunk-size", "1").returncode == 0
    assert {j[2] for j in jobs(pg_database)} == {"lab:0"}
    options = json.loads(query(pg_database, "SELECT options FROM scans WHERE id = 1")[0][0])
    assert options["max_rate"] == 200  # min(job 200, site 300) // cap 1
    workers = [start_worker(pg_database, config, "--once", "--concurrency", "2") for _ in range(2)]
    for worker in workers:
        finished(worker)
    if any(j[1] == "todo" for j in jobs(pg_database)):
        finished(start_worker(pg_database, config, "--once"))
    assert [j[:2] for j in jobs(pg_database)][:3] == [("scan_chunk", "succeeded")] * 3, jobs(pg_database)
    spans = sorted(query(pg_database, "SELECT min(e.at), max(e.at) FROM procrastinate_events e JOIN "
                                      "procrastinate_jobs j ON j.id = e.job_id WHERE j.task_name = 'scan_chunk' "
                                      "AND e.type IN ('started', 'succeeded') GROUP BY e.job_id"))  # fmt: skip
    assert len(spans) == 3
    assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(spans))  # one after another


def test_worker_checks_the_scope_again(pg_database: str, tmp_path: Path) -> None:
    """A chunk queued while its target was in the site's scope, run by a worker whose config has narrowed
    the site since: refused before nmap runs, failed for good (no retry), the run marked failed by the final
    task, and `queue status` shows it."""
    config = write_config(tmp_path, ["127.108.4.1"], "22")
    assert posture(pg_database, config, "queue", "init").returncode == 0
    assert posture(pg_database, config, "run", "lab", "--queue").returncode == 0
    config.write_text(config.read_text(encoding="utf-8").replace(SITE_NET, "127.108.5.0/24"), encoding="utf-8")
    worker = start_worker(pg_database, config, "--once")
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0 and out.strip() == "worker stopped after 2 job(s)", err
    assert "Refused: site lab's scope: target '127.108.4.1' (127.108.4.1/32) lies outside the scope 127.108.5.0/24" \
        in err  # fmt: skip
    assert "Traceback" not in err
    assert jobs(pg_database)[0] == ("scan_chunk", "failed", "lab:0", 1)  # one attempt: a refusal is not retried
    assert query(pg_database, "SELECT status FROM scan_chunks") == [("failed",)]
    assert query(pg_database, "SELECT status, error, hosts_done FROM scans") == [("failed", "1 chunk(s) failed", 0)]
    assert query(pg_database, "SELECT count(*) FROM queue_ingests UNION ALL SELECT count(*) FROM observations") \
        == [(0,), (0,)]  # fmt: skip
    status = posture(pg_database, config, "queue", "status")
    assert status.returncode == 0
    rows = {line.split()[0]: line.split()[1:] for line in status.stdout.splitlines()[1:] if line.strip()}
    assert rows["lab"][:2] == ["0", "0"]  # nothing left to do
    assert rows["(final"][:3] == ["tasks)", "0", "0"]  # the run's final task ran
    assert "failed: job 1 scan_chunk run 1 chunk 0 (site lab, 1 attempt(s))" in status.stdout
    as_json = json.loads(posture(pg_database, config, "queue", "status", "--format", "json").stdout)
    assert as_json["sites"]["lab"]["failed"] >= 1 and as_json["failed"][0]["args"]["seq"] == 0


def test_finish_runs_the_rules(pg_database: str, tmp_path: Path) -> None:
    """The final task runs the job's rules once its chunks are done (an evaluation in the inventory)."""
    config = write_config(tmp_path, ["127.108.4.2"], "22")
    assert posture(pg_database, config, "queue", "init").returncode == 0
    assert posture(pg_database, config, "run", "lab", "--queue").returncode == 0
    finished(start_worker(pg_database, config, "--once"))
    assert [j[:2] for j in jobs(pg_database)] == [("scan_chunk", "succeeded"), ("finish_run", "succeeded")]
    assert query(pg_database, "SELECT count(*) FROM evaluations") == [(1,)]


def test_a_worker_killed_in_the_final_task_leaves_it_to_the_next(site_lab: Lab, pg_database: str,
                                                                 tmp_path: Path) -> None:
    """The worker is SIGKILLed inside the final task, after it marked the run complete: by the job's own
    change hook, a real program that kills its parent (the worker) the first time it runs. Once the
    worker's heartbeat is stale the next worker runs the task again: the rules and the hook run, though the
    run's row was marked already."""
    marker, said = tmp_path / "killed-once", tmp_path / "hook.json"
    hook = tmp_path / "hook.py"
    hook.write_text(
        "import os, pathlib, signal, sys\n"
        f"marker = pathlib.Path({str(marker)!r})\n"
        "if not marker.exists():\n"
        "    marker.touch()\n"
        "    os.kill(os.getppid(), signal.SIGKILL)\n"
        f"else:\n    pathlib.Path({str(said)!r}).write_text(sys.stdin.read())\n", encoding="utf-8")  # fmt: skip
    config = write_config(tmp_path, site_lab.targets[:1], site_lab.ports_spec)  # a host up: the run changes things
    config.write_text(config.read_text(encoding="utf-8") + f'on_change = "{sys.executable} {hook}"\n',
                      encoding="utf-8")  # fmt: skip
    assert posture(pg_database, config, "queue", "init").returncode == 0
    assert posture(pg_database, config, "run", "lab", "--queue").returncode == 0
    doomed = start_worker(pg_database, config, "--stalled-after", "2")
    doomed.communicate(timeout=180)
    assert doomed.returncode == -signal.SIGKILL and marker.exists() and not said.exists()
    assert query(pg_database, "SELECT status FROM scans") == [("complete",)]  # marked before it died
    assert [j[:2] for j in jobs(pg_database)] == [("scan_chunk", "succeeded"), ("finish_run", "doing")]
    time.sleep(3)  # its heartbeat goes stale
    finished(start_worker(pg_database, config, "--once", "--stalled-after", "2"))
    assert [(j[0], j[1], j[3]) for j in jobs(pg_database)] == [("scan_chunk", "succeeded", 1),
                                                              ("finish_run", "succeeded", 2)]  # fmt: skip
    assert json.loads(said.read_text(encoding="utf-8"))["scans"] == [1]  # the hook ran, with the run's summary
    assert query(pg_database, "SELECT count(*) FROM evaluations WHERE finished_at IS NOT NULL")[0][0] >= 1


class SilentServer:
    """A TCP port that accepts and never answers: nmap's version detection waits on it for many seconds."""

    def __init__(self, address: str) -> None:
        self.sock = socket.create_server((address, 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def wait_for_nmap(silent: SilentServer, timeout: float = 60) -> None:
    """Until the chunk's nmap has connected to the silent port (it then waits there for an answer)."""
    deadline = time.monotonic() + timeout
    while not silent.held and time.monotonic() < deadline:
        time.sleep(0.2)
    assert silent.held, "nmap never reached the silent port"


def test_killed_worker_chunk_retried_elsewhere(pg_database: str, tmp_path: Path) -> None:
    """A worker SIGKILLed while nmap runs its chunk: nothing of that attempt is stored; once its heartbeat is
    older than --stalled-after another worker takes the chunk again and stores it once."""
    silent = SilentServer("127.108.1.1")
    try:
        config = write_config(tmp_path, ["127.108.1.1"], str(silent.port))
        assert posture(pg_database, config, "queue", "init").returncode == 0
        assert posture(pg_database, config, "run", "lab", "--queue").returncode == 0
        doomed = start_worker(pg_database, config, "--stalled-after", "2")
        wait_for_nmap(silent)  # nmap has connected: the chunk is under way
        assert jobs(pg_database)[0][1] == "doing"
        nmap = f"nmap .*-p {silent.port}"
        assert subprocess.run(["pgrep", "-f", nmap], capture_output=True, check=False).stdout != b""
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
        doomed.communicate()
        time.sleep(0.5)
        left = subprocess.run(["pgrep", "-f", nmap], capture_output=True, check=False)
        assert left.stdout == b"", "the killed worker's nmap outlived it"
        assert query(pg_database, "SELECT count(*) FROM queue_ingests UNION ALL SELECT count(*) FROM observations") \
            == [(0,), (0,)]  # fmt: skip
        time.sleep(3)  # its heartbeat goes stale
        silent.close()  # the port is closed now: the retry's nmap ends at once
        rescuer = start_worker(pg_database, config, "--once", "--stalled-after", "2")
        finished(rescuer)
    finally:
        silent.close()
    chunk = jobs(pg_database)[0]
    assert (chunk[0], chunk[1], chunk[3]) == ("scan_chunk", "succeeded", 2)  # two attempts ran
    assert query(pg_database, "SELECT seq, attempt FROM queue_ingests") == [(0, 1)]
    assert query(pg_database, "SELECT count(*) FROM observations") == [(1,)]
    assert query(pg_database, "SELECT status FROM scans") == [("complete",)]


def test_sigterm_stops_a_worker_cleanly(pg_database: str, tmp_path: Path) -> None:
    """SIGTERM mid-chunk: after --grace the chunk's nmap is stopped, its job goes back to the queue (nothing
    stored), and the worker exits 0; the next worker (--max-jobs 2: the chunk and the final task) runs it."""
    silent = SilentServer("127.108.2.1")
    try:
        config = write_config(tmp_path, ["127.108.2.1"], str(silent.port))
        assert posture(pg_database, config, "queue", "init").returncode == 0
        assert posture(pg_database, config, "run", "lab", "--queue").returncode == 0
        worker = start_worker(pg_database, config, "--grace", "1")
        wait_for_nmap(silent)
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0 and out.strip() == "worker stopped after 1 job(s)", err
        assert "Aborted, to retry" in err and "Traceback" not in err
        nmap = subprocess.run(["pgrep", "-f", f"nmap .*-p {silent.port}"], capture_output=True, check=False)
        assert nmap.stdout == b""
        assert jobs(pg_database) == [("scan_chunk", "todo", "lab:0", 1)]
        assert query(pg_database, "SELECT count(*) FROM queue_ingests UNION ALL SELECT count(*) FROM observations") \
            == [(0,), (0,)]  # fmt: skip
        silent.close()
        time.sleep(5)  # the retry's wait (RETRY_WAIT)
        assert finished(start_worker(pg_database, config, "--max-jobs", "2")).strip() == "worker stopped after 2 job(s)"
    finally:
        silent.close()
    assert query(pg_database, "SELECT seq, attempt FROM queue_ingests") == [(0, 1)]
    assert query(pg_database, "SELECT count(*) FROM observations") == [(1,)]
