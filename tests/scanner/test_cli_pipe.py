"""Command-line conventions a shell user relies on: a reader that stops early (`| head`) is not a failure,
`posture --version` starts without loading the later stages, NO_COLOR takes the colour away.

The broken pipe is real: the command's stdout is a pipe whose reading end is already closed, so its first
write fails with EPIPE every time (no race with how fast `head` leaves).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import POSTURE, on_a_terminal, run_posture
from tests.rules.estate import RDP, SMB1, SSH_DEBIAN, WINDOWS_2008, Host, write_estate


def run_into_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `posture ARGS` with stdout a pipe nobody reads any more."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([POSTURE, *args], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
                              check=False)  # fmt: skip
    finally:
        os.close(write_end)


# SQLite only: the subject is a closed stdout, not the store.
@pytest.fixture(scope="module")
def estate_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two end-of-life Windows servers imported from nmap XML and evaluated: a remediation plan to print."""
    folder = tmp_path_factory.mktemp("pipe")
    db = folder / "inventory.db"
    hosts = [Host("10.0.0.5", "00:11:22:33:44:05", [RDP, SMB1], WINDOWS_2008),
             Host("10.0.0.6", "00:11:22:33:44:06", [SSH_DEBIAN, RDP], WINDOWS_2008)]  # fmt: skip
    for args in (["import", "nmap", str(write_estate(folder / "scan.xml", hosts))], ["evaluate"]):
        result = run_posture(*args, db=db)
        assert result.returncode == 0, result.stderr
    return db


@pytest.mark.parametrize(
    "args", [["rules", "list"], ["catalogue", "list"], ["catalogue", "show", "windows"]], ids=" ".join
)
def test_closed_pipe_exits_zero_quietly(args: list[str]) -> None:
    result = run_into_closed_pipe(*args)
    assert (result.returncode, result.stderr) == (0, "")


def test_closed_pipe_on_a_plan_exits_zero_quietly(estate_db: Path) -> None:
    result = run_into_closed_pipe("--db", str(estate_db), "plan", "remediation")
    assert (result.returncode, result.stderr) == (0, "")


def test_closed_pipe_keeps_the_fail_on_gate(estate_db: Path) -> None:
    """A gate decided before printing holds when nobody reads the summary: open findings never become a pass."""
    assert run_into_closed_pipe("--db", str(estate_db), "evaluate", "--fail-on", "high").returncode == 1
    assert run_into_closed_pipe("--db", str(estate_db), "evaluate").returncode == 0


def test_head_of_rules_list(tmp_path: Path) -> None:
    """The issue's own line, through a real shell: `posture rules list | head -1` exits 0 (pipefail)."""
    result = subprocess.run(["bash", "-o", "pipefail", "-c", f"{POSTURE} rules list | head -1"], capture_output=True,
                            text=True, timeout=120, check=False, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr  # its stderr may say "35 rules" if it finished before head left
    assert len(result.stdout.splitlines()) == 1


def test_version_loads_no_later_stage() -> None:
    """`posture --version` answers from the scanner alone: no rules/ or reports/ module, no entry points read."""
    code = ("import sys\nsys.argv = ['posture', '--version']\nimport scanner.cli\ntry:\n    scanner.cli.main()\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules\n"
            "             if m.split('.')[0] in ('rules', 'reports') or m == 'importlib.metadata'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.splitlines() == ["posture, version 0.1.0", "[]"]


def test_help_still_lists_every_stage() -> None:
    """Loading the stages lazily loses none of their commands from `posture --help`."""
    result = run_posture("--help")
    commands = {line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert {"evaluate", "findings", "report", "plan", "catalogue", "rules", "fingerprints", "agent"} <= commands


# SGR parameters that set a colour: 30-39/40-49 (with 38;/48; for 256 and RGB), 90-97, 100-107.
COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-9]|4[0-9]|9[0-7]|10[0-7])(?:;[0-9;]*)?m")
BAR = """\
import time
from scanner.progress import ScanReporter
reporter = ScanReporter("addresses")
reporter.start(10, 1, 0)
reporter.update(5)
time.sleep(0.3)
reporter.finish()
"""


def progress_on_a_terminal(env: dict[str, str]) -> str:
    """The scan's progress bar drawn on a real pseudo-terminal, everything it wrote."""
    return on_a_terminal([sys.executable, "-c", BAR], {"TERM": "xterm-256color", "COLUMNS": "100", **env}, timeout=60)


def test_no_color_is_honoured() -> None:
    """The one coloured thing posture draws (rich's progress bar on a terminal) loses its colours with NO_COLOR;
    tables use bold and italics only, which https://no-color.org leaves alone."""
    coloured = progress_on_a_terminal({"NO_COLOR": ""})
    assert "scanning" in coloured and COLOUR.search(coloured)  # the test sees colour when there is some
    plain = progress_on_a_terminal({"NO_COLOR": "1"})
    assert "scanning" in plain and not COLOUR.search(plain)
