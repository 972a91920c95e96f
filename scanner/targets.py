"""Scan targets: parsed, validated and checked against the scope before any packet is sent.

A target string reaches nmap only as an address or network this module built itself, so nothing a user
(or a config file, or a spreadsheet) typed can ride into nmap's command line as an option.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from scanner.errors import PostureError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# A scan of more than this many addresses is almost always a typo (a /8 for a /24); refuse it outright.
MAX_ADDRESSES = 1 << 20

HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
_OCTET_RANGE = re.compile(r"^(\d{1,3}\.\d{1,3}\.\d{1,3}\.)(\d{1,3})-(\d{1,3})$")
_PORT_SPEC = re.compile(r"^(?:[TU]:)?\d{1,5}(?:-\d{1,5})?(?:,(?:[TU]:)?\d{1,5}(?:-\d{1,5})?)*$")


@dataclass(frozen=True, slots=True)
class Target:
    """One target as typed, with the addresses it stands for (a hostname resolved once, here)."""

    spec: str
    networks: tuple[IPNetwork, ...]
    hostname: str | None = None

    def addresses(self) -> Iterator[IPAddress]:
        for net in self.networks:
            if net.num_addresses == 1:
                yield net.network_address
            else:
                yield from net  # nmap scans network and broadcast addresses of a CIDR too

    @property
    def size(self) -> int:
        return sum(net.num_addresses for net in self.networks)


def _bad(spec: str, why: str) -> PostureError:
    shown = spec if len(spec) <= 80 else spec[:77] + "..."
    return PostureError(
        f"invalid target {shown!r}: {why}",
        "give addresses (10.0.0.5), networks (10.0.0.0/24), ranges (10.0.0.1-50) or hostnames",
    )


def _range(spec: str) -> tuple[IPNetwork, ...] | None:
    m = _OCTET_RANGE.match(spec)
    if m:
        start_text, end_text = m.group(1) + m.group(2), m.group(1) + m.group(3)
    elif spec.count("-") == 1:
        start_text, end_text = spec.split("-")
    else:
        return None
    try:
        start, end = ipaddress.ip_address(start_text), ipaddress.ip_address(end_text)
    except ValueError:
        return None
    if start.version != end.version or int(end) < int(start):
        raise _bad(spec, "the range must run from a lower to a higher address of one family")
    return tuple(ipaddress.summarize_address_range(cast(Any, start), cast(Any, end)))


def parse_target(spec: str, resolve: bool = True) -> Target:
    """Turn one user-typed target into networks, or refuse it with the reason."""
    text = spec.strip()
    if not text or text.startswith("-") or any(c.isspace() or ord(c) < 32 for c in text):
        raise _bad(spec, "not an address, network, range or hostname")
    try:
        if "/" in text:
            return Target(spec, (ipaddress.ip_network(text, strict=False),))
        return Target(spec, (ipaddress.ip_network(ipaddress.ip_address(text)),))
    except ValueError:
        pass
    ranged = _range(text)
    if ranged is not None:
        return Target(spec, ranged)
    if not HOSTNAME_RE.match(text) or text.replace(".", "").isdigit():
        raise _bad(spec, "not an address, network, range or hostname")
    if not resolve:
        return Target(spec, (), hostname=text.rstrip(".").lower())
    try:
        infos = socket.getaddrinfo(text, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise PostureError(f"cannot resolve hostname {text!r}: {exc}", "check the name or give an address") from exc
    ipv4 = [str(i[4][0]) for i in infos if i[0] == socket.AF_INET]
    chosen = ipaddress.ip_address((ipv4 or [str(infos[0][4][0])])[0])
    return Target(spec, (ipaddress.ip_network(chosen),), hostname=text.rstrip(".").lower())


def check_target(spec: str) -> None:
    """The one check of a target's form, for `scan`, `run` and `config check` alike: an address, network,
    range or hostname, else a PostureError with the reason. Nothing is resolved (a config check is offline)."""
    parse_target(spec, resolve=False)


MAX_TARGETS_FILE = 16 * 2**20  # bytes: a list of every address of a /12, one a line, is about 13 MiB


def read_targets_file(path: str) -> list[str]:
    """Targets from a file in nmap's `-iL` form: separated by spaces, tabs or newlines, `#` starting a comment
    to the end of its line; `-` reads stdin. Each is checked as a command-line target is (`check_target`), and
    a bad one is named with its line, so a typo in a list of hundreds is found without a packet sent."""
    if path == "-":
        data = sys.stdin.buffer.read(MAX_TARGETS_FILE + 1)
    else:
        try:
            with Path(path).open("rb") as handle:
                data = handle.read(MAX_TARGETS_FILE + 1)
        except OSError as exc:
            raise PostureError(f"cannot read the targets file {path}: {exc.strerror}", "check the path") from None
    if len(data) > MAX_TARGETS_FILE:
        raise PostureError(f"the targets file {path} is larger than {MAX_TARGETS_FILE // 2**20} MiB",
                           "split it, or give networks (10.0.0.0/16) instead of every address")  # fmt: skip
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PostureError(f"the targets file {path} is not text (byte {exc.start})", "give a text file") from None
    targets: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        for spec in line.split("#", 1)[0].split():
            try:
                check_target(spec)
            except PostureError as exc:
                raise PostureError(f"{path}, line {number}: {exc.message}", exc.hint) from None
            targets.append(spec)
    if not targets:
        raise PostureError(f"the targets file {path} names no target", "one address, network or range a line")
    return targets


def parse_networks(specs: Iterable[str], what: str) -> list[IPNetwork]:
    """Parse --scope or --exclude values; hostnames are resolved so they can be compared."""
    nets: list[IPNetwork] = []
    for spec in specs:
        for part in str(spec).split(","):
            if part.strip():
                try:
                    nets.extend(parse_target(part).networks)
                except PostureError as exc:
                    raise PostureError(f"{what}: {exc.message}", exc.hint) from exc
    return nets


def validate_ports(spec: str) -> str:
    """Accept nmap's port syntax (22,80,8000-8100, T:/U: prefixes) and nothing else."""
    text = spec.replace(" ", "")
    if not _PORT_SPEC.match(text):
        raise PostureError(f"invalid port list {spec!r}", "use numbers and ranges, e.g. 22,80,443,8000-8100")
    for part in re.split(r"[,-]", re.sub(r"[TU]:", "", text)):
        if not 0 <= int(part) <= 65535:
            raise PostureError(f"invalid port {part} in {spec!r}", "ports run from 0 to 65535")
    return text


