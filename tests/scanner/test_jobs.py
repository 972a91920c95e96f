"""Scan jobs: the config checked line by line, due-ness on frozen time, a real run against the lab with
its report and change hook, the one-at-a-time lock under two processes, and systemd units verified."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from scanner.compat import UTC
from scanner.jobs import Job, due
from scanner.lab import Lab
from tests.conftest import POSTURE, run_posture
from tests.scanner.test_bad_input import empty_netns  # noqa: F401 - a fixture
from tests.scanner.test_change_hook import check_change


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = '[jobs.town-hall]\ntargets = ["10.20.0.0/24"]\nschedule = "30 2 * * 1-5"\n'
JOB = '[jobs.town-hall]\ntargets = ["10.20.0.0/24"]\n'
ANNEX = '\n[jobs.annex]\ntargets = ["10.20.0.128/25"]\n'
BAD = [
    (JOB + 'tagets = ["10.20.1.0/24"]\n', "config.toml:3: jobs.town-hall: unknown key 'tagets'"),
    (JOB + 'schedule = "61 * * * *"\n', "config.toml:3: jobs.town-hall: '61 * * * *' is not a cron expression"),
    (JOB + 'creds = ["nope"]\n', "config.toml:3: jobs.town-hall: unknown credential 'nope'"),
    (GOOD + ANNEX, "config.toml:6: jobs.annex: its targets overlap those of jobs.town-hall"),
    ('[jobs.x]\ntargets = ["10.20.0.1;rm -rf /"]\n', "10.20.0.1;rm -rf /"),
    # Methods are the discovery sources of the registry (scanner.sources); a source that is not told what to
    # read by the job's targets needs its own table, and a network source refuses one.
    (JOB + 'methods = ["nmap", "carrier-pigeon"]\n', "config.toml:3: jobs.town-hall: unknown method 'carrier-pigeon' "
     "(methods are "),
    (JOB + "\n[jobs.town-hall.nmap]\nports = \"22\"\n", "the nmap method takes the job's targets"),
]


def test_config_check(tmp_path: Path) -> None:
    ok = run_posture("--config", str(write(tmp_path, GOOD)), "config", "check")
    assert ok.returncode == 0 and "1 jobs: town-hall" in ok.stdout
    for text, words in BAD:
        result = run_posture("--config", str(write(tmp_path, text)), "config", "check")
        assert result.returncode == 2 and words in result.stderr, (text, result.stderr)
    allowed = JOB + "allow_overlap = true\n" + ANNEX + "allow_overlap = true\n"
    assert run_posture("--config", str(write(tmp_path, allowed)), "config", "check").returncode == 0


def test_due_on_frozen_time() -> None:
    jobs = {"nightly": Job("nightly", ("10.0.0.1",), schedule="30 2 * * *"), "adhoc": Job("adhoc", ("10.0.0.2",))}
    last = {"nightly": "2026-11-22T02:30:00+00:00"}
    assert due(jobs, last, datetime(2026, 11, 23, 2, 29, tzinfo=UTC)) == []
    assert due(jobs, last, datetime(2026, 11, 23, 2, 30, tzinfo=UTC)) == ["nightly"]
    assert due(jobs, {}, datetime(2026, 11, 23, 12, 0, tzinfo=UTC)) == ["nightly"]  # never run: due now
    assert due(jobs, {"nightly": "2026-11-23T02:30:05+00:00"}, datetime(2026, 11, 23, 23, 59, tzinfo=UTC)) == []


@pytest.fixture
def lab_job(lab: Lab, tmp_path: Path) -> tuple[Path, Path, Path]:
    hook_out = tmp_path / "hook.json"
    hook = tmp_path / "hook.py"
    hook.write_text(f"import sys\nopen({str(hook_out)!r}, 'w').write(sys.stdin.read())\n", encoding="utf-8")
    report = tmp_path / "report.html"
    config = write(tmp_path, (
        f'[jobs.lab]\ntargets = ["{lab.targets[0]}"]\nports = "{lab.ports_spec}"\ndns = false\n'
        f'schedule = "0 0 1 1 *"\nreport = "{report}"\non_change = "{sys.executable} {hook}"\n'))  # fmt: skip
    return config, report, hook_out


def test_run_job_with_report_and_change_hook(
    store_db: Path | str,
    lab: Lab,
    lab_job: tuple[Path, Path, Path],
    tmp_path: Path,
    empty_netns: str,  # noqa: F811 - the fixture imported above
) -> None:
    """The hook reads one documented shape (scanner/schemas/change.schema.json) on a first run, a later one
    and one that found nothing."""
    config, report, hook_out = lab_job
    db = store_db
    result = run_posture("--config", str(config), "run", "lab", db=db)
    assert result.returncode == 0, result.stderr
    assert "job lab finished" in result.stderr and report.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    first = check_change(json.loads(hook_out.read_text(encoding="utf-8")))
    assert (first["job"], first["scans"], first["compared_with"], first["report"]) == ("lab", [1], [], str(report))
    assert first["changed"] and not first["nothing_answered"] and first["evaluation"] == 1
    [asset] = first["assets"]["new"]  # the first scan: everything it saw is new, with its name and address
    assert asset["addresses"] == [lab.targets[0]] and asset["name"] and asset["lifecycle_state"]
    assert first["counts"]["new_assets"] == 1 and first["counts"]["crossed_eol"] == 0
    assert first["findings"] == {"appeared": [], "cleared": []} and first["score"]["assets"] == 1  # a clean host
    hook_out.unlink()
    due_now = run_posture("--config", str(config), "run", "--due", db=db)  # yearly, and it just ran: not due
    assert due_now.returncode == 0 and due_now.stderr == "" and not hook_out.exists()  # a quiet minute: silent
    log = (Path(os.environ["XDG_STATE_HOME"]) / "posture" / "posture.log").read_text(encoding="utf-8")
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO \[\d+\] job lab started: targets ", log, re.M)
    assert "job lab finished: 1 new, 0 gone, 0 changed assets" in log
    unknown = run_posture("--config", str(config), "run", "nope", db=db)
    assert unknown.returncode == 2 and "no job 'nope'" in unknown.stderr

    # A later run scans another port only: the ssh port nmap saw open is now closed.
    config.write_text(config.read_text(encoding="utf-8").replace(lab.ports_spec, str(lab.ports[1])), encoding="utf-8")
    assert run_posture("--config", str(config), "run", "lab", db=db).returncode == 0
    later = check_change(json.loads(hook_out.read_text(encoding="utf-8")))
    assert (later["scans"], later["compared_with"], later["evaluation"]) == ([2], [1], 2)
    [changed] = later["assets"]["changed"]
    assert changed["id"] == asset["id"] and list(changed["changes"]["closed"]) == [f"tcp/{lab.ports[0]}"]
    assert later["assets"]["new"] == later["assets"]["gone"] == [] and later["notes"] == []
    hook_out.unlink()

    # Inside a namespace with no network nothing answers: the asset is gone, and the hook says why.
    nothing = run_posture("--config", str(config), "run", "lab", db=db, netns=empty_netns)
    assert nothing.returncode == 0 and "no host answered" in nothing.stderr, nothing.stderr
    gone = check_change(json.loads(hook_out.read_text(encoding="utf-8")))
    assert gone["nothing_answered"] and gone["scans"] == [3] and gone["compared_with"] == [2]
    assert [a["id"] for a in gone["assets"]["gone"]] == [asset["id"]] and gone["assets"]["new"] == []


def test_run_log_has_no_secret(lab: Lab, tmp_path: Path) -> None:
    """A job with an SNMP credential: its log file (from [log] file) and stderr name the job, never the
    community. Under systemd (JOURNAL_STREAM set) stderr lines carry journald priorities."""
    secret = "c0mmunity-do-not-log-5e1f"
    added = run_posture("creds", "add", "snmp", "site-v2c", "--stdin", input=f"{secret}\n")
    assert added.returncode == 0, added.stderr
    log = tmp_path / "logs" / "jobs.log"
    config = write(tmp_path, (
        f'[log]\nfile = "{log}"\n\n[jobs.lab]\ntargets = ["{lab.targets[0]}"]\nports = "{lab.ports_spec}"\n'
        'dns = false\nmethods = ["nmap", "snmp"]\ncreds = ["site-v2c"]\n'))  # fmt: skip
    result = run_posture("--config", str(config), "run", "lab", db=tmp_path / "inventory.db",
                         env={"JOURNAL_STREAM": "8:12345"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "<6>posture: job lab started" in result.stderr and "<6>posture: job lab finished" in result.stderr
    text = log.read_text(encoding="utf-8")
    assert "job lab started" in text and "job lab finished" in text
    assert secret not in text and secret not in result.stderr and secret not in result.stdout
    bad = write(tmp_path, '[log]\nfolder = "/tmp"\n')
    refused = run_posture("--config", str(bad), "config", "check")
    assert refused.returncode == 2 and "[log] takes one key, file" in refused.stderr


def test_one_run_at_a_time(store_db: Path | str, lab_job: tuple[Path, Path, Path], tmp_path: Path) -> None:
    config, _, _ = lab_job
    db = store_db
    argv = [POSTURE, "--db", str(db), "--config", str(config), "run", "lab"]
    runs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in runs]
    codes = sorted(code for code, _ in outcomes)
    assert codes == [0, 2], outcomes
    assert any("job lab is already running (pid" in err for _, err in outcomes)
    for p in runs:
        for stream in (p.stdout, p.stderr):
            if stream:
                stream.close()


def test_schedule_units_verify(tmp_path: Path) -> None:
    result = run_posture("schedule", "install", "--dir", str(tmp_path), process=True)  # ExecStart names this program
    assert result.returncode == 0, result.stderr
    service, timer = tmp_path / "posture-jobs.service", tmp_path / "posture-jobs.timer"
    assert "run --due" in service.read_text(encoding="utf-8") and "OnCalendar=" in timer.read_text(encoding="utf-8")
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is installed with systemd (bootstrap --dev)"
    verified = subprocess.run([analyze, "verify", str(service), str(timer)], capture_output=True, text=True,
                              check=False)  # fmt: skip
    assert verified.returncode == 0, verified.stderr
