"""Issue 11, files posture moves and writes: a job's inbox and every output, attacked with real symbolic links
(pointing at victim files and folders inside the test's own folder), a real full and a real read-only
filesystem (size-limited tmpfs mounted by the test), /proc; and the modes of what posture creates."""

from __future__ import annotations

import grp
import json
import os
import sqlite3
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import new_store, no_inventory, query, run_posture
from tests.reports.test_procurement import estate
from tests.rules.estate import RDP, WINDOWS_2008, Host, write_estate
from tests.scanner.test_agent import bundle_file, fill, payload, trusted  # noqa: F401 - trusted is a fixture

PRECIOUS = b"the victim's own contents\n"


def victim_file(tmp_path: Path, name: str = "victim.txt") -> Path:
    victim = tmp_path / name
    victim.write_bytes(PRECIOUS)
    return victim


def aged(*paths: Path) -> None:
    """Old enough for the inbox to take (a file younger than a minute may still be arriving)."""
    old = time.time() - 600
    for path in paths:
        os.utime(path, (old, old), follow_symlinks=False)


def refusal(result: subprocess.CompletedProcess[str], says: str) -> None:
    """The CLI's refusal: exit 2 and one line on stderr, never a traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("posture: ") and says in result.stderr, result.stderr


def leftovers(folder: Path) -> list[str]:
    """Temporary files a write left behind (any name with .tmp in it that is not a planted link)."""
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name and not p.is_symlink())


def inbox_job(tmp_path: Path, inbox: Path | None = None, extra: str = "") -> Path:
    """A config file with one inbox job, `annex`."""
    config = tmp_path / "config.toml"
    inbox = inbox or tmp_path / "inbox"
    config.write_text(f'[jobs.annex]\ninbox = "{inbox}"\nschedule = "*/15 * * * *"\n{extra}', encoding="utf-8")
    return config


@contextmanager
def tmpfs(where: Path, size: str = "1m", read_only: bool = False) -> Iterator[Path]:
    """A real small filesystem, mounted for the test only (read-only after mounting, if asked)."""
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


# ---- High 2: the inbox follows symlinks, as root ------------------------------------------------------------


@pytest.mark.usefixtures("trusted")
@pytest.mark.parametrize("folder", ["refused", "imported"])
def test_inbox_symlinked_folder_is_refused(store_db: Path | str, tmp_path: Path, folder: str) -> None:
    """High 2: "`ln -s /some/dir inbox/refused` and a refused file: the job moves the attacker's file into that
    folder (with /etc/profile.d, code execution). ... `imported/` behaves the same way." """
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    victim = tmp_path / "profile.d"
    victim.mkdir()
    (inbox / folder).symlink_to(victim)
    if folder == "refused":
        dropped = inbox / "evil.sh"
        dropped.write_text("echo owned\n", encoding="utf-8")
    else:
        dropped = bundle_file(inbox / "fin-app-01.bundle", payload())
    aged(dropped)
    db = store_db
    result = run_posture("--config", str(inbox_job(tmp_path)), "run", "annex", db=db)
    assert result.returncode == 2, result.stderr
    assert f"the inbox's {folder}/ in {inbox} is not a real folder" in result.stderr
    assert "nothing was imported or moved" in result.stderr and "Traceback" not in result.stderr
    assert list(victim.iterdir()) == []  # nothing moved into the linked folder
    assert dropped.read_bytes()  # still in the inbox, for the next run once the link is gone
    assert no_inventory(db) or query(db, "SELECT count(*) FROM assets") == [(0,)]
    (inbox / folder).unlink()  # the admin removes the link: the next run works
    again = run_posture("--config", str(inbox_job(tmp_path)), "run", "annex", db=db)
    assert again.returncode == 0, again.stderr
    assert [p.name for p in (inbox / folder).iterdir() if not p.name.endswith(".reason")] == [dropped.name]


