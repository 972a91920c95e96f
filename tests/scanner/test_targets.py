"""Target parsing, scope and chunking: nothing a user types reaches nmap as an option."""

from __future__ import annotations

import ipaddress

import pytest

from scanner.errors import PostureError
from scanner.targets import MAX_ADDRESSES, parse_networks, parse_target, plan_scan, validate_ports


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
