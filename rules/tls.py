"""TLS facts of a service from nmap's stored script output: its certificate (ssl-cert) and the grade of
its protocols and cipher suites (ssl-enum-ciphers) against the grading table `data/tls_grading.toml`.

The scripts are stored as nmap wrote them (services.scripts: "key: value" lines of their `<elem>`s and
`<table>`s, see scanner/nmap_xml.py). Everything in them is chosen by the server: dates may be absurd
(year 9999, before 1970) or not dates at all, names may carry control characters or run long. Dates that
cannot be read are kept as text and judged unknown (no expiry finding, never "valid"); names are bounded
here and made printable where they are shown.

The facts are flat service fields (`cert_*`, `tls_*`) that the rule packs test, so what counts as a
problem (expired, RSA below 2048 bits, SHA-1) stays in the packs and this table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

from rules import redos
from scanner.compat import tomllib

GRADING_FILE = Path(__file__).parent / "data" / "tls_grading.toml"
MAX_NAME = 200  # characters of a subject or issuer kept
# Short names of the distinguished-name attributes people read (nmap writes the long ones).
NAME_ABBREVIATIONS = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
                      "countryName": "C", "stateOrProvinceName": "ST", "localityName": "L"}  # fmt: skip
DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")
SIGNATURE_HASH = re.compile(r"(sha3-(?:224|256|384|512)|sha224|sha256|sha384|sha512|sha1|md2|md4|md5)")
PROTOCOL_LINE = re.compile(r"^((?:SSL|TLS)v[0-9.]{1,4})\.([^:]{1,200}): (.*)$")
CERT_FIELDS = ("cert_cn", "cert_subject", "cert_issuer_cn", "cert_issuer", "cert_self_signed", "cert_not_before",
               "cert_not_after", "cert_days_left", "cert_key_type", "cert_key_bits", "cert_sig_algo",
               "cert_sig_hash")  # fmt: skip
CIPHER_FIELDS = ("tls_grade", "tls_protocols", "tls_problems")
FIELDS = CERT_FIELDS + CIPHER_FIELDS
RECOMMENDED = "recommended"


class GradingError(ValueError):
    """The grading table cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Check:
    """One line of the table: a protocol (by nmap's name) or a cipher-suite pattern, its level and problem."""

    id: str
    level: str
    problem: str
    pattern: re.Pattern[str] | None = None


@dataclass(frozen=True)
class Grading:
    source: dict[str, str]
    levels: tuple[str, ...]  # worst first
    protocols: dict[str, Check]
    ciphers: tuple[Check, ...]


def parse_grading(text: str, where: str) -> Grading:
    """The table, every entry checked (keys, levels, patterns that cannot backtrack without end)."""
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:
        raise GradingError(f"{where}: not valid TOML: {str(exc)[:200]}") from exc
    if set(data) != {"source", "levels", "protocol", "cipher"}:
        raise GradingError(f"{where}: needs exactly [source], [levels], [[protocol]] and [[cipher]]")
    source = data["source"]
    if not isinstance(source, dict) or not all(isinstance(source.get(k), str) and source[k].startswith("https://")
                                               for k in ("url", "quote_url")):  # fmt: skip
        raise GradingError(f"{where}: [source] needs title, publisher, url and quote_url (https)")
    levels = data["levels"].get("order") if isinstance(data["levels"], dict) else None
    if not isinstance(levels, list) or not levels or not all(isinstance(x, str) for x in levels):
        raise GradingError(f'{where}: [levels] order must list the levels, worst first, e.g. ["insecure"]')
    protocols = {}
    for n, row in enumerate(data["protocol"] if isinstance(data["protocol"], list) else [], 1):
        check = _check(row, f"{where}: [[protocol]] #{n}", {"name", "level", "problem"}, levels)
        protocols[check.id] = check
    ciphers = tuple(_check(row, f"{where}: [[cipher]] #{n}", {"id", "pattern", "level", "problem"}, levels)
                    for n, row in enumerate(data["cipher"] if isinstance(data["cipher"], list) else [], 1))  # fmt: skip
    if not protocols or not ciphers:
        raise GradingError(f"{where}: the table needs [[protocol]] and [[cipher]] entries")
    return Grading({k: str(v) for k, v in source.items()}, tuple(levels), protocols, ciphers)