def test_inbox_reason_file_link_is_never_written_through(store_db: Path | str, tmp_path: Path) -> None:
    """High 2: "`ln -s /some/file inbox/refused/junk.bundle.reason` beside `junk.bundle`: the victim file is
    overwritten with the refusal reason." """
    inbox = tmp_path / "inbox"
    (inbox / "refused").mkdir(parents=True)
    victim = victim_file(tmp_path)
    (inbox / "refused" / "junk.bundle.reason").symlink_to(victim)
    junk = inbox / "junk.bundle"
    junk.write_text("not a bundle", encoding="utf-8")
    aged(junk)
    result = run_posture("--config", str(inbox_job(tmp_path)), "run", "annex", db=store_db)
    assert result.returncode == 0, result.stderr
    assert victim.read_bytes() == PRECIOUS
    assert (inbox / "refused" / "junk.bundle.reason").readlink() == victim  # the planted link, untouched
    assert not junk.exists()
    assert (inbox / "refused" / "junk.1.bundle").read_text(encoding="utf-8") == "not a bundle"
    reason = inbox / "refused" / "junk.1.bundle.reason"
    assert not reason.is_symlink() and "junk.bundle: not a signed posture bundle" in reason.read_text(encoding="utf-8")


@pytest.mark.usefixtures("trusted")
def test_inbox_reads_never_follow_a_link_swapped_in_after_the_check(
        request: pytest.FixtureRequest, store_kind: str, store_db: Path | str, tmp_path: Path) -> None:  # fmt: skip
    """High 2, the moment between the inbox's check of an entry and its read: a link put there by then is
    refused at the open (O_NOFOLLOW), never read as root. The race is not timed here: the read itself is
    given the link, as it would be after a swap. The same link named on the command line is followed."""
    from scanner.bundles import DEFAULT_MAX_BYTES, import_files
    from scanner.store import Store

    good = bundle_file(tmp_path / "elsewhere.bundle", payload())
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    link = inbox / "swapped.bundle"
    link.symlink_to(good)
    said: list[str] = []
    with Store.open(store_db) as store:
        outcome = import_files(store, [link], DEFAULT_MAX_BYTES, lambda m, _: said.append(m), follow_links=False)
    assert outcome.imported == [] and len(outcome.refused) == 1
    assert "not a regular file" in outcome.refused[0][1], outcome.refused
    (tmp_path / "by-hand").mkdir()
    by_hand = run_posture("import", "bundle", str(link), db=new_store(request, store_kind, tmp_path / "by-hand"))
    assert by_hand.returncode == 0, by_hand.stderr


