"""Target parsing, scope and chunking: nothing a user types reaches nmap as an option."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from scanner.errors import PostureError
from scanner.targets import MAX_ADDRESSES, MAX_TARGETS_FILE, parse_networks, parse_target, plan_scan, validate_ports
from tests.conftest import run_posture


@pytest.mark.parametrize(
    "spec",
    [
        "10.0.0.1;rm -rf /",
        "--script=http-enum",
        "-iL /etc/passwd",
        "127.0.0.1 -sV --version-light",
        "127.0.0.1\n-oN /tmp/x",
        "$(reboot)",
        "`id`",
        "host_name.example",
        "",
        "10.0.0.0/33",
        "10.0.0.9-10.0.0.1",
        "300.1.1.1",
    ],
)
def test_hostile_or_malformed_targets_are_refused(spec: str) -> None:
    with pytest.raises(PostureError) as err:
        parse_target(spec, resolve=False)
    assert "invalid target" in err.value.message


def test_forms_of_target() -> None:
    assert [str(a) for a in parse_target("192.0.2.10").addresses()] == ["192.0.2.10"]
    assert parse_target("192.0.2.0/30").size == 4
    assert [str(a) for a in parse_target("192.0.2.1-3").addresses()] == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert parse_target("192.0.2.250-192.0.3.5").size == 12
    assert parse_target("2001:db8::1").size == 1
    named = parse_target("LOCALHOST")
    assert named.hostname == "localhost"
    assert str(next(named.addresses())) == "127.0.0.1"


def test_scope_refuses_the_whole_scan_before_anything_is_sent() -> None:
    scope = parse_networks(["127.0.0.0/24"], "--scope")
    with pytest.raises(PostureError) as err:
        plan_scan([parse_target("127.0.0.5"), parse_target("127.0.1.0/30")], scope=scope)
    assert "outside the scope" in err.value.message
    assert "127.0.1.0/30" in err.value.message
    plan = plan_scan([parse_target("127.0.0.5")], scope=scope)
    assert [str(a) for a in plan.addresses] == ["127.0.0.5"]


def test_exclusions_and_duplicates() -> None:
    plan = plan_scan(
        [parse_target("192.0.2.0/29"), parse_target("192.0.2.3")],
        exclude=parse_networks(["192.0.2.4-5", "192.0.2.0"], "--exclude"),
    )
    assert [str(a) for a in plan.addresses] == ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.6", "192.0.2.7"]
    assert plan.excluded == 3


def test_chunks_are_compact_and_cover_every_address() -> None:
    plan = plan_scan([parse_target("10.1.0.0/22")])
    chunks = plan.chunks(256)
    assert chunks == [["10.1.0.0/24"], ["10.1.1.0/24"], ["10.1.2.0/24"], ["10.1.3.0/24"]]
    uneven = plan_scan([parse_target("10.1.0.0-10")]).chunks(4)
    covered = [a for chunk in uneven for spec in chunk for a in ipaddress.ip_network(spec)]
    assert [str(a) for a in covered] == [f"10.1.0.{i}" for i in range(11)]


def test_oversized_scan_is_refused() -> None:
    with pytest.raises(PostureError) as err:
        plan_scan([parse_target("10.0.0.0/8")])
    assert f"{MAX_ADDRESSES:,}" in err.value.message


@pytest.mark.parametrize("spec", ["22,80,443", "1-1024", "T:22,U:161", "8000-8100,9000"])
def test_port_lists_accepted(spec: str) -> None:
    assert validate_ports(spec) == spec


@pytest.mark.parametrize("spec", ["22;id", "80 --script x", "70000", "-", "http"])
def test_port_lists_refused(spec: str) -> None:
    with pytest.raises(PostureError):
        validate_ports(spec)


def test_targets_file_in_nmaps_il_form(tmp_path: Path) -> None:
    """`--targets-file` (nmap -iL): spaces, tabs and lines separate, # comments, a BOM from Notepad; merged with
    the command line's targets; nothing is sent with --dry-run. nmap itself reads this file the same way."""
    listed = tmp_path / "sites.txt"
    listed.write_bytes("\ufeff# site A (server room)\n127.0.0.1\t127.0.0.2 # two\n\n  127.0.0.3-4\r\n".encode())
    shown = run_posture("scan", "127.0.0.9", "--targets-file", str(listed), "--dry-run", db=tmp_path / "i.db")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("5 addresses (0 excluded)") and "127.0.0.1 127.0.0.2/31 127.0.0.4" in shown.stdout
    same = run_posture("scan", "-iL", "-", "--dry-run", input="127.0.0.1 127.0.0.2\n", db=tmp_path / "i.db")
    assert same.returncode == 0 and same.stdout.startswith("2 addresses"), same.stderr
    assert not (tmp_path / "i.db").exists()  # a dry run writes nothing


@pytest.mark.parametrize(("content", "said"), [
    (b"127.0.0.1\n127.0.0.1;id\n", "line 2: invalid target '127.0.0.1;id'"),
    (b"127.0.0.1\n--script=http-enum\n", "line 2: invalid target '--script=http-enum'"),
    (b"# only a comment\n\n", "names no target"),
    (b"\xff\xfe1\x002\x007\x00", "is not text"),
])  # fmt: skip
def test_bad_targets_files_are_refused_by_line(tmp_path: Path, content: bytes, said: str) -> None:
    listed = tmp_path / "bad.txt"
    listed.write_bytes(content)
    for command in ("scan", "snmp"):
        refused = run_posture(command, "--targets-file", str(listed), db=tmp_path / "i.db")
        assert refused.returncode == 2 and said in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr and not (tmp_path / "i.db").exists()


def test_missing_or_huge_targets_file(tmp_path: Path) -> None:
    missing = run_posture("scan", "--targets-file", str(tmp_path / "nope.txt"), db=tmp_path / "i.db")
    assert missing.returncode == 2 and "cannot read the targets file" in missing.stderr
    huge = tmp_path / "huge.txt"
    with huge.open("wb") as out:
        out.truncate(MAX_TARGETS_FILE + 1)  # sparse: the refusal comes from the size read, not the content
    refused = run_posture("scan", "--targets-file", str(huge), db=tmp_path / "i.db")
    assert refused.returncode == 2 and "larger than 16 MiB" in refused.stderr
