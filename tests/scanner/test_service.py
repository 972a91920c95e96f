"""`posture service install|remove serve|worker|collector` (issue 18 item 5): long-running units as hardened
as the scheduler's (same user, sandbox and POSTURE_SYSTEM=1; nmap's capabilities only where nmap runs, none
for the server at its default port), checked by systemd's own `verify` and `security --offline`, and
written or removed only where posture owns the file."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_posture

ROLES = ("serve", "worker", "collector")
NMAP = {"AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN", "CapabilityBoundingSet=CAP_NET_RAW CAP_NET_ADMIN",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK AF_PACKET"}  # fmt: skip


def analyze() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is installed with systemd (bootstrap --dev)"
    return found


def exposure(unit: Path) -> float:
    shown = subprocess.run([analyze(), "security", "--offline=true", str(unit)], capture_output=True, text=True,
                           check=False)  # fmt: skip
    score = re.search(rf"Overall exposure level for {re.escape(unit.name)}: ([0-9.]+)", shown.stdout)
    assert score, shown.stdout[-400:] + shown.stderr
    return float(score.group(1))


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "posture.toml"
    config.write_text('[sites.annex]\nscope = ["10.30.0.0/16"]\n', encoding="utf-8")
    return config


def test_units_verify_and_are_hardened_as_the_schedulers(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    units, reference = tmp_path / "units", tmp_path / "scheduler"
    units.mkdir()
    reference.mkdir()
    assert run_posture("schedule", "install", "--unit-dir", str(reference), process=True).returncode == 0
    scheduler = (reference / "posture-jobs.service").read_text(encoding="utf-8").splitlines()
    sandbox = set(scheduler[scheduler.index("Environment=POSTURE_SYSTEM=1"):]) - NMAP - {"Nice=10"}
    sandbox.discard(next(line for line in scheduler if line.startswith("ExecStart=")))
    for role, options in (("serve", ()), ("worker", ("--site", "annex", "--concurrency", "2")), ("collector", ())):
        result = run_posture("--config", str(config), "service", "install", role, *options, "--unit-dir", str(units),
                             process=True)  # ExecStart names this program
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [f"written: {units}/posture-{role}.service", "enable with: systemctl "
                                              f"daemon-reload && systemctl enable --now posture-{role}.service"]
    texts = {role: (units / f"posture-{role}.service").read_text(encoding="utf-8") for role in ROLES}
    for role, text in texts.items():
        lines = set(text.splitlines())
        assert sandbox <= lines, (role, sandbox - lines)  # User=posture, the folders, every hardening line
        assert {"Type=exec", "Restart=on-failure", "KillMode=mixed", "WantedBy=multi-user.target"} <= lines, role
        assert any(re.fullmatch(r"RestartSec=\d+", line) for line in lines), role
        exec_start = shlex.split(re.search(r"^ExecStart=(.+)$", text, re.M).group(1))  # type: ignore[union-attr]
        assert exec_start[1:4] == ["--system", "--config", str(config)] and exec_start[4] == role
    for role in ("worker", "collector"):  # nmap runs there: exactly the scheduler's capabilities and sockets
        assert set(texts[role].splitlines()) >= NMAP, role
    assert {"CapabilityBoundingSet=", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK"} <= \
        set(texts["serve"].splitlines()) and "AmbientCapabilities" not in texts["serve"]  # 8443: no capability
    # The worker's stop: SIGTERM to posture alone (not nmap), its --grace, then time to give the chunk back.
    grace = int(re.search(r" --grace (\d+)", texts["worker"]).group(1))  # type: ignore[union-attr]
    assert int(re.search(r"TimeoutStopSec=(\d+)", texts["worker"]).group(1)) > grace  # type: ignore[union-attr]
    worker_argv = shlex.split(re.search(r"^ExecStart=(.+)$", texts["worker"], re.M).group(1))  # type: ignore[union-attr]
    assert worker_argv[4:] == ["worker", "--grace", str(grace), "--site", "annex", "--concurrency", "2"]
    checked = subprocess.run([*worker_argv, "--help"], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr  # the worker takes exactly these options

    verified = subprocess.run([analyze(), "verify", *(str(p) for p in sorted(units.iterdir()))], capture_output=True,
                              text=True, check=False)  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    floor = exposure(reference / "posture-jobs.service")
    for role in ROLES:
        assert exposure(units / f"posture-{role}.service") <= floor, role


def test_a_low_port_gets_only_the_bind_capability(tmp_path: Path) -> None:
    result = run_posture("service", "install", "serve", "--listen", "0.0.0.0:443", "--unit-dir", str(tmp_path),
                         process=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "posture-serve.service").read_text(encoding="utf-8")
    assert re.search(r"^ExecStart=\S+ --system serve --listen 0\.0\.0\.0:443$", text, re.M)
    lines = set(text.splitlines())
    assert {"AmbientCapabilities=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE"} <= lines
    verified = subprocess.run([analyze(), "verify", str(tmp_path / "posture-serve.service")], capture_output=True,
                              text=True, check=False)  # fmt: skip
    assert verified.returncode == 0, verified.stderr


@pytest.mark.parametrize(("argv", "message"), [
    (("serve", "--listen", "0.0.0.0"), "listen address '0.0.0.0' is not HOST:PORT"),
    (("serve", "--listen", "0.0.0.0:70000"), "is not HOST:PORT"),
    (("worker", "--site", "nowhere"), "no site 'nowhere' in the config file"),
    (("collector", "--site", "annex"), "--listen is for serve, --site and --concurrency for worker"),
    (("--db", "/srv/my inventory.db"), "cannot go into a systemd unit as it is"),
])  # fmt: skip
def test_bad_input_refused_in_one_line(tmp_path: Path, argv: tuple[str, ...], message: str) -> None:
    config = write_config(tmp_path)
    units = tmp_path / "units"
    units.mkdir()
    before = ("--db", argv[1]) if argv[0] == "--db" else ()
    rest = ("worker",) if before else argv
    result = run_posture(*before, "--config", str(config), "service", "install", *rest, "--unit-dir", str(units))
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("posture: error: ") and message in line, line
    assert list(units.iterdir()) == []


def test_remove_deletes_only_the_unit_posture_wrote(tmp_path: Path) -> None:
    foreign = tmp_path / "posture-worker.service"
    foreign.write_text("[Service]\nExecStart=/bin/true\n", encoding="utf-8")
    refused = run_posture("service", "install", "worker", "--unit-dir", str(tmp_path))
    assert refused.returncode == 2 and "was not written by posture" in refused.stderr
    assert foreign.read_text(encoding="utf-8") == "[Service]\nExecStart=/bin/true\n"
    left = run_posture("service", "remove", "worker", "--unit-dir", str(tmp_path))
    assert left.returncode == 0 and "left alone (not written by posture)" in left.stdout and foreign.exists()
    for role in ("serve", "collector"):
        assert run_posture("service", "install", role, "--unit-dir", str(tmp_path)).returncode == 0
    assert run_posture("schedule", "install", "--unit-dir", str(tmp_path)).returncode == 0
    removed = run_posture("service", "remove", "serve", "--unit-dir", str(tmp_path))
    assert removed.returncode == 0 and removed.stdout.splitlines() == [
        f"removed: {tmp_path}/posture-serve.service", "then: systemctl daemon-reload"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["posture-collector.service", "posture-jobs.service",
                                                          "posture-jobs.timer", "posture-worker.service"]
    # Each command removes its own: `schedule remove` leaves the collector, `service remove` the scheduler's.
    assert run_posture("schedule", "remove", "--unit-dir", str(tmp_path)).returncode == 0
    assert run_posture("service", "remove", "collector", "--unit-dir", str(tmp_path)).returncode == 0
    assert [p.name for p in tmp_path.iterdir()] == ["posture-worker.service"]
    again = run_posture("service", "remove", "collector", "--unit-dir", str(tmp_path))
    assert again.returncode == 0 and "no posture-collector.service in" in again.stdout