@pytest.mark.usefixtures("trusted")
def test_inbox_entries_that_are_links_are_never_followed(store_db: Path | str, tmp_path: Path) -> None:
    """High 2 ("The inbox follows symlinks, as root"): an inbox entry that is a link (here to a good bundle
    elsewhere) or not a regular file (a FIFO) is left alone, never read or moved; a linked inbox is refused."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    elsewhere = bundle_file(outside / "elsewhere.bundle", payload())
    (inbox / "elsewhere.bundle").symlink_to(elsewhere)
    os.mkfifo(inbox / "pipe.bundle")
    aged(elsewhere, inbox / "elsewhere.bundle", inbox / "pipe.bundle")
    db = store_db
    result = run_posture("--config", str(inbox_job(tmp_path)), "run", "annex", db=db, timeout=60)
    assert result.returncode == 0, result.stderr
    for name in ("elsewhere.bundle", "pipe.bundle"):
        assert f"inbox: {name} is not a regular file (a link, a folder, a pipe); left alone" in result.stderr
    assert (inbox / "elsewhere.bundle").readlink() == elsewhere
    assert stat.S_ISFIFO((inbox / "pipe.bundle").lstat().st_mode)
    assert list((inbox / "imported").iterdir()) == list((inbox / "refused").iterdir()) == []
    assert elsewhere.is_file() and query(db, "SELECT count(*) FROM assets") == [(0,)]  # not imported

    linked = tmp_path / "linked-inbox"
    linked.symlink_to(inbox)
    result = run_posture("--config", str(inbox_job(tmp_path, linked)), "run", "annex", db=db)
    assert result.returncode == 2 and f"the inbox {linked} is a symbolic link" in result.stderr, result.stderr


# ---- Medium 5: output writes follow symlinks ------------------------------------------------------------------

OUTPUTS = {  # the command, and the file name it writes
    "report-html": (["report", "--html"], "report.html"),
    "plan-odt": (["plan", "procurement", "--format", "odt", "--out"], "p.odt"),
    "plan-docx": (["plan", "procurement", "--format", "docx", "--out"], "p.docx"),
    "plan-md": (["plan", "procurement", "--format", "md", "--out"], "p.md"),
    "plan-csv": (["plan", "procurement", "--format", "csv", "--out"], "p.csv"),
}


@pytest.mark.parametrize("what", OUTPUTS)
def test_outputs_never_write_through_a_link(store_db: Path | str, tmp_path: Path, what: str) -> None:
    """Medium 5: "A symlink at `PATH.tmp` is followed by `report --html PATH` and `--format odt|docx --out PATH`
    (victim overwritten); `plan procurement --format md|csv --out SYMLINK` writes through the link."

    Both links are planted for every output: the old temporary name, and the output path itself. Neither
    victim changes; the output path becomes a file of its own (the link is replaced, not followed)."""
    db, config, _ = estate(tmp_path, store_db)
    argv, name = OUTPUTS[what]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / name
    at_tmp, at_target = victim_file(tmp_path, "victim-tmp"), victim_file(tmp_path, "victim-target")
    (out_dir / f"{name}.tmp").symlink_to(at_tmp)
    out.symlink_to(at_target)
    result = run_posture("--config", str(config), *argv, str(out), db=db)
    assert result.returncode == 0, result.stderr
    assert at_tmp.read_bytes() == at_target.read_bytes() == PRECIOUS
    assert not out.is_symlink() and out.stat().st_size > 100 and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert (out_dir / f"{name}.tmp").readlink() == at_tmp and leftovers(out_dir) == []


def _keys_trust(tmp_path: Path) -> tuple[list[str], Path]:
    made = run_posture("keys", "generate")
    assert made.returncode == 0, made.stderr
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "posture"
    return ["keys", "trust", str(config / "keys" / "signing.pub"), "--name", "self"], config / "trusted-keys.json"


def _creds_add(tmp_path: Path) -> tuple[list[str], Path]:
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "posture"
    config.mkdir(parents=True)
    return ["creds", "add", "snmp", "core", "--stdin"], config / "credentials.json"


def _jobs_json(tmp_path: Path) -> tuple[list[str], Path]:
    (tmp_path / "inbox").mkdir()
    state = Path(os.environ["XDG_STATE_HOME"]) / "posture"
    state.mkdir(parents=True)
    return ["--config", str(inbox_job(tmp_path)), "--db", str(tmp_path / "i.db"), "run", "annex"], state / "jobs.json"


def _catalogue(tmp_path: Path) -> tuple[list[str], Path]:
    cycle = {"releaseCycle": "7", "eol": "2024-06-30"}
    export = tmp_path / "rhel.json"
    export.write_text(json.dumps({"slug": "rhel", "title": "RHEL", "releases": [cycle]}), encoding="utf-8")
    folder = Path(os.environ["XDG_DATA_HOME"]) / "posture" / "catalogue"
    folder.mkdir(parents=True)
    return ["catalogue", "update", str(export)], folder / "updates.json"


def _agent_collect(tmp_path: Path) -> tuple[list[str], Path]:
    assert run_posture("keys", "generate").returncode == 0
    return ["agent", "collect", "--out", str(tmp_path / "host.bundle")], tmp_path / "host.bundle"


STATE_FILES = {"keys-trust": _keys_trust, "creds-add": _creds_add, "jobs-json": _jobs_json,
               "catalogue-update": _catalogue, "agent-collect": _agent_collect}  # fmt: skip


@pytest.mark.parametrize("what", STATE_FILES)
def test_state_and_config_files_never_written_through_a_link(tmp_path: Path, what: str) -> None:
    """Medium 5 ("Output writes follow symlinks"), for the other files posture writes: the trust list and the
    vault (once written through a fixed `.tmp` name, opened with O_TRUNC), jobs.json, the catalogue's
    updates, and a bundle from `agent collect --out` (its own atomic writer before; now the shared one).

    A link at the old temporary name, and for the bundle (an output, not a file read back and rewritten)
    at the output path too."""
    # SQLite only: the files under test are posture's state and config files; the one inventory (jobs-json's
    # run of an empty inbox) is incidental.
    argv, target = STATE_FILES[what](tmp_path)
    at_tmp, at_target = victim_file(tmp_path, "victim-tmp"), victim_file(tmp_path, "victim-target")
    (target.parent / f"{target.name}.tmp").symlink_to(at_tmp)
    if what == "agent-collect":
        target.symlink_to(at_target)
    result = run_posture(*argv, input="public\n")
    assert result.returncode == 0, result.stderr
    assert at_tmp.read_bytes() == at_target.read_bytes() == PRECIOUS
    assert not target.is_symlink() and target.stat().st_size > 10 and leftovers(target.parent) == []


# ---- Low: outputs on a full or read-only disk, or /proc: tracebacks ----------------------------------------


@pytest.mark.parametrize("where", ["full", "read-only", "proc"])
def test_outputs_on_a_full_or_read_only_disk_or_proc(store_db: Path | str, tmp_path: Path, where: str) -> None:
    """Low: "Outputs: a read-only filesystem, a full disk (leaves `p.docx.tmp`), `--html /proc/version`:
    tracebacks." Now one line, exit 2, and no temporary file left behind."""
    db, config, _ = estate(tmp_path, store_db)
    says = {"full": "No space left on device", "read-only": "Read-only file system", "proc": "could not write"}
    with tmpfs(tmp_path / "small", "256k", read_only=where == "read-only") as disk:
        if where == "full":
            fill(disk, 0)
        for argv, name in OUTPUTS.values():
            out = Path("/proc/version") if where == "proc" else disk / name
            refusal(run_posture("--config", str(config), *argv, str(out), db=db), says[where])
        assert sorted(p.name for p in disk.iterdir()) == (["filler"] if where == "full" else [])
    assert Path("/proc/version").read_text(encoding="utf-8").startswith("Linux")