def _check(row: Any, where: str, keys: set[str], levels: list[str]) -> Check:
    if not isinstance(row, dict) or not set(row) <= keys or not all(isinstance(v, str) and v for v in row.values()):
        raise GradingError(f"{where}: takes {', '.join(sorted(keys))}, each a non-empty string")
    level = row.get("level")
    if level != RECOMMENDED and level not in levels:
        raise GradingError(f"{where}: level {str(level)[:40]!r} is not {RECOMMENDED} or one of {', '.join(levels)}")
    if level != RECOMMENDED and "problem" not in row:
        raise GradingError(f"{where}: a {level} entry needs its problem, as a security lead reads it")
    pattern = None
    if "pattern" in keys:
        if "pattern" not in row or "id" not in row:
            raise GradingError(f"{where}: a cipher entry needs an id and a pattern")
        if refused := redos.problem(row["pattern"]):
            raise GradingError(f"{where}: bad pattern: {refused}")
        pattern = re.compile(row["pattern"])
    elif "name" not in row:
        raise GradingError(f"{where}: a protocol entry needs nmap's name for it, e.g. TLSv1.0")
    return Check(row.get("id") or row["name"], row["level"], row.get("problem", ""), pattern)


@cache
def grading() -> Grading:
    """The built-in table (read once)."""
    return parse_grading(GRADING_FILE.read_text(encoding="utf-8"), GRADING_FILE.name)


def _day(text: str | None) -> date | None:
    """nmap's "2027-12-07T04:46:42" (with or without an offset) as a day; None when it is not a date."""
    match = DATE.match(text or "")
    if not match:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:  # month 13, day 32: the server's own nonsense
        return None


def _name(elems: dict[str, str], prefix: str) -> dict[str, str]:
    return {k[len(prefix):]: v for k, v in elems.items() if k.startswith(prefix)}


def _shown(name: dict[str, str]) -> str:
    """"CN=intranet, O=Council": the attributes people read first, then the rest, bounded."""
    ordered = sorted(name.items(), key=lambda kv: (kv[0] not in NAME_ABBREVIATIONS, kv[0]))
    text = ", ".join(f"{NAME_ABBREVIATIONS.get(k, k)}={v}" for k, v in ordered)
    return text if len(text) <= MAX_NAME else text[: MAX_NAME - 1] + "…"


def certificate(elems: dict[str, str], today: date) -> dict[str, Any]:
    """The certificate's facts from ssl-cert's elements ("subject.commonName", "pubkey.bits", "sig_algo",
    "validity.notAfter", ...). A missing or unreadable value is None: its rule does not fire, and the
    evidence shows what the server sent."""
    subject, issuer = _name(elems, "subject."), _name(elems, "issuer.")
    not_after, not_before = _day(elems.get("validity.notAfter")), _day(elems.get("validity.notBefore"))
    bits = elems.get("pubkey.bits", "")
    algorithm = elems.get("sig_algo", "")[:80] or None
    hashed = SIGNATURE_HASH.search(algorithm.lower()) if algorithm else None
    return {
        "cert_cn": (subject.get("commonName") or "")[:MAX_NAME] or None,
        "cert_subject": _shown(subject) or None,
        "cert_issuer_cn": (issuer.get("commonName") or "")[:MAX_NAME] or None,
        "cert_issuer": _shown(issuer) or None,
        "cert_self_signed": bool(subject) and subject == issuer,
        "cert_not_before": not_before.isoformat() if not_before else _unread(elems.get("validity.notBefore")),
        "cert_not_after": not_after.isoformat() if not_after else _unread(elems.get("validity.notAfter")),
        "cert_days_left": (not_after - today).days if not_after else None,
        "cert_key_type": elems.get("pubkey.type", "")[:20] or None,
        "cert_key_bits": int(bits) if bits.isdigit() and len(bits) <= 6 else None,
        "cert_sig_algo": algorithm,
        "cert_sig_hash": hashed[1] if hashed else None,
    }


