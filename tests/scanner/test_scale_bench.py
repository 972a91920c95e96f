"""`bench/run.py scale` works end to end at a tiny size: its own PostgreSQL, `posture serve`, 8 collector
processes uploading through it, the COPY floor, then evaluate on PostgreSQL beside the SQL pass. Only that
the command runs and prints both tables is checked: the numbers are the benchmark's, never asserted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]


def test_scale_benchmark_runs_end_to_end() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "scale", "--hosts", "600", "--assets",
                           "2000"], capture_output=True, text=True, env=env, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "600 addresses in 3 chunks of 256" in out
    assert re.search(r"^\* plain COPY of the same rows.* [\d,]+ +[\d.]+ +1\.00x$", out, re.M)
    assert re.search(r"^  posture serve <- 8 collectors .* [\d,]+ +[\d.]+ +[\d.]+x$", out, re.M)
    assert "2,000 assets, 40,000 software rows" in out
    assert re.search(r"^  posture evaluate, first run .* [\d.]+x$", out, re.M)
