"""Issue 11, child processes: the vault key never reaches a child, no core dump holds the secrets, and no
child outlives a posture killed with SIGKILL (nor does its temporary scan folder, past the next scan).

Real processes throughout: the `posture` command, a real nmap against this file's own loopback range
(127.92.3.x, nothing listens there but the kernel), a real on_change hook script, a real XML reader child.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.gen_nmap_xml import write as write_nmap_xml
from scanner.db import is_url
from tests.conftest import POSTURE, query, run_posture

KEY = base64.b64encode(bytes(range(32))).decode()  # a valid POSTURE_KEY
CANARY = "canary-9f3e1d"  # an unrelated variable: proves an allow-list, not just one name removed
SLOW_SCAN = ["--ports", "1-65535", "--max-rate", "1", "--no-version-detection", "--no-os-detection",
             "--unprivileged", "--no-dns"]  # fmt: skip  # hours of work: it is always killed first


def children_of(pid: int) -> dict[int, str]:
    """Live child processes of `pid` (pid -> command name), read from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        if int(rest[1]) == pid and rest[0] != "Z":
            found[int(entry.name)] = name
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def wait_for(condition: object, limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    pytest.fail(f"{what} within {limit}s")


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def start_posture(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([POSTURE, *args], stdout=out, stderr=out, env={**os.environ, **env})


def nmap_child(proc: subprocess.Popen[bytes]) -> tuple[int, list[str]]:
    """The nmap a running `posture scan` started, and its argv (waits until its exec is complete)."""
    found: list[tuple[int, list[str]]] = []

    def started() -> bool:
        assert proc.poll() is None, "posture ended before nmap was seen"
        for pid, name in children_of(proc.pid).items():
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
                if name == "nmap" and "-oX" in argv:  # (the name is set a moment before the argv)
                    found.append((pid, argv))
        return bool(found)

    wait_for(started, 60, "no nmap child started")
    return found[0]


def test_vault_key_not_in_nmap_environment(store_db: Path | str, tmp_path: Path) -> None:
    """Medium #8 "The vault key reaches child processes": "with `POSTURE_KEY` set it is in ... nmap's
    `/proc/PID/environ`". The environ of the running nmap child is read: no key, no unrelated variable."""
    env = {"POSTURE_KEY": KEY, "UNRELATED_TOKEN": CANARY}
    db, log = store_db, tmp_path / "log"
    proc = start_posture("--db", str(db), "scan", "127.92.3.1", *SLOW_SCAN, env=env, log=log)
    try:
        child = environ(nmap_child(proc)[0])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert "POSTURE_KEY" not in child and "UNRELATED_TOKEN" not in child
    assert KEY not in repr(child) and CANARY not in repr(child)
    assert child["PATH"] == os.environ["PATH"]  # what nmap needs is still there


def test_vault_key_not_in_on_change_hook_environment(store_db: Path | str, tmp_path: Path) -> None:
    """Medium #8 "The vault key reaches child processes": "with `POSTURE_KEY` set it is in the `on_change`
    hook's environment". A real hook script dumps its own /proc/self/environ to a file."""
    dump = tmp_path / "hook-environ"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\ncat /proc/$$/environ > '{dump}'\ncat > /dev/null\n")
    hook.chmod(0o700)
    config = tmp_path / "config.toml"
    config.write_text(f'[jobs.children]\ntargets = ["127.92.3.2"]\nports = "1"\ndns = false\n'
                      f'schedule = "0 0 1 1 *"\non_change = "{hook}"\n')  # fmt: skip
    env = {"POSTURE_KEY": KEY, "UNRELATED_TOKEN": CANARY, "JOURNAL_STREAM": "8:1234"}
    result = run_posture("--config", str(config), "run", "children", db=store_db, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "on_change ran" in result.stderr
    hook_env = dict(i.split("=", 1) for i in dump.read_bytes().decode().split("\0") if "=" in i)
    assert "POSTURE_KEY" not in hook_env and "UNRELATED_TOKEN" not in hook_env
    assert KEY not in dump.read_text() and CANARY not in dump.read_text()
    assert hook_env["PATH"] == os.environ["PATH"] and hook_env["JOURNAL_STREAM"] == "8:1234"  # kept on purpose
    assert hook_env["XDG_STATE_HOME"] == os.environ["XDG_STATE_HOME"]  # a hook can run posture on the same data


def test_vault_key_not_in_package_listing_environment(tmp_path: Path) -> None:
    """Medium #8 "The vault key reaches child processes", for the host agent's package listings (dpkg, rpm,
    apk): a real `rpm` on PATH (a script) dumps its environment while `posture agent collect` signs with a
    key sealed under POSTURE_KEY."""
    bin_dir, dump = tmp_path / "bin", tmp_path / "rpm-environ"
    bin_dir.mkdir()
    (bin_dir / "rpm").write_text(f"#!/bin/sh\ncat /proc/$$/environ > '{dump}'\n"
                                 "printf 'bash\\t5.1-2.el9\\tx86_64\\tRed Hat\\n'\n")  # fmt: skip
    (bin_dir / "rpm").chmod(0o700)
    env = {"POSTURE_KEY": KEY, "UNRELATED_TOKEN": CANARY, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    assert run_posture("keys", "generate", env=env).returncode == 0
    result = run_posture("agent", "collect", "--out", str(tmp_path / "host.bundle"), "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert {"manager": "rpm", "name": "bash", "version": "5.1-2.el9", "arch": "x86_64", "vendor": "Red Hat"} in (
        json.loads(result.stdout)["packages"]
    )
    listing = dump.read_bytes().decode()
    assert "POSTURE_KEY" not in listing and KEY not in listing and CANARY not in listing
    assert "LC_ALL=C\0" in listing and f"PATH={env['PATH']}\0" in listing


UNSEAL_AND_REPORT = """
import ctypes, json, resource
from scanner.vault import snmp_credential
before = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)
cred = snmp_credential("core-v2c")
print(json.dumps({"before": before, "dumpable": ctypes.CDLL(None).prctl(3, 0, 0, 0, 0),
                  "core": resource.getrlimit(resource.RLIMIT_CORE), "ok": cred.community == "community-c0re"}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux")
def test_no_core_dump_while_secrets_are_in_memory(tmp_path: Path) -> None:
    """Low "core dumps of a scan hold the community and v3 keys" (build rule: "`prctl(PR_SET_DUMPABLE, 0)`
    / `RLIMIT_CORE=0` while secrets are in memory"): a real process unseals a credential from the vault,
    then asks the kernel whether it may dump core."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    added = run_posture("creds", "add", "snmp", "core-v2c", "--stdin", env=env, input="community-c0re\n")
    assert added.returncode == 0, added.stderr
    done = subprocess.run([sys.executable, "-c", UNSEAL_AND_REPORT], env=env, capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    report = json.loads(done.stdout)
    assert report == {"before": 1, "dumpable": 0, "core": [0, 0], "ok": True}


@pytest.mark.lab
def test_sigkill_of_scan_kills_nmap_and_next_scan_removes_its_folder(store_db: Path | str, tmp_path: Path) -> None:
    """Low "after SIGKILL of `scan`, nmap keeps scanning and the temporary scan folder stays." The nmap child
    must be gone within a few seconds of `kill -9`; the folder (SIGKILL runs no cleanup) goes at the next scan."""
    db = store_db
    proc = start_posture("--db", str(db), "scan", "127.92.3.3", *SLOW_SCAN, env={}, log=tmp_path / "log")
    nmap = None
    try:
        nmap, argv = nmap_child(proc)
        xml = Path(argv[argv.index("-oX") + 1])  # in the scan's own folder
        wait_for(lambda: b"<scaninfo" in xml.read_bytes(), 30, "nmap did not start scanning")
        time.sleep(2)  # nmap is well into its work (its set-up done, a progress line or two written)
        workdir = xml.parent
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: not alive(nmap), 5, "nmap was still running after its posture was killed")
    finally:  # whatever failed, leave nothing running
        proc.kill()
        proc.wait(10)
        if nmap is not None and alive(nmap):
            os.kill(nmap, signal.SIGKILL)
    assert workdir.exists()  # nothing in the killed process could remove it

    again = run_posture("scan", "127.92.3.4", "--ports", "1", "--unprivileged", "--no-dns", db=db, timeout=120)
    assert again.returncode in (0, 3), again.stderr
    assert not workdir.exists() and list(workdir.parent.iterdir()) == []  # the dead scan's folder and its own
    assert query(db, "SELECT id, status FROM scans ORDER BY id")[0] == (1, "interrupted")


def test_sigkill_of_import_leaves_no_reader_child(store_db: Path | str, tmp_path: Path) -> None:
    """Low "After SIGKILL of `import nmap` the XML reader child stays blocked in a pipe write (22 of 22, one
    still there after 27 minutes)". A 60,000-host file is imported and the importer killed mid-way: the
    reader child must be gone within a few seconds, and the inventory holds nothing of the file."""
    xml = tmp_path / "big.xml"
    write_nmap_xml(xml, hosts=60_000)
    db = store_db
    proc = start_posture("--db", str(db), "import", "nmap", str(xml), env={}, log=tmp_path / "log")
    readers: list[int] = []

    def reading() -> bool:
        assert proc.poll() is None, "the import ended before it could be killed"
        readers[:] = list(children_of(proc.pid))
        return bool(readers)

    try:
        wait_for(reading, 30, "no reader child started")
        time.sleep(1.0)  # well inside the file: the pipe is full and the child is writing into it
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: not any(alive(p) for p in readers), 5, "the XML reader outlived the killed import")
    finally:  # whatever failed, leave nothing running
        proc.kill()
        proc.wait(10)
        for pid in readers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert is_url(db) or query(db, "PRAGMA integrity_check") == [("ok",)]  # the SQLite file is whole
    assert query(db, "SELECT count(*) FROM observations") == [(0,)]  # all or nothing: nothing
    listing = run_posture("scans", "--format", "json", db=db)
    assert [s["status"] for s in json.loads(listing.stdout)] == ["interrupted"]  # the next command notices