@dataclass(frozen=True, slots=True)
class ScanPlan:
    """The addresses to scan, in order, after exclusions, with the names users gave for them."""

    addresses: tuple[IPAddress, ...]
    hostnames: dict[str, str]
    excluded: int

    def chunks(self, size: int) -> list[list[str]]:
        """The targets of each chunk (see `sized_chunks`)."""
        return [specs for specs, _ in self.sized_chunks(size)]

    def sized_chunks(self, size: int) -> list[tuple[list[str], int]]:
        """Split into chunks of one address family each, with the number of addresses in each.

        Each chunk is written as few CIDR blocks as possible (short nmap command lines). IPv4 and IPv6 never
        share a chunk: nmap scans IPv6 only with `-6`, and a mixed run silently skips the IPv6 targets. An
        address with a zone (`fe80::1%eth0`) is written alone, zone and all: collapsing would drop it.
        """
        out: list[tuple[list[str], int]] = []
        for family in (4, 6):
            addresses = [a for a in self.addresses if a.version == family]
            for i in range(0, len(addresses), size):
                part = addresses[i : i + size]
                zoned = [str(a) for a in part if getattr(a, "scope_id", None)]
                plain = [a for a in part if not getattr(a, "scope_id", None)]
                nets: Iterator[IPNetwork] = ipaddress.collapse_addresses(cast(Any, plain))
                specs = [str(n.network_address) if n.num_addresses == 1 else str(n) for n in nets]
                out.append(([*specs, *zoned], len(part)))
        return out


def plan_scan(
    targets: Sequence[Target], exclude: Sequence[IPNetwork] = (), scope: Sequence[IPNetwork] = ()
) -> ScanPlan:
    """Expand targets, drop exclusions, and refuse the whole scan if one address lies outside the scope."""
    total = sum(t.size for t in targets)
    if total > MAX_ADDRESSES:
        raise PostureError(
            f"the targets cover {total:,} addresses, more than {MAX_ADDRESSES:,}",
            "split the scan into smaller networks",
        )
    seen: set[IPAddress] = set()
    addresses: list[IPAddress] = []
    hostnames: dict[str, str] = {}
    excluded = 0
    for target in targets:
        for net in target.networks:
            if scope and not any(_within(net, s) for s in scope):
                raise PostureError(
                    f"target {target.spec!r} ({net}) lies outside the scope "
                    f"{', '.join(str(s) for s in scope)}; nothing was scanned",
                    "correct the target or widen --scope",
                )
        for addr in target.addresses():
            if addr in seen:
                continue
            seen.add(addr)
            if any(addr in n for n in exclude):
                excluded += 1
                continue
            addresses.append(addr)
            if target.hostname:
                hostnames[str(addr)] = target.hostname
    return ScanPlan(tuple(addresses), hostnames, excluded)


def _within(net: IPNetwork, scope: IPNetwork) -> bool:
    return net.version == scope.version and net.subnet_of(scope)  # type: ignore[arg-type]
