"""The host agent and its bundles: real dpkg, /proc and sockets on this machine; real Ed25519/X25519 keys;
the real `posture` command for every import; a real size-limited tmpfs for the full disk."""

from __future__ import annotations

import base64
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scanner import bundles
from scanner.bundles import make_bundle, write_bundle
from scanner.compat import UTC
from scanner.hostagent import PAYLOAD_FORMAT
from tests.conftest import assets_json, db_fingerprint, no_inventory, query, run_posture
from tests.rules.estate import NGINX, SSH_DEBIAN, Host, write_estate
from tests.scanner.test_change_hook import check_change


def keys_dir() -> Path:
    return Path(os.environ["XDG_CONFIG_HOME"]) / "posture" / "keys"


@pytest.fixture
def trusted() -> str:
    """This machine's keys, made with the real command, and its signing key trusted as 'self'."""
    made = run_posture("keys", "generate")
    assert made.returncode == 0, made.stderr
    line = (keys_dir() / "signing.pub").read_text(encoding="utf-8").strip()
    assert line.startswith("posture-ed25519 ")
    trust = run_posture("keys", "trust", str(keys_dir() / "signing.pub"), "--name", "self")
    assert trust.returncode == 0 and "trusted: self" in trust.stdout, trust.stderr
    return line