def _unread(text: str | None) -> str | None:
    return f"unreadable: {text[:40]}" if text else None


def grade(lines: list[Any], table: Grading) -> dict[str, Any]:
    """The service's grade from ssl-enum-ciphers' lines ("TLSv1.0.ciphers.name: TLS_RSA_WITH_..."): the worst
    level among what it offers (or "recommended"), the protocols offered, and each problem found with up to
    three of the suites that show it, worst first."""
    offered: dict[str, None] = {}
    suites: dict[str, None] = {}
    for line in lines:
        match = PROTOCOL_LINE.match(line) if isinstance(line, str) else None
        if match:
            offered[match[1]] = None
            if match[2] == "ciphers.name":
                suites[match[3][:100]] = None
    found: list[tuple[int, int, str]] = []  # (level rank, table order, text)
    rank = {level: n for n, level in enumerate(table.levels)}
    for n, protocol in enumerate(offered):
        check = table.protocols.get(protocol)
        if check is not None and check.level != RECOMMENDED:
            found.append((rank[check.level], n, check.problem))
    for n, check in enumerate(table.ciphers, len(offered)):
        assert check.pattern is not None
        hits = [s for s in suites if check.pattern.search(s)]
        if hits and check.level != RECOMMENDED:
            more = f" and {len(hits) - 3} more" if len(hits) > 3 else ""
            found.append((rank[check.level], n, f"{check.problem} ({', '.join(hits[:3])}{more})"))
    found.sort()
    return {"tls_grade": table.levels[found[0][0]] if found else RECOMMENDED if offered else None,
            "tls_protocols": list(offered)[:10], "tls_problems": [text for _, _, text in found]}  # fmt: skip


def evidence(service: dict[str, Any], protocols_first: bool = False) -> str:
    """What a security lead acts on, in one line: the certificate (name, expiry, key, signature, issuer) and
    the protocol problems, worst first; the protocols first for a rule about them (`protocols_first`)."""
    parts = []
    if "cert_cn" in service:
        expiry = service.get("cert_not_after") or "unknown"
        days = service.get("cert_days_left")
        when = f"expired {expiry}" if isinstance(days, int) and days < 0 else f"expires {expiry}"
        issuer = "self-signed" if service.get("cert_self_signed") else f"issuer {service.get('cert_issuer') or '?'}"
        key = " ".join(str(x) for x in (service.get("cert_key_type"), service.get("cert_key_bits")) if x)
        parts.append(f"certificate {service.get('cert_subject') or '(no subject)'}; {when}; key {key or 'unknown'}; "
                     f"signature {service.get('cert_sig_algo') or 'unknown'}; {issuer}")  # fmt: skip
    if service.get("tls_problems"):
        parts.insert(0 if protocols_first else len(parts),
                     f"{', '.join(service.get('tls_protocols') or [])} offered: {'; '.join(service['tls_problems'])}")
    return " | ".join(parts)


# The certificate rules, worst first, with what each calls for: a certificate with several problems is
# replaced once, so plans file it under its worst problem and the report lists its problems together.
CERTIFICATE_RULES = {
    "protect.tls-certificate-expired": ("expired", "Renew the expired TLS certificates"),
    "protect.tls-certificate-weak-key": ("RSA key below 2048 bits", "Replace the TLS certificates with short RSA keys"),
    "protect.tls-certificate-weak-signature": ("SHA-1/MD5 signature", "Reissue the SHA-1/MD5-signed TLS certificates"),
    "protect.tls-certificate-self-signed": ("self-signed", "Replace the self-signed TLS certificates with issued ones"),
    "protect.tls-certificate-expiring": ("expires soon", "Renew the TLS certificates that expire soon"),
}
PROTOCOL_RULES = ("protect.tls-insecure", "protect.tls-deprecated")
