"""Peak memory of one real `posture` run, for the tests of the hardening issue that are about memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import POSTURE

# A fresh Python whose only children are the posture process (and the processes posture forks, such as
# the nmap XML reader): RUSAGE_CHILDREN's ru_maxrss is then the largest of them, in KiB on Linux.
_WRAPPER = (
    "import json, resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=600, check=False)\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print(json.dumps([done.returncode, done.stdout, done.stderr, peak]))\n"
)


def run_measured(*args: str, db: Path | str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run `posture --db DB ARGS...`; return its result and the peak RSS of it and its children, in MiB."""
    argv = [POSTURE, "--db", str(db), *args]
    wrapper = subprocess.run([sys.executable, "-c", _WRAPPER, *argv], capture_output=True, text=True, timeout=700,
                             check=True)  # fmt: skip
    code, stdout, stderr, peak_kib = json.loads(wrapper.stdout)
    return subprocess.CompletedProcess(argv, code, stdout, stderr), peak_kib / 1024
