"""The service layout (`--system`), the hardened units `schedule install` writes, `schedule remove` and
`status`, and `config check`'s look at hook programs and report folders (issue 16, item 2).

The system root is the test's own (`POSTURE_SYSTEM_ROOT`, set by conftest's `isolated_home`): nothing
here writes to the real /etc or /var, and units go to a temporary --unit-dir.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import POSTURE, no_inventory, run_posture

DATA = Path(__file__).parent / "data"


def system_root() -> Path:
    return Path(os.environ["POSTURE_SYSTEM_ROOT"])


def test_system_layout_puts_every_file_in_the_service_folders(tmp_path: Path) -> None:
    root = system_root()
    added = run_posture("--system", "creds", "add", "snmp", "core", "--stdin", input="public-ish\n")
    assert added.returncode == 0, added.stderr
    key = root / "etc/posture/vault.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and (root / "etc/posture/credentials.json").is_file()
    imported = run_posture("import", "nmap", str(DATA / "nmap793-3hosts.xml"), env={"POSTURE_SYSTEM": "1"})
    assert imported.returncode == 0, imported.stderr
    assert (root / "var/lib/posture/inventory.db").is_file()
    config = root / "etc/posture/config.toml"
    config.write_text('[jobs.mail]\ninbox = "/nonexistent-inbox"\nschedule = "0 3 * * *"\n', encoding="utf-8")
    checked = run_posture("--system", "config", "check")
    assert checked.returncode == 0 and str(config) in checked.stdout, checked.stderr
    assert run_posture("--system", "run", "--due").returncode == 2  # the inbox is missing: logged as failed
    log = (root / "var/log/posture/posture.log").read_text(encoding="utf-8")
    assert "job mail failed: the inbox /nonexistent-inbox" in log
    assert json.loads((root / "var/lib/posture/state/results.json").read_text())["mail"]["result"] == "failed"
    for xdg in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME"):  # a person's folders untouched
        assert not Path(os.environ[xdg]).exists() or not any(Path(os.environ[xdg]).rglob("*")), xdg
    person = run_posture("assets")  # without --system: the per-user default, still empty
    assert person.returncode == 2 and "no inventory at" in person.stderr


def test_units_run_as_the_service_user_hardened_and_verify(tmp_path: Path) -> None:
    result = run_posture("schedule", "install", "--unit-dir", str(tmp_path), process=True)
    assert result.returncode == 0, result.stderr
    assert "useradd --system" in result.stdout and all(len(line) <= 120 for line in result.stdout.splitlines())
    service = (tmp_path / "posture-jobs.service").read_text(encoding="utf-8")
    lines = set(service.splitlines())
    for wanted in ("User=posture", "Environment=POSTURE_SYSTEM=1", "NoNewPrivileges=yes", "ProtectSystem=strict",
                   "AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN", "CapabilityBoundingSet=CAP_NET_RAW CAP_NET_ADMIN",
                   "ReadWritePaths=/var/lib/posture /var/log/posture", "PrivateTmp=yes", "ProtectHome=yes",
                   "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK AF_PACKET"):  # fmt: skip
        assert wanted in lines, wanted
    assert re.search(r"^ExecStart=\S+ --system run --due$", service, re.M)
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is installed with systemd (bootstrap --dev)"
    units = [str(tmp_path / "posture-jobs.service"), str(tmp_path / "posture-jobs.timer")]
    verified = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, check=False)
    assert verified.returncode == 0, verified.stderr
    security = subprocess.run([analyze, "security", "--offline=true", units[0]], capture_output=True, text=True,
                              check=False)  # fmt: skip
    score = re.search(r"Overall exposure level for posture-jobs.service: ([0-9.]+)", security.stdout)
    assert score and float(score.group(1)) <= 2.5, security.stdout[-400:] + security.stderr


def test_remove_deletes_only_the_units_posture_wrote(tmp_path: Path) -> None:
    foreign = tmp_path / "posture-jobs.timer"
    foreign.write_text("[Timer]\nOnCalendar=daily\n", encoding="utf-8")
    refused = run_posture("schedule", "install", "--unit-dir", str(tmp_path), process=True)
    assert refused.returncode == 2 and "was not written by posture" in refused.stderr
    assert not (tmp_path / "posture-jobs.service").exists()  # nothing half-written
    foreign.unlink()
    assert run_posture("schedule", "install", "--unit-dir", str(tmp_path), process=True).returncode == 0
    (tmp_path / "posture-jobs.timer").write_text("[Timer]\nOnCalendar=daily\n", encoding="utf-8")  # someone's
    (tmp_path / "other.service").write_text("[Service]\nExecStart=/bin/true\n", encoding="utf-8")
    removed = run_posture("schedule", "remove", "--unit-dir", str(tmp_path))
    assert removed.returncode == 0, removed.stderr
    assert "removed: " in removed.stdout and "left alone (not written by posture)" in removed.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.service", "posture-jobs.timer"]
    again = run_posture("schedule", "remove", "--unit-dir", str(tmp_path / "empty"))
    assert again.returncode == 0 and "no posture units" in again.stdout


def test_status_shows_next_run_and_last_result(store_db: Path | str, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(f'[jobs.agents]\ninbox = "{inbox}"\nschedule = "15 3 * * *"\n\n'
                      f'[jobs.gone]\ninbox = "{tmp_path / "missing"}"\nschedule = "*/10 * * * *"\n\n'
                      f'[jobs.adhoc]\ninbox = "{inbox}"\n', encoding="utf-8")  # fmt: skip
    db = store_db
    assert run_posture("--config", str(config), "run", "agents", db=db).returncode == 0
    assert run_posture("--config", str(config), "run", "gone", db=db).returncode == 2
    status = run_posture("--config", str(config), "schedule", "status", "--format", "json", db=db)
    assert status.returncode == 0, status.stderr
    rows = {r["job"]: r for r in json.loads(status.stdout)}
    assert rows["agents"]["last_result"] == "ok" and rows["agents"]["due_now"] is False
    nxt = datetime.fromisoformat(rows["agents"]["next_run"])
    assert (nxt.hour, nxt.minute) == (3, 15) and nxt > datetime.now().astimezone()
    assert rows["gone"]["last_result"] == "failed" and "the inbox" in rows["gone"]["last_message"]
    assert rows["adhoc"]["next_run"] is None and rows["adhoc"]["last_finished"] is None
    assert rows["agents"]["last_run"] and rows["gone"]["last_run"] is None and rows["gone"]["due_now"]
    table = run_posture("--config", str(config), "schedule", "status", db=db)
    assert table.returncode == 0 and all(len(line) <= 80 for line in table.stdout.splitlines())
    assert "when named" in table.stdout and "failed: " in table.stdout


def test_config_check_finds_missing_hooks_and_report_folders(tmp_path: Path) -> None:
    plain = tmp_path / "notify.sh"
    plain.write_text("#!/bin/sh\ncat >/dev/null\n", encoding="utf-8")
    plain.chmod(0o644)  # real permission bits: not executable, for root too
    job = '[jobs.j{n}]\ntargets = ["10.{n}.0.0/24"]\n'
    config = tmp_path / "config.toml"
    config.write_text(
        job.format(n=1) + 'on_change = "/nonexistent/notify --json"\n'
        + job.format(n=2) + f'on_change = "{plain}"\n'
        + job.format(n=3) + 'on_change = "no-such-program-posture"\n'
        + job.format(n=4) + f'report = "{tmp_path / "missing" / "r.html"}"\n',
        encoding="utf-8",
    )  # fmt: skip
    result = run_posture("--config", str(config), "config", "check")
    assert result.returncode == 2
    assert "jobs.j1: on_change: /nonexistent/notify does not exist" in result.stderr
    assert f"jobs.j2: on_change: {plain} is not an executable file" in result.stderr
    assert "jobs.j3: on_change: no-such-program-posture does not exist on PATH" in result.stderr
    assert f"jobs.j4: report: the folder {tmp_path / 'missing'} does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    plain.chmod(0o755)
    (tmp_path / "missing").mkdir()
    config.write_text(job.format(n=2) + f'on_change = "{plain}"\n' + job.format(n=4)
                      + f'report = "{tmp_path / "missing" / "r.html"}"\n', encoding="utf-8")  # fmt: skip
    assert run_posture("--config", str(config), "config", "check").returncode == 0


def test_config_check_finds_an_unwritable_report_folder(tmp_path: Path) -> None:
    """A folder the checking user cannot write: 0555 for a user; for root (who writes anyway) a read-only
    bind mount of it in a mount namespace of the check's own."""
    folder = tmp_path / "reports"
    folder.mkdir(mode=0o555)
    config = tmp_path / "config.toml"
    config.write_text(f'[jobs.j]\ntargets = ["10.1.0.0/24"]\nreport = "{folder / "r.html"}"\n', encoding="utf-8")
    argv = [POSTURE, "--config", str(config), "config", "check"]
    if os.geteuid() == 0:
        if not shutil.which("unshare"):
            pytest.skip("root writes into a 0555 folder, and unshare (for a read-only mount) is missing")
        mount = f"mount --bind {folder} {folder} && mount -o remount,ro,bind {folder} && exec \"$@\""
        argv = ["unshare", "--mount", "sh", "-c", mount, "sh", *argv]
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 2 and f"the folder {folder} is not writable" in result.stderr, result.stderr