# ---- Low: the inventory, report, data folder and log are world-readable ---------------------------------


def _modes(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `root` (itself excluded): relative path -> (mode bits, group id)."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        out[str(path.relative_to(root))] = (stat.S_IMODE(st.st_mode), st.st_gid)
    return out


@pytest.mark.parametrize("shared", [False, True], ids=["private", "group"])
def test_created_files_are_private_or_shared_with_the_group(tmp_path: Path, shared: bool) -> None:
    """Low: "The inventory, report, data folder and log are world-readable (644/755)". Files posture creates
    are 0600 and its folders 0700; `[files] group = NAME` in the config makes them 0640/0750 in that group."""
    # SQLite only: the modes of the SQLite file and its -wal and -shm files are part of what is tested.
    group = next(g for g in grp.getgrall() if g.gr_gid != os.getgid())  # a real group of this machine
    gid = group.gr_gid if shared else os.getgid()
    file_mode, dir_mode = (0o640, 0o750) if shared else (0o600, 0o700)
    home = Path(os.environ["XDG_DATA_HOME"]).parent
    (tmp_path / "inbox").mkdir()
    (tmp_path / "out").mkdir()
    files = f'[files]\ngroup = "{group.gr_name}"\n' if shared else ""
    config = inbox_job(tmp_path, extra=f'report = "{tmp_path / "out" / "job.html"}"\n{files}')
    xml = write_estate(tmp_path / "scan.xml", [Host("10.4.0.10", "00:11:22:00:04:10", [RDP], WINDOWS_2008)])
    assert run_posture("--config", str(config), "import", "nmap", str(xml)).returncode == 0
    db = Path(os.environ["XDG_DATA_HOME"]) / "posture" / "inventory.db"
    reader = sqlite3.connect(db)  # holds the database open, so its -wal and -shm files stay to be checked
    try:
        reader.execute("SELECT count(*) FROM assets").fetchone()
        ran = run_posture("--config", str(config), "run", "annex")
        assert ran.returncode == 0, ran.stderr
        plan = run_posture("--config", str(config), "plan", "procurement", "--format", "docx", "--out",
                           str(tmp_path / "out" / "p.docx"))  # fmt: skip
        assert plan.returncode == 0, plan.stderr
        made = _modes(home)
        for path in ("data/posture/inventory.db-wal", "data/posture/inventory.db-shm", "state/posture/posture.log",
                     "state/posture/jobs.json", "state/posture/locks/annex.lock"):  # fmt: skip
            assert made[path] == (file_mode, gid), path
    finally:
        reader.close()
    for folder in ("data", "data/posture", "state", "state/posture", "state/posture/locks"):
        assert made.pop(folder) == (dir_mode, gid), folder
    assert made and set(made.values()) == {(file_mode, gid)}, made  # every file: the db, log, jobs.json...
    outputs = _modes(tmp_path / "out") | {f"inbox/{k}": v for k, v in _modes(tmp_path / "inbox").items()}
    assert outputs == {"job.html": (file_mode, gid), "p.docx": (file_mode, gid),
                       "inbox/imported": (dir_mode, gid), "inbox/refused": (dir_mode, gid)}  # fmt: skip


def test_unknown_files_group_is_a_config_error(tmp_path: Path) -> None:
    """Low (world-readable files): the sharing group must exist; a typo is a one-line config error."""
    # SQLite only: what must not be made is the SQLite file (a path given as a file).
    (tmp_path / "inbox").mkdir()
    config = inbox_job(tmp_path, extra='[files]\ngroup = "no-such-group-posture"\n')
    refusal(run_posture("--config", str(config), "config", "check"), "no group named 'no-such-group-posture'")
    register = tmp_path / "register.csv"
    register.write_text("address,owner\n10.6.0.10,Finance\n", encoding="utf-8")
    refusal(run_posture("--config", str(config), "import", "assets", str(register), db=tmp_path / "i.db"),
            "no group named")  # a command that makes the inventory, so it makes a file  # fmt: skip
    assert not (tmp_path / "i.db").exists()


def test_log_and_lock_files_never_opened_through_a_link(store_db: Path | str, tmp_path: Path) -> None:
    """Medium 5 ("Output writes follow symlinks"), for the files posture appends to: the run log (appended
    through a link planted at its name before) and a job's lock file. The log is skipped with a warning
    and the work goes on; a linked lock stops the job with one line."""
    (tmp_path / "inbox").mkdir()
    config = inbox_job(tmp_path)
    state = Path(os.environ["XDG_STATE_HOME"]) / "posture"
    (state / "locks").mkdir(parents=True)
    at_log, at_lock = victim_file(tmp_path, "victim-log"), victim_file(tmp_path, "victim-lock")
    (state / "posture.log").symlink_to(at_log)
    (state / "locks" / "annex.lock").symlink_to(at_lock)
    result = run_posture("--config", str(config), "run", "annex", db=store_db)
    assert result.returncode == 2 and "posture: warning: cannot write the log" in result.stderr, result.stderr
    assert "cannot open the lock file" in result.stderr and "Traceback" not in result.stderr
    assert at_log.read_bytes() == at_lock.read_bytes() == PRECIOUS
    (state / "locks" / "annex.lock").unlink()
    result = run_posture("--config", str(config), "run", "annex", db=store_db)
    assert result.returncode == 0 and "job annex finished" in result.stderr, result.stderr
    assert at_log.read_bytes() == PRECIOUS and (state / "posture.log").is_symlink()
