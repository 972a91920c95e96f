"""Hostile host-agent bundles (issue 11): one bad file is one refused file, memory is spent only after the
signature, and a signed bundle's values are held to what a real host can say. Real files, a real FIFO,
real Ed25519 keys made by `posture keys generate`, the real `posture` command for every import."""

from __future__ import annotations

import base64
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scanner import bundles
from scanner.compat import UTC
from tests.conftest import query, run_posture
from tests.scanner.test_agent import bundle_file, import_bundles, payload
from tests.scanner.test_agent import trusted as trusted  # the fixture: this machine's signing key, trusted
from tests.security.measure import run_measured

DEEP = "[" * 200_000 + "]" * 200_000  # the 400 KB file of the issue


def aged(*paths: Path) -> None:
    """Older than the inbox's settling time, as a file that arrived a while ago."""
    old = time.time() - 180
    for path in paths:
        os.utime(path, (old, old))


def test_deep_brackets_refused_and_the_others_imported(trusted: str, store_db: Path | str, tmp_path: Path) -> None:
    """High 1, "One unsigned file breaks a job's inbox for good": `[` x200,000 then `]` x200,000 made the
    import a RecursionError traceback; it is one refused file, with its reason, and the good one goes in."""
    hostile = tmp_path / "hostile.bundle"
    hostile.write_text(DEEP, encoding="ascii")
    good = bundle_file(tmp_path / "good.bundle", payload())
    db = store_db
    result = import_bundles(db, hostile, good)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"refused {hostile}: not a signed posture bundle" in result.stderr
    assert "1 of 2 bundle(s) refused" in result.stderr and f"imported {good}" in result.stderr
    assert query(db, "SELECT file FROM bundles") == [(str(good),)]