def test_help_has_examples_and_fits_80_columns() -> None:
    for command in (["config", "check"], ["schedule", "install"], ["schedule", "remove"], ["schedule", "status"]):
        shown = run_posture(*command, "--help", env={"COLUMNS": "80"})
        assert shown.returncode == 0 and "Examples:" in shown.stdout, command
        assert all(len(line) <= 80 for line in shown.stdout.splitlines()), command


def test_run_stops_before_scanning_when_the_hook_is_missing(store_db: Path | str, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(f'[jobs.j]\ninbox = "{inbox}"\non_change = "/nonexistent/notify"\n', encoding="utf-8")
    db = store_db
    result = run_posture("--config", str(config), "run", "j", db=db)
    assert result.returncode == 2 and "on_change: /nonexistent/notify does not exist" in result.stderr
    assert "job j started" not in result.stderr and no_inventory(db)  # nothing scanned, nothing made


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to start a capped child")
def test_service_user_with_ambient_net_raw_counts_as_privileged_for_nmap() -> None:
    """The unit's AmbientCapabilities= as setpriv gives them: a real child running as nobody holding
    CAP_NET_RAW (its /proc status read here) counts as able to send raw packets; one without does not."""
    from scanner.agents.nmap import has_net_raw

    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    capped = [*nobody, "--inh-caps=+net_raw,+net_admin", "--ambient-caps=+net_raw,+net_admin"]
    for argv, expected in ((capped, True), (nobody, False)):
        child = subprocess.Popen([*argv, "sleep", "30"])
        try:
            status = ""
            for _ in range(100):  # until setpriv has exec'd sleep (its own status holds root's caps)
                status = Path(f"/proc/{child.pid}/status").read_text(encoding="ascii")
                if "Name:\tsleep" in status:
                    break
                time.sleep(0.05)
            assert "Name:\tsleep" in status
            assert has_net_raw(status) is expected
        finally:
            child.kill()
            child.wait()