def payload(when: datetime | None = None, **changes: Any) -> dict[str, Any]:
    """A Debian 11 file server as an agent would describe it (the data is made up; no packet goes to it)."""
    base: dict[str, Any] = {
        "format": PAYLOAD_FORMAT,
        "bundle_id": uuid.uuid4().hex,
        "collected_at": (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "agent_version": "test",
        "host": {
            "machine_id": "ab" * 16,
            "hostnames": ["fin-app-01"],
            "addresses": [["ipv4", "10.20.0.15"]],
            "macs": ["52:54:00:12:34:56"],
        },
        "os": {
            "platform": "linux",
            "id": "debian",
            "version_id": "11",
            "kernel": "5.10.0-28-amd64",
            "pretty_name": "Debian GNU/Linux 11 (bullseye)",
        },
        "packages": [
            {"manager": "dpkg", "name": "nginx", "version": "1.18.0-6.1+deb11u3", "arch": "amd64"},
            {"manager": "dpkg", "name": "openssl", "version": "1.1.1w-0+deb11u1", "arch": "amd64"},
            {"manager": "pip", "name": "requests", "version": "2.25.1"},
        ],
        "listening": [
            {"protocol": "tcp", "port": 22, "addresses": ["0.0.0.0"], "process": "sshd"},
            {"protocol": "tcp", "port": 5432, "addresses": ["127.0.0.1"], "process": "postgres"},
        ],
        "warnings": [],
    }
    base.update(changes)
    return base


def bundle_file(path: Path, content: dict[str, Any], encrypt_to: str | None = None) -> Path:
    write_bundle(path, make_bundle(content, encrypt_to))
    return path


def import_bundles(db: Path | str, *files: Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    return run_posture("import", "bundle", *map(str, files), db=db, **kw)


# ---- collection on this machine -------------------------------------------------------------------------


def test_collect_reads_this_machine(store_db: Path | str, trusted: str, tmp_path: Path) -> None:
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        udp.bind(("127.0.0.1", 0))
        tcp_port, udp_port = tcp.getsockname()[1], udp.getsockname()[1]
        out = tmp_path / "host.bundle"
        result = run_posture("agent", "collect", "--out", str(out), "--json", process=True)  # reads *this* process
    assert result.returncode == 0, result.stderr
    collected = json.loads(result.stdout)
    # Packages: exactly what dpkg itself says is installed.
    listing = subprocess.run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}\t${Package}\t${Version}\n"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    installed = {tuple(line.split("\t")[1:]) for line in listing.splitlines() if line.startswith("ii")}
    assert len(installed) > 100
    assert {(p["name"], p["version"]) for p in collected["packages"] if p["manager"] == "dpkg"} == installed
    release = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    assert collected["os"]["id"] == release["ID"].strip('"') and collected["os"]["kernel"] == os.uname().release
    assert collected["host"]["machine_id"] == Path("/etc/machine-id").read_text().strip()
    assert socket.gethostname() in collected["host"]["hostnames"]
    me = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    ports = {(s["protocol"], s["port"]): s for s in collected["listening"]}
    tcp_seen, udp_seen = ports[("tcp", tcp_port)], ports[("udp", udp_port)]
    assert tcp_seen["addresses"] == ["127.0.0.1"] and tcp_seen["process"] == me
    assert udp_seen["addresses"] == ["127.0.0.1"]
    # The file is the signed envelope, and it imports as this machine, with its OS identified.
    envelope = json.loads(out.read_bytes())
    assert envelope["format"] == "posture-bundle/1"
    assert envelope["key_id"] == bundles.key_id(base64.b64decode(trusted.split()[1]))
    db = store_db
    imported = import_bundles(db, out)
    assert imported.returncode == 0, imported.stderr
    assert "signed by self" in imported.stderr
    [asset] = assets_json(db)
    assert asset["os"]["method"] == "os-release" and asset["os"]["product"] == release["ID"].strip('"')
    assert query(db, "SELECT value FROM asset_identifiers WHERE kind = 'machine-id'") == [
        (collected["host"]["machine_id"],)
    ]


# ---- merging with network scans --------------------------------------------------------------------------


def test_agent_data_merges_into_the_scanned_asset(store_db: Path | str, trusted: str, tmp_path: Path) -> None:
    db = store_db
    xml = tmp_path / "scan.xml"
    write_estate(xml, [Host("10.20.0.15", "52:54:00:12:34:56", [SSH_DEBIAN, NGINX], hostname="fin-app-01")])
    assert run_posture("import", "nmap", str(xml), db=db).returncode == 0
    first = import_bundles(db, bundle_file(tmp_path / "a.bundle", payload()))
    assert first.returncode == 0, first.stderr
    moved = payload(datetime.now(UTC) + timedelta(minutes=5))
    moved["host"] = {**moved["host"], "addresses": [["ipv4", "10.30.0.9"]], "macs": [], "hostnames": []}
    second = import_bundles(db, bundle_file(tmp_path / "b.bundle", moved))  # new address: machine-id matches
    assert second.returncode == 0, second.stderr
    assert run_posture("evaluate", "--on", "2026-11-23", db=db).returncode == 0  # identifies; the view reads it
    [asset] = assets_json(db)
    assert asset["os"]["product"] == "debian" and asset["os"]["cycle"] == "11"
    assert asset["os"]["method"] == "os-release" and asset["os"]["confidence"] == "high"
    nginx = next(s for s in asset["software"] if s["product"] == "nginx")
    assert nginx["version"] == "1.18.0" and nginx["packaged_by"] == "debian 11"
    assert {s["port"] for s in asset["services"]} == {22, 80}  # the network's view of its ports wins
    # The agent's listeners are kept; one bound to loopback only is not exposure.
    states = dict(query(db, "SELECT port, state FROM services WHERE scan_id = 3"))
    assert states == {22: "open", 5432: "listening-local"}
    evaluated = run_posture("evaluate", "--on", "2026-11-23", db=db)
    assert evaluated.returncode == 0, evaluated.stderr
    rules = {r[0] for r in query(db, "SELECT rule_id FROM findings WHERE status != 'fixed'")}
    assert "protect.eol-os" in rules  # Debian 11 (LTS) ended on 2026-08-31


def test_a_host_only_its_agent_sees_is_judged_by_its_listeners(
    store_db: Path | str,
    trusted: str,
    tmp_path: Path,
) -> None:
    db = store_db
    remote = payload()
    remote["listening"] = [*remote["listening"], {"protocol": "tcp", "port": 23, "addresses": ["0.0.0.0"],
                                                   "process": "inetd"}]  # fmt: skip
    assert import_bundles(db, bundle_file(tmp_path / "remote.bundle", remote)).returncode == 0
    [asset] = assets_json(db)
    assert {(s["port"], s["state"]) for s in asset["services"]} == {(22, "open"), (23, "open"),
                                                                    (5432, "listening-local")}  # fmt: skip
    assert run_posture("evaluate", "--on", "2026-11-23", db=db).returncode == 0
    telnet = query(db, "SELECT subject FROM findings WHERE rule_id = 'protect.telnet'")
    assert telnet == [("tcp/23",)]  # the listener on all addresses; postgres on loopback is no exposure


# ---- what is refused -------------------------------------------------------------------------------------


def test_refused_bundles_change_nothing(trusted: str, tmp_path: Path, store_db: Path | str) -> None:
    db = store_db
    good = bundle_file(tmp_path / "good.bundle", payload())
    assert import_bundles(db, good).returncode == 0
    before = db_fingerprint(db)

    envelope = json.loads(bundle_file(tmp_path / "x.bundle", payload()).read_bytes())
    flipped = tmp_path / "flipped.bundle"
    packed = bytearray(base64.b64decode(envelope["payload"]))
    packed[len(packed) // 2] ^= 0x01  # one bit of one byte
    flipped.write_text(json.dumps({**envelope, "payload": base64.b64encode(bytes(packed)).decode()}))
    unsigned = tmp_path / "unsigned.bundle"
    unsigned.write_text(json.dumps({k: v for k, v in envelope.items() if k != "signature"}))
    big = tmp_path / "big.bundle"
    with big.open("wb") as f:  # 1 GiB, sparse: refused by its size, never read
        f.truncate(2**30)
    older = bundle_file(tmp_path / "older.bundle", payload(datetime.now(UTC) - timedelta(days=3)))
    cases = [
        (flipped, "tampered (the signature of self does not match"),
        (unsigned, "unsigned"),
        (good, "replayed: this bundle was imported on"),
        (big, "1024 MiB is over the 64 MiB limit"),
        (older, "replayed or stale"),
        (tmp_path / "missing.bundle", "cannot read it"),
    ]
    for path, reason in cases:
        result = import_bundles(db, path)
        assert result.returncode == 2 and reason in result.stderr, (path, result.stderr)
        assert "1 of 1 bundle(s) refused" in result.stderr
    assert db_fingerprint(db) == before

    # An untrusted key: the same bundle verifies once its key is trusted, and not after it is untrusted.
    fresh = bundle_file(tmp_path / "fresh.bundle", payload(datetime.now(UTC) + timedelta(hours=1)))
    assert run_posture("keys", "untrust", "self").returncode == 0
    untrusted = import_bundles(db, fresh)
    assert untrusted.returncode == 2 and "which is not trusted here" in untrusted.stderr
    assert db_fingerprint(db) == before
    assert run_posture("keys", "trust", trusted, "--name", "self").returncode == 0
    twice = import_bundles(db, fresh, fresh)  # the same file twice on one command line: once only
    assert twice.returncode == 2 and "given twice on this command line" in twice.stderr
    assert "imported" in twice.stderr and query(db, "SELECT count(*) FROM bundles") == [(2,)]


def test_sealed_bundles(store_db: Path | str, trusted: str, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    db = store_db
    site = (keys_dir() / "encryption.pub").read_text(encoding="utf-8").strip()
    sealed = tmp_path / "sealed.bundle"
    made = run_posture("agent", "collect", "--out", str(sealed), "--encrypt-to", site)
    assert made.returncode == 0 and "encrypted" in made.stderr, made.stderr
    text = sealed.read_text()
    assert json.loads(text)["format"] == "posture-sealed/1" and "posture-bundle" not in text
    envelope = json.loads(text)
    damaged = tmp_path / "damaged.bundle"
    cipher = bytearray(base64.b64decode(envelope["ciphertext"]))
    cipher[100] ^= 0x80
    damaged.write_text(json.dumps({**envelope, "ciphertext": base64.b64encode(bytes(cipher)).decode()}))
    other = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    elsewhere = bundle_file(tmp_path / "elsewhere.bundle", payload(),
                            encrypt_to=f"posture-x25519 {base64.b64encode(other).decode()}")  # fmt: skip
    for path, reason in ((damaged, "tampered or damaged (decryption failed"), (elsewhere, "encrypted to another key")):
        result = import_bundles(db, path)
        assert result.returncode == 2 and reason in result.stderr, result.stderr
    assert no_inventory(db) or query(db, "SELECT count(*) FROM bundles") == [(0,)]
    result = import_bundles(db, sealed)
    assert result.returncode == 0, result.stderr
    [(options,)] = query(db, "SELECT options FROM scans")
    assert json.loads(options)["encrypted"] is True


def test_gzip_bomb_and_hostile_payloads(trusted: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = bundles.trusted_keys()
    bomb = payload(packages=[{"manager": "dpkg", "name": f"pkg{n}", "version": "1.0"} for n in range(40_000)])
    path = bundle_file(tmp_path / "bomb.bundle", bomb)
    assert path.stat().st_size < 2**20
    with monkeypatch.context() as patch, pytest.raises(bundles.BundleRejected, match="unpacks to more than 1 MiB"):
        patch.setattr(bundles, "MAX_PAYLOAD_BYTES", 2**20)  # the same check as at 256 MiB, in a second
        bundles.read_bundle(path, keys)
    assert len(bundles.read_bundle(path, keys).payload["packages"]) == 40_000  # under the real limit: fine
    hostile = payload(host={"machine_id": "../../etc/passwd", "hostnames": [], "addresses": [], "macs": []})
    with pytest.raises(bundles.BundleRejected, match="malformed \\(machine_id\\)"):
        bundles.read_bundle(bundle_file(tmp_path / "h1.bundle", hostile), keys)
    for host in ({"machine_id": None, "addresses": "10.0.0.1", "macs": 7}, {"addresses": [["ipv4"]]}):
        shaped = payload(host=host)
        with pytest.raises(bundles.BundleRejected, match="malformed"):
            bundles.read_bundle(bundle_file(tmp_path / "h3.bundle", shaped), keys)
    odd = payload(host={"machine_id": None, "addresses": [["ipv4", "10.0.0.1; reboot"], ["ipv4", "10.0.0.2"]]})
    assert bundles.read_bundle(bundle_file(tmp_path / "h4.bundle", odd), keys).payload["host"]["addresses"] == [
        ["ipv4", "10.0.0.2"]
    ]  # only real addresses become identifiers
    long_name = payload(packages=[{"manager": "dpkg", "name": "<script>" + "x" * 5000, "version": "1"}])
    checked = bundles.read_bundle(bundle_file(tmp_path / "h2.bundle", long_name), keys)
    assert len(checked.payload["packages"][0]["name"]) == 256  # bounded, marked as cut


# ---- the database and the disk ---------------------------------------------------------------------------


def test_database_locked_by_another_run(trusted: str, tmp_path: Path) -> None:
    # SQLite only: another connection holds the file's write lock (PostgreSQL's: test_store_both.py)
    db = tmp_path / "inventory.db"
    assert import_bundles(db, bundle_file(tmp_path / "a.bundle", payload())).returncode == 0
    second = bundle_file(tmp_path / "b.bundle", payload(datetime.now(UTC) + timedelta(minutes=1)))
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another run holds the write lock
    try:
        before = db_fingerprint(db)
        blocked = import_bundles(db, second, env={"POSTURE_DB_TIMEOUT": "1"})
        assert blocked.returncode == 2 and "is busy: another posture run is writing to it" in blocked.stderr
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert db_fingerprint(db) == before
    retry = import_bundles(db, second)  # not marked as imported: the retry goes in
    assert retry.returncode == 0, retry.stderr


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB filesystem (tmpfs with a size limit), mounted for this test only."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def fill(disk: Path, leave: int, name: str = "filler") -> Path:
    st = os.statvfs(disk)
    filler = disk / name
    with filler.open("wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


def test_disk_full_while_writing(trusted: str, tmp_path: Path, small_disk: Path) -> None:
    db = small_disk / "inventory.db"
    many = [{"manager": "dpkg", "name": f"package-{n}", "version": "1.0-1"} for n in range(3000)]
    assert import_bundles(db, bundle_file(tmp_path / "a.bundle", payload())).returncode == 0
    before = db_fingerprint(db)
    big = bundle_file(tmp_path / "big.bundle", payload(datetime.now(UTC) + timedelta(minutes=1), packages=many))
    for leave in (160 * 1024, 0):  # space for the lock files but not the rows; then none at all
        filler = fill(small_disk, leave)
        full = import_bundles(db, big)
        assert full.returncode == 2 and "is full: nothing of this run was written" in full.stderr, full.stderr
        if leave == 0:  # the agent on a full disk: a clear error, and no half bundle left behind
            more = fill(small_disk, 0, "filler2")  # what SQLite freed when it closed (its -shm file)
            collect = run_posture("agent", "collect", "--out", str(small_disk / "host.bundle"))
            assert collect.returncode == 2 and "No space left on device" in collect.stderr
            assert sorted(p.name for p in small_disk.iterdir() if "bundle" in p.name) == []
            more.unlink()
        filler.unlink()
        assert db_fingerprint(db) == before
        assert query(db, "PRAGMA integrity_check") == [("ok",)]
    done = import_bundles(db, big)  # space again: the same bundle imports whole
    assert done.returncode == 0, done.stderr
    assert query(db, "SELECT count(*) FROM software WHERE scan_id = 2") == [(3001,)]


# ---- change detection over agent data ---------------------------------------------------------------------


def test_diff_of_two_bundles_with_findings_that_crossed_end_of_life(
    store_db: Path | str,
    trusted: str,
    tmp_path: Path,
) -> None:
    db = store_db
    start = datetime.now(UTC) - timedelta(days=47)  # in the past: a bundle dated a day ahead of the clock is refused
    assert import_bundles(db, bundle_file(tmp_path / "a.bundle", payload(start))).returncode == 0
    assert run_posture("evaluate", "--on", "2026-08-01", db=db).returncode == 0  # Debian 11 LTS: 30 days left
    later = payload(start + timedelta(days=45))
    later["packages"] = [
        {"manager": "dpkg", "name": "nginx", "version": "1.18.0-6.1+deb11u4", "arch": "amd64"},  # patched
        {"manager": "dpkg", "name": "telnetd", "version": "0.17+2.3-4", "arch": "amd64"},  # installed
        {"manager": "pip", "name": "requests", "version": "2.25.1"},
    ]  # openssl removed
    later["listening"] = [*later["listening"], {"protocol": "tcp", "port": 23, "addresses": ["0.0.0.0"],
                                                 "process": "inetd"}]  # fmt: skip
    assert import_bundles(db, bundle_file(tmp_path / "b.bundle", later)).returncode == 0
    assert run_posture("evaluate", "--on", "2026-09-15", db=db).returncode == 0  # ended on 2026-08-31
    other = payload(start + timedelta(days=45))  # another machine's bundle, imported last
    other["host"] = {"machine_id": "cd" * 16, "hostnames": ["hr-app-02"], "addresses": [["ipv4", "10.20.0.16"]],
                     "macs": []}  # fmt: skip
    assert import_bundles(db, bundle_file(tmp_path / "other.bundle", other)).returncode == 0

    result = run_posture("diff", "--format", "json", db=db)  # the newest two bundles of one machine
    assert result.returncode == 0, result.stderr
    d = json.loads(result.stdout)
    assert (d["older"], d["newer"], d["new"], d["gone"]) == (1, 2, [], [])
    [change] = d["changed"]
    assert change["software"] == {
        "installed": {"telnetd": "0.17+2.3-4"},
        "removed": {"openssl": "1.1.1w-0+deb11u1"},
        "changed": {"nginx": {"before": "1.18.0-6.1+deb11u3", "after": "1.18.0-6.1+deb11u4"}},
    }
    assert list(change["opened"]) == ["tcp/23"]
    appeared = {f["rule_id"]: f for f in d["findings"]["appeared"]}
    assert appeared["protect.eol-os"]["crossed_eol"] is True
    assert "protect.eol-within-horizon" in {f["rule_id"] for f in d["findings"]["cleared"]}
    table = run_posture("diff", db=db).stdout
    assert "protect.eol-os on 1 fin-app-01" in table and "(crossed end of life since the last scan)" in table
    assert "installed telnetd 0.17+2.3-4; removed openssl" in table
    md = run_posture("diff", "--format", "md", db=db).stdout
    assert md.startswith("# Changes, scan 1 to scan 2") and "protect.eol-os" in md and "crossed end of life" in md

    third = payload(start + timedelta(days=46))
    assert import_bundles(db, bundle_file(tmp_path / "c.bundle", third)).returncode == 0
    unevaluated = json.loads(run_posture("diff", "--format", "json", db=db).stdout)
    assert (unevaluated["older"], unevaluated["newer"]) == (2, 4)
    assert unevaluated["findings"] is None and "no evaluation after scan 4" in unevaluated["findings_note"]
    # Retention keeps each machine's newest bundle: the other machine's only one stays.
    assert run_posture("prune", "--keep", "1", db=db).returncode == 0
    assert query(db, "SELECT id FROM scans ORDER BY id") == [(3,), (4,)]
    assert query(db, "SELECT count(*), count(scan_id) FROM bundles") == [(4, 2)]  # replays still refused


# ---- an inbox job: bundles arriving unattended ------------------------------------------------------------


def test_inbox_job_imports_and_files_away(store_db: Path | str, trusted: str, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    hook_out = tmp_path / "hook.json"
    hook = tmp_path / "hook.py"
    hook.write_text(f"import sys\nopen({str(hook_out)!r}, 'w').write(sys.stdin.read())\n", encoding="utf-8")
    config = tmp_path / "config.toml"
    config.write_text(f'[jobs.annex]\ninbox = "{inbox}"\nschedule = "*/15 * * * *"\n'
                      f'on_change = "{sys.executable} {hook}"\n', encoding="utf-8")  # fmt: skip
    good = bundle_file(inbox / "fin-app-01.bundle", payload())
    envelope = json.loads(bundle_file(tmp_path / "x.bundle", payload()).read_bytes())
    bad = inbox / "damaged.bundle"
    bad.write_text(json.dumps({**envelope, "signature": base64.b64encode(b"\0" * 64).decode()}))
    old = time.time() - 600
    for path in (good, bad):
        os.utime(path, (old, old))
    arriving = bundle_file(inbox / "still-copying.bundle", payload(datetime.now(UTC) + timedelta(hours=1)))
    assert run_posture("--config", str(config), "config", "check").returncode == 0
    db = store_db
    result = run_posture("--config", str(config), "run", "annex", db=db)
    assert result.returncode == 0, result.stderr
    assert "still arriving; next run" in result.stderr and "refused" in result.stderr
    assert sorted(p.name for p in inbox.iterdir()) == ["imported", "refused", "still-copying.bundle"]
    assert [p.name for p in (inbox / "imported").iterdir()] == ["fin-app-01.bundle"]
    reason = (inbox / "refused" / "damaged.bundle.reason").read_text(encoding="utf-8")
    assert "tampered (the signature of self does not match" in reason
    summary = check_change(json.loads(hook_out.read_text(encoding="utf-8")))
    counts = summary["counts"]
    assert (counts["bundles_imported"], counts["bundles_refused"], summary["changed"]) == (1, 1, True)
    assert summary["scans"] == [1] and [a["name"] for a in summary["assets"]["new"]] == ["fin-app-01"]
    assert len(assets_json(db)) == 1 and query(db, "SELECT count(*) FROM evaluations") == [(1,)]
    os.utime(arriving, (old, old))  # it has arrived: the next run takes it
    again = run_posture("--config", str(config), "run", "annex", db=db)
    assert again.returncode == 0 and sorted(p.name for p in (inbox / "imported").iterdir()) == [
        "fin-app-01.bundle", "still-copying.bundle"]  # fmt: skip
