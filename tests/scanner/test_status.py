"""`posture status` (issue 18 item 5) on a real PostgreSQL: sites from the config, the queue's depth and its
failed job (a chunk refused by a real `posture worker`), collectors as the server records them (seen, STALE,
never seen, and one whose name, version and address are hostile), in the table and in the JSON; and the
one-line answers without a queue."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from scanner.bundles import key_id
from scanner.compat import UTC
from scanner.db import connect
from tests.conftest import run_posture
from tests.scanner.test_queue import jobs, posture, start_worker

LAB_NET = "127.109.4.0/24"  # this test's own loopback range (nothing is ever sent to it)
HOSTILE_NAME = "\x1b[31mevil\nname\r" + "x" * 10_240
HOSTILE_VERSION = "\x1b]0;pwned\x07" + "v" * 10_000


def new_key(name: str) -> tuple[str, str]:
    """A real Ed25519 public key as `posture keys list` prints it, and its key id."""
    raw = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return f"posture-ed25519 {base64.b64encode(raw).decode()} {name}", key_id(raw)


def write_config(tmp_path: Path, lab_scope: str, annex_keys: list[str]) -> Path:
    config = tmp_path / "posture.toml"
    config.write_text(
        f'[sites.annex]\nscope = ["127.109.6.0/24"]\nmax_rate = 300\ncap = 3\ncollectors = {json.dumps(annex_keys)}\n\n'
        f'[sites.lab]\nscope = ["{lab_scope}", "127.109.9.0/24"]\n\n'
        '[jobs.lab]\ntargets = ["127.109.4.1"]\nports = "22"\ndns = false\nsite = "lab"\n\n'
        '[jobs.annex]\ntargets = ["127.109.6.1", "127.109.6.2"]\nports = "22"\ndns = false\nsite = "annex"\n',
        encoding="utf-8",
    )
    return config


def seen(db: str, key: str, site: str, name: str, ago: timedelta, address: str, version: str, chunks: int,
         bundles: int) -> None:  # fmt: skip
    """A `collectors` row as the server writes it on an accepted request (utc_now() times)."""
    stamp = (datetime.now(UTC) - ago).strftime("%Y-%m-%dT%H:%M:%SZ")
    conn = connect(db)
    try:
        conn.execute("INSERT INTO collectors (key_id, site, name, first_seen, last_seen, address, version, "
                     "chunks_taken, bundles_stored) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (key, site, name, stamp, stamp, address, version, chunks, bundles))  # fmt: skip
    finally:
        conn.close()


def test_status_of_sites_queue_and_collectors(pg_database: str, tmp_path: Path) -> None:
    lines = {name: new_key(name) for name in ("annex-1", "annex-old", "annex-new")}
    config = write_config(tmp_path, LAB_NET, [line for line, _ in lines.values()])
    assert posture(pg_database, config, "queue", "init").returncode == 0
    # A chunk queued in scope, then refused by a worker whose config narrowed the site: failed for good.
    assert posture(pg_database, config, "run", "lab", "--queue").returncode == 0
    write_config(tmp_path, "127.109.5.0/24", [line for line, _ in lines.values()])
    worker = start_worker(pg_database, config, "--once", "--site", "lab")
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0 and out.strip() == "worker stopped after 2 job(s)", err
    assert jobs(pg_database)[0][:2] == ("scan_chunk", "failed")
    queued = posture(pg_database, config, "run", "annex", "--queue", "--chunk-size", "1")  # two chunks to do
    assert queued.returncode == 0, queued.stderr
    seen(pg_database, lines["annex-1"][1], "annex", "annex-1", timedelta(seconds=150), "127.109.0.10", "0.19", 5, 4)
    seen(pg_database, lines["annex-old"][1], "annex", "annex-old", timedelta(hours=3), "127.109.0.11", "0.18", 9, 9)
    seen(pg_database, "feedfacefeedface", "annex", HOSTILE_NAME, timedelta(seconds=5), "127.109.0.66\r\n\x1b[2J",
         HOSTILE_VERSION, 1, 0)  # a key the config no longer trusts, with a name and version sent by a collector

    table = run_posture("--config", str(config), "status", db=pg_database, env={"COLUMNS": "80"}, process=True)
    assert table.returncode == 0, table.stderr
    text = table.stdout
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}
    assert rows["annex"][1:] == ["127.109.6.0/24", "300", "3", "3", "2", "0", "0"]
    assert rows["lab"][1:] == ["127.109.5.0/24", "+1", "100", "2", "0", "0", "0", "1"]
    assert rows["annex-1"][1:] == ["annex", "2", "min", "ago", "ok", "5", "4"]
    assert rows["annex-old"][1:] == ["annex", "3", "h", "ago", "STALE", "9", "9"]
    assert rows["annex-new"][1:] == ["annex", "never", "never", "0", "0"]
    assert f"  key {lines['annex-1'][1]}, seen " in text and " from 127.109.0.10" in text
    assert f"  key {lines['annex-new'][1]}, not seen yet" in text
    hostile = next(line for line in text.splitlines() if "evil" in line)
    assert hostile.startswith("\ufffd[31mevil\ufffdname\ufffdxxxx") and "untrusted" in hostile
    assert "\ufffd\ufffd\ufffd[2J" in text  # the address's CR, LF and ESC shown, never obeyed
    failed = text.split("FAILED JOB", 1)[1].splitlines()[1].split()
    assert failed == ["1", "lab", "scan_chunk", "1", "0", "1"]

    as_json = run_posture("--config", str(config), "status", "--format", "json", db=pg_database)
    assert as_json.returncode == 0, as_json.stderr
    status = json.loads(as_json.stdout)
    assert status["queue"] == "ready" and status["note"] is None and status["stale_minutes"] == 10
    sites = {s["site"]: s for s in status["sites"]}
    assert {k: sites["annex"][k] for k in ("todo", "running", "failed", "collectors_trusted")} == \
        {"todo": 2, "running": 0, "failed": 0, "collectors_trusted": 3}  # fmt: skip
    assert (sites["lab"]["todo"], sites["lab"]["failed"], sites["lab"]["done"]) == (0, 1, 0)
    assert sites["(final tasks)"]["done"] == 1 and not sites["(final tasks)"]["in_config"]  # the run's finish_run
    by_name = {c["name"]: c for c in status["collectors"]}
    assert by_name["annex-old"]["stale"] is True and by_name["annex-1"]["stale"] is False
    assert 150 <= by_name["annex-1"]["age_seconds"] < 600 and by_name["annex-1"]["trusted"] is True
    assert by_name["annex-new"]["last_seen"] is None and by_name["annex-new"]["age_seconds"] is None
    [evil] = [c for c in status["collectors"] if c["key_id"] == "feedfacefeedface"]
    assert evil["trusted"] is False and len(evil["name"]) <= 64 and len(evil["version"]) <= 64
    assert not any(ord(ch) < 32 for field in ("name", "version", "address") for ch in evil[field])
    assert status["failed_jobs"] == [{"id": 1, "site": "lab", "task": "scan_chunk", "run": 1, "chunk": 0,
                                      "attempts": 1}]  # fmt: skip
    assert len(as_json.stdout) < 8_000  # 20 KB of hostile strings came in

    relaxed = json.loads(run_posture("--config", str(config), "status", "--stale", "240", "--format", "json",
                                     db=pg_database).stdout)  # fmt: skip
    assert not any(c["stale"] for c in relaxed["collectors"])


def test_no_queue_on_postgresql(pg_database: str, tmp_path: Path) -> None:
    """A central inventory where `queue init` has not run: one line saying so, the sites, exit 0."""
    config = write_config(tmp_path, LAB_NET, [new_key("annex-1")[0]])
    result = run_posture("--config", str(config), "status", db=pg_database)
    assert result.returncode == 0, result.stderr
    first, *rest = result.stdout.splitlines()
    assert first.startswith("no queue yet (run `posture queue init` once): postgresql://")
    assert any(line.split()[:2] == ["annex", "127.109.6.0/24"] and line.split()[-3:] == ["-", "-", "-"]
               for line in rest)  # fmt: skip
    assert "annex-1" in result.stdout and "never" in result.stdout  # trusted by the config, never seen
    as_json = json.loads(run_posture("--config", str(config), "status", "--format", "json", db=pg_database).stdout)
    assert as_json["queue"] == "not initialised" and as_json["sites"][0]["todo"] is None


def test_no_queue_on_sqlite_and_a_bad_config(tmp_path: Path) -> None:
    """SQLite: one line, the config's sites, exit 0, and no inventory file made; a bad config: exit 2."""
    config = write_config(tmp_path, LAB_NET, [])
    db = tmp_path / "inventory.db"
    result = run_posture("--config", str(config), "status", db=db)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "no queue: the inventory is SQLite (a queue needs the central " \
        "PostgreSQL one)"  # fmt: skip
    assert [line.split()[0] for line in result.stdout.splitlines()[2:]] == ["SITE", "annex", "lab"]
    assert not db.exists()
    assert json.loads(run_posture("--config", str(config), "status", "--format", "json", db=db).stdout)["queue"] \
        == "sqlite"  # fmt: skip
    config.write_text('[sites.annex]\nscope = ["10.0.0.0/8"]\ncap = 0\n', encoding="utf-8")
    bad = run_posture("--config", str(config), "status", db=db)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.splitlines() == [f"posture: error: {config}:1: [sites.annex] cap must be a whole number from 1 "
                                       "to 64 (fix the config file)"]  # fmt: skip