def test_deep_brackets_in_a_job_inbox(trusted: str, store_db: Path | str, tmp_path: Path) -> None:
    """High 1, "every `posture run --due` exits 1 with a RecursionError traceback, a good bundle beside it
    is never imported, no file is moved, `jobs.json` is never written": the hostile file is filed in
    refused/ with its reason, the good one is imported, and the run is recorded (not due again)."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    hostile = inbox / "hostile.bundle"
    hostile.write_text(DEEP, encoding="ascii")
    good = bundle_file(inbox / "good.bundle", payload())
    aged(hostile, good)
    config = tmp_path / "config.toml"
    config.write_text(f'[jobs.annex]\ninbox = "{inbox}"\nschedule = "0 3 * * *"\n', encoding="utf-8")
    db = store_db
    result = run_posture("--config", str(config), "run", "--due", db=db)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in (inbox / "imported").iterdir()] == ["good.bundle"]
    assert sorted(p.name for p in (inbox / "refused").iterdir()) == ["hostile.bundle", "hostile.bundle.reason"]
    reason = (inbox / "refused" / "hostile.bundle.reason").read_text(encoding="utf-8")
    assert "not a signed posture bundle" in reason
    assert query(db, "SELECT count(*) FROM bundles") == [(1,)]
    runs = json.loads((Path(os.environ["XDG_STATE_HOME"]) / "posture" / "jobs.json").read_text(encoding="utf-8"))
    assert "annex" in runs
    again = run_posture("--config", str(config), "run", "--due", db=db)  # recorded: not due until 03:00
    assert again.returncode == 0 and "job annex started" not in again.stderr, again.stderr


def test_unsigned_64_mib_bundle_is_refused_in_little_memory(store_db: Path | str, tmp_path: Path) -> None:
    """Medium 10, "Memory before the signature check: an unsigned 64 MiB `[{},{},...]` bundle reaches 1.75 GB
    RSS before it is refused": nothing is parsed before the signature; the file costs about its own size."""
    flat = tmp_path / "flat.bundle"
    with flat.open("wb") as f:
        f.write(b"[" + b"{}," * (64 * 2**20 // 3 - 1) + b"{}]")
    assert 63 * 2**20 < flat.stat().st_size <= 64 * 2**20
    result, peak_mib = run_measured("import", "bundle", str(flat), db=store_db)
    assert result.returncode == 2 and f"refused {flat}: not a signed posture bundle" in result.stderr, result.stderr
    assert peak_mib < 300, peak_mib
    # An envelope of the right shape, unsigned, with a 64 MiB payload: refused as unsigned, memory bounded too.
    shaped = tmp_path / "shaped.bundle"
    shaped.write_bytes(b'{"format": "posture-bundle/1", "key_id": "0123456789abcdef", "payload": "'
                       + b"A" * (64 * 2**20 - 200) + b'"}')  # fmt: skip
    result, peak_mib = run_measured("import", "bundle", str(shaped), db=store_db)
    assert result.returncode == 2 and f"refused {shaped}: unsigned" in result.stderr, result.stderr
    assert peak_mib < 300, peak_mib


def test_fifo_device_and_folder_are_refused_without_blocking(trusted: str, store_db: Path | str,
                                                             tmp_path: Path) -> None:  # fmt: skip
    """Low, signed bundles: "a FIFO given as a bundle hangs the import". A FIFO (no writer ever comes), a
    device and a folder are each refused as not a regular file; the good bundle beside them is imported."""
    fifo = tmp_path / "fifo.bundle"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.bundle"
    folder.mkdir()
    good = bundle_file(tmp_path / "good.bundle", payload())
    db = store_db
    result = import_bundles(db, fifo, Path("/dev/zero"), folder, good, timeout=60)
    assert result.returncode == 2, result.stderr
    for path in (fifo, "/dev/zero", folder):
        assert f"refused {path}: not a regular file" in result.stderr, result.stderr
    assert "3 of 4 bundle(s) refused" in result.stderr
    assert query(db, "SELECT file FROM bundles") == [(str(good),)]


def test_signed_bundles_with_impossible_values(trusted: str, store_db: Path | str, tmp_path: Path) -> None:
    """Low, signed bundles: "`collected_at` of year 9999 (accepted, and it blocks every later bundle of that
    machine) or year 1; a port of `true`; addresses 0.0.0.0 and `::`". A date outside 2000..now+1 day and a
    port that is not an int are refused; addresses shared by every machine are dropped as identifiers, the
    rest of the bundle kept."""
    db = store_db
    future = payload()
    future["collected_at"] = "9999-12-31T23:59:59Z"
    ancient = payload()
    ancient["collected_at"] = "0001-01-01T00:00:00+01:00"
    tomorrow = payload(datetime.now(UTC) + timedelta(days=2))
    port_true = payload(listening=[{"protocol": "tcp", "port": True, "addresses": ["0.0.0.0"], "process": "x"}])
    cases = [(future, "malformed (collected_at '9999-12-31T23:59:59Z' is before 2000 or more than a day ahead"),
             (ancient, "malformed (collected_at '0001-01-01T00:00:00+01:00'"),
             (tomorrow, "more than a day ahead of this machine's clock"),
             (port_true, "malformed (a listening socket)")]  # fmt: skip
    for n, (content, reason) in enumerate(cases):
        result = import_bundles(db, bundle_file(tmp_path / f"bad{n}.bundle", content))
        assert result.returncode == 2 and reason in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    # The machine of the year-9999 bundle is not blocked: its real bundle of today imports.
    assert import_bundles(db, bundle_file(tmp_path / "today.bundle", payload())).returncode == 0

    def shared(machine: str, real: str) -> dict[str, Any]:
        host = {"machine_id": machine * 16, "hostnames": [], "macs": [],
                "addresses": [["ipv4", "0.0.0.0"], ["ipv6", "::"], ["ipv4", "127.0.0.1"], ["ipv4", "224.0.0.1"],
                              ["ipv6", "fe80::1"], ["ipv4", "::1"], ["ipv4", real]]}  # fmt: skip
        return payload(host=host)

    for n, (machine, real) in enumerate((("cd", "10.20.0.21"), ("ef", "10.20.0.22"))):
        result = import_bundles(db, bundle_file(tmp_path / f"shared{n}.bundle", shared(machine, real)))
        assert result.returncode == 0, result.stderr
    addresses = {r[0] for r in query(db, "SELECT value FROM asset_identifiers WHERE kind IN ('ipv4', 'ipv6')")}
    assert addresses == {"10.20.0.15", "10.20.0.21", "10.20.0.22"}  # two machines, not merged by 0.0.0.0
    assert query(db, "SELECT count(*) FROM assets") == [(3,)]


# ---- fuzzing: nothing but BundleRejected ---------------------------------------------------------------------


@contextmanager
def written(data: bytes) -> Iterator[Path]:
    """`data` in a real file for the length of one example (hypothesis runs many in one test)."""
    with tempfile.TemporaryDirectory(prefix="posture-fuzz-") as folder:
        path = Path(folder) / "fuzz.bundle"
        path.write_bytes(data)
        yield path


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
PATHS = st.sampled_from([(), ("host",), ("os",), ("packages", 0), ("listening", 0), ("listening", 0, "addresses"),
                         ("host", "addresses"), ("host", "addresses", 0)])  # fmt: skip
KEYS = st.sampled_from(["format", "bundle_id", "collected_at", "host", "os", "packages", "listening", "warnings",
                        "machine_id", "addresses", "macs", "hostnames", "port", "protocol", "process", "name",
                        "manager", "version", 0, 1])  # fmt: skip


def mutated(changes: list[tuple[tuple[str | int, ...], str | int, Any]]) -> Any:
    """The real payload of a Debian server with values replaced at some of its places."""
    content: Any = payload()
    for where, key, value in changes:
        target = content
        try:
            for step in where:
                target = target[step]
            target[key] = value
        except (KeyError, IndexError, TypeError):
            continue
    return content


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(PATHS, KEYS, JSON_VALUES), max_size=4) | JSON_VALUES.map(lambda v: [((), "x", v)]))
def test_fuzz_payload_checker(changes: list[tuple[tuple[str | int, ...], str | int, Any]]) -> None:
    """Item 6: a signed payload of any shape is checked (and then made into rows) or refused with
    BundleRejected, never another exception."""
    content = mutated(changes)
    try:
        checked = bundles.check_payload(bundles._payload_json(json.dumps(content).encode(), Path("f")), Path("f"))
    except bundles.BundleRejected:
        return
    bundles.prepared_host(checked)
    json.dumps(checked)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000) | st.builds(lambda v: json.dumps(v).encode(), JSON_VALUES))
def test_fuzz_bundle_file(data: bytes) -> None:
    """Item 6: any bytes as a bundle file (an envelope, a sealed one, JSON or not) are BundleRejected."""
    with written(data) as path, pytest.raises(bundles.BundleRejected):
        bundles.read_bundle(path, {})


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["format", "key_id", "signature", "payload", "recipient", "ephemeral",
                                        "nonce", "ciphertext", "x"]),
                       st.sampled_from(["posture-bundle/1", "posture-sealed/1", "", "AAAA", "0123456789abcdef"])
                       | st.text(max_size=40) | st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()),
                       max_size=6))  # fmt: skip
def test_fuzz_envelopes(fields: dict[str, str]) -> None:
    """Item 6: envelopes with the right field names and wrong values are refused, never a crash."""
    key = {"0123456789abcdef": {"name": "x", "public": base64.b64encode(b"k" * 32).decode()}}
    with written(json.dumps(fields).encode()) as path, pytest.raises(bundles.BundleRejected):
        bundles.read_bundle(path, key)

