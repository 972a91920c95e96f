"""Active Directory as a discovery source: the computer objects a domain controller holds, read over LDAP.

Every domain-joined Windows machine records its operating system, version and build, last logon and
password age in the directory, so the directory names the exact release of machines that never answer SNMP
and will never get an agent. One unit per directory (re-reading it is cheap and whole); one batch per page
of the paged search, so 100,000 objects cost one page of memory.

Why ldap3 and not python-ldap: ldap3 is pure Python (no OpenLDAP client libraries and headers to build
against, nothing native in the install), maintained, typed enough to use strictly, and gives per-operation
timeouts and the paged-results control directly; python-ldap wraps libldap and needs its build chain.

Security: `ldaps://` with a simple bind by default, or StartTLS on `ldap://`; plain LDAP (a password in
clear on the wire, and refused by Windows Server 2025 DCs, which require signing) only with
`insecure_ldap`. The server's certificate is always verified (the system store, or `ca_file`), and its name
checked against the URL's host. The bind name and password come from the vault, by credential name: never
from argv, the scan row's options, the database or a log line. Referrals are never followed (a referred
host may be outside the scan's scope and would get the bind password): they are counted and reported.
"""

from __future__ import annotations

import re
import ssl
import time
import urllib.parse
import warnings
from collections.abc import Generator
from contextlib import suppress
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from scanner.compat import UTC

with warnings.catch_warnings():  # ldap3 2.9.1 imports names pyasn1 0.6 deprecates: not posture's to fix
    warnings.simplefilter("ignore", DeprecationWarning)
    import ldap3 as ldap3  # type: ignore[import-untyped]  # (re-exported: tests build objects with it)
    from ldap3.core import exceptions as lx  # type: ignore[import-untyped]

from scanner.model import HostObservation, OsMatch, bound
from scanner.sources import Batch, Outcome, Progress, Request, SourceError
from scanner.store import PreparedHost, prepare_host

ATTRIBUTES = (
    "name", "dNSHostName", "operatingSystem", "operatingSystemVersion", "operatingSystemServicePack",
    "lastLogonTimestamp", "pwdLastSet", "whenCreated", "userAccountControl", "managedBy", "description",
)  # fmt: skip
FILTER = "(objectCategory=computer)"
PAGE_SIZE = 500
TIME_LIMIT = 600.0  # seconds for the whole read, all pages and manager look-ups
TIMEOUT = 30  # seconds to connect, and to wait for any one answer
DEFAULT_STALE_DAYS = 180
JOB_KEYS = frozenset({"url", "creds", "base_dn", "ca_file", "starttls", "insecure_ldap", "stale_days", "ou_sites",
                      "ou_services"})  # fmt: skip
MAX_OBJECTS = 2_000_000  # a directory answering without end is cut off, not followed
MAX_VALUE = 10_240  # bytes of one attribute value read (a 10 KB operatingSystem is bounded further below)
MAX_MANAGERS = 10_000  # managedBy DNs resolved to names, cached
ACCOUNT_DISABLE = 0x2  # userAccountControl bit
_NEVER = (0, 0x7FFFFFFFFFFFFFFF)  # FILETIME values meaning "never"
_HOSTNAME = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62})){0,20}$")
_STRONG_AUTH = 8  # LDAP resultCode strongerAuthRequired
_RESULTS = {49: "invalid credentials", 32: "no such object", 50: "insufficient access rights",
            53: "unwilling to perform"}  # fmt: skip


def _text(raw: list[bytes] | None, limit: int = 256) -> str | None:
    """The first value of an attribute as text: UTF-8 (else replaced), NUL bytes removed, bounded."""
    if not raw:
        return None
    value = bytes(raw[0][:MAX_VALUE]).decode("utf-8", "replace").replace("\x00", "").strip()
    return bound(value, limit) or None


def _filetime(raw: list[bytes] | None) -> str | None:
    """An AD FILETIME (100 ns since 1601, as digits) as an ISO time; "never" and nonsense as None."""
    text = _text(raw, 24)
    if not text or not text.isdigit() or len(text) > 19 or int(text) in _NEVER:
        return None
    try:
        when = datetime(1601, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(text) // 10)
    except OverflowError:
        return None
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _generalized(raw: list[bytes] | None) -> str | None:
    """whenCreated's GeneralizedTime (`20261207044557.0Z`) as an ISO time."""
    text = _text(raw, 32)
    if not text:
        return None
    try:
        return datetime.strptime(text[:14], "%Y%m%d%H%M%S").strftime("%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None


def _hostname(value: str | None) -> str | None:
    """A DNS name fit to be an identifier (lower case; DNS is case-insensitive), else None."""
    if not value:
        return None
    name = value.lower().rstrip(".")
    return name if len(name) <= 253 and _HOSTNAME.match(name) else None


def _norm_dn(dn: str) -> str:
    return ",".join(part.strip() for part in dn.lower().split(","))


def ou_lookup(parent: str, mapping: dict[str, str]) -> str | None:
    """The value of the longest DN in `mapping` that `parent` is or lies under (case and spaces ignored)."""
    parent = _norm_dn(parent)
    best: tuple[int, str] | None = None
    for dn, value in mapping.items():
        key = _norm_dn(dn)
        if (parent == key or parent.endswith("," + key)) and (best is None or len(key) > best[0]):
            best = (len(key), value)
    return best[1] if best else None


def parse_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of `ldaps://host[:port]` or `ldap://host[:port]`; anything else refused."""
    shown = url[:80]
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise SourceError(f"not an LDAP URL: {shown!r}", "give ldaps://dc.example.org[:636]") from None
    if parts.scheme not in ("ldap", "ldaps") or not parts.hostname or parts.path not in ("", "/") or parts.query \
            or parts.username or parts.password or parts.fragment:  # fmt: skip
        raise SourceError(f"not an LDAP URL: {shown!r}", "give ldaps://dc.example.org[:636] (no path, no user)")
    return parts.scheme, parts.hostname, port or (636 if parts.scheme == "ldaps" else 389)


def pinned_address(host: str, port: int, scope: list[str]) -> str:
    """The directory server's address, resolved once and checked against the scope: every address the name
    resolves to must lie inside it, since the bind password goes to whichever one answers, and a name that
    resolves outside the estate (a typo, a poisoned record) must not receive it. The connection then goes to
    this address (the certificate is still checked against the name), so the name cannot be resolved again,
    differently, between the check and the bind."""
    import ipaddress
    import socket

    from scanner.targets import parse_networks

    networks = parse_networks(scope, "scope")
    try:
        found = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise SourceError(f"cannot resolve the directory server {host[:100]!r}: {exc}", "check the URL") from None
    addresses = list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in found))
    outside = [a for a in addresses if not any(ipaddress.ip_address(a) in n for n in networks)]
    if not addresses or outside:
        raise SourceError(f"the directory server {host[:100]} ({', '.join(outside[:3] or addresses[:3])}) is outside "
                          f"the scope ({', '.join(scope[:5])}); nothing was sent",
                          "give the URL of a server inside the scope, or widen --scope / [scan] scope")  # fmt: skip
    return addresses[0]


def _stale(last: str | None, created: str | None, days: int) -> bool:
    """Not seen logging on for `days` days: its last logon, or (never logged on) its creation, is older."""
    when = last or created
    if not when:
        return False
    return datetime.fromisoformat(when.replace("Z", "+00:00")) < datetime.now(UTC) - timedelta(days=days)


class DirectorySource:
    """Computer objects from Active Directory (or Samba AD) over LDAP; see the module docstring."""

    name = "ad"
    kind = "directory-import"
    whole = False
    resume: str | None = None
    noun = "objects"

    def __init__(self) -> None:
        self._conn: Any = None
        self._base = ""
        self._cancelled = False
        self._managers: dict[str, str | None] = {}

    # ---- the Source protocol ---------------------------------------------------------------------------

    def check(self, request: Request) -> str | None:
        """The URL, the transport options and the CA file, refused before anything is sent."""
        if len(request.targets) != 1:
            raise SourceError("give one directory URL", "e.g. posture import ad ldaps://dc1.example.org --creds ad")
        scheme, _, _ = parse_url(request.targets[0])
        options = request.options
        if not options.get("creds"):
            raise SourceError("a directory import needs --creds NAME", "add one: `posture creds add ldap NAME`")
        if scheme == "ldaps" and options.get("starttls"):
            raise SourceError("--starttls is for ldap:// URLs", "ldaps:// is TLS from the first byte")
        if scheme == "ldap" and not options.get("starttls") and not options.get("insecure_ldap"):
            raise SourceError("plain ldap:// sends the bind password in clear",
                              "use ldaps://, or ldap:// with --starttls (or, knowingly, --insecure-ldap)")  # fmt: skip
        ca_file = options.get("ca_file")
        if ca_file is not None and not Path(ca_file).is_file():
            raise SourceError(f"no CA file at {str(ca_file)[:200]}", "give --ca-file a PEM file of the CA")
        return f"ldap3 {ldap3.__version__}"

    def units(self, request: Request) -> list[tuple[list[str], int]]:
        return [([request.targets[0]], 1)]

    def describe(self, request: Request, unit: list[str]) -> list[str]:
        options = request.options
        base = options.get("base_dn") or "(the server's defaultNamingContext)"
        tls = "StartTLS" if options.get("starttls") else "no TLS" if unit[0].startswith("ldap:") else "TLS"
        return ["ldapsearch", "-H", unit[0], f"({tls}, simple bind as credential {options.get('creds')})",
                "-E", f"pr={PAGE_SIZE}/noprompt", "-b", base, FILTER, *ATTRIBUTES]  # fmt: skip

    def collect(
        self, request: Request, units: list[tuple[int, list[str], int]], progress: Progress
    ) -> Generator[Batch, None, None]:
        for seq, _, _ in units:
            yield from self._read(request, seq, progress)

    def cancel(self) -> None:
        self._cancelled = True
        self._close()

    def job_request(self, settings: dict[str, Any]) -> Request:
        """A job's [jobs.NAME.ad] table (and `posture import ad`'s options with the config's [directory]):
        url and creds, and optionally base_dn, ca_file, starttls, insecure_ldap, stale_days, ou_sites and
        ou_services; each checked, nothing sent."""
        from scanner.config import ConfigError, check_directory_values

        unknown = sorted(set(settings) - JOB_KEYS)
        if unknown:
            raise SourceError(f"unknown key {unknown[0][:40]!r} (the ad table has {', '.join(sorted(JOB_KEYS))})")
        for key, kind in (("url", str), ("creds", str), ("base_dn", str), ("ca_file", str), ("starttls", bool),
                          ("insecure_ldap", bool)):  # fmt: skip
            if key in settings and not isinstance(settings[key], kind):
                raise SourceError(f"{key} must be {'text' if kind is str else 'true or false'}")
        if "url" not in settings or "creds" not in settings:
            raise SourceError('the ad table needs url and creds, e.g. url = "ldaps://dc1.example.org", creds = "ad"')
        try:
            check_directory_values(settings)
        except ConfigError as exc:
            raise SourceError(str(exc).replace("[directory] ", "")) from None
        options = {key: settings.get(key) for key in sorted(JOB_KEYS - {"url"})}
        options["stale_days"] = options["stale_days"] or DEFAULT_STALE_DAYS
        options.update(starttls=bool(options["starttls"]), insecure_ldap=bool(options["insecure_ldap"]),
                       ou_sites=options["ou_sites"] or {}, ou_services=options["ou_services"] or {})  # fmt: skip
        request = Request([settings["url"]], options)
        self.check(request)
        return request

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            _discard(conn)

    # ---- reading -----------------------------------------------------------------------------------------

    def open(self, request: Request) -> str:
        """Connect, (Start)TLS, bind and find the base DN: every way the directory can say no, before the
        import writes anything. Returns the base DN. `collect` opens it itself if nobody did."""
        from scanner.vault import ldap_credential

        self.check(request)
        scheme, host, port = parse_url(request.targets[0])
        options = request.options
        address = pinned_address(host, port, request.scope) if request.scope else host
        bind_name, password = ldap_credential(str(options["creds"]))
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=options.get("ca_file"),
                        valid_names=[host] if address != host else None, sni=host if address != host else None)
        server = ldap3.Server(address, port=port, use_ssl=scheme == "ldaps", tls=tls, get_info=ldap3.NONE,
                              connect_timeout=TIMEOUT)  # fmt: skip
        conn = ldap3.Connection(server, user=bind_name, password=password, auto_referrals=False,
                                receive_timeout=TIMEOUT, raise_exceptions=False, read_only=True)  # fmt: skip
        del password
        where = f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"
        try:
            with warnings.catch_warnings():  # ldap3 checks the certificate's name with ssl.match_hostname
                warnings.simplefilter("ignore", DeprecationWarning)  # (deprecated, still right on 3.11)
                # A certificate for another name: ldap3 drops its TLS socket unclosed and CPython closes it
                # at once, inside open(), with a ResourceWarning: nothing is left open, nothing to say.
                warnings.simplefilter("ignore", ResourceWarning)
                conn.open()
                if options.get("starttls") and not conn.start_tls():
                    raise SourceError(f"{where} refused StartTLS: {self._said(conn)}",
                                      "use ldaps:// or check the server")  # fmt: skip
            if not conn.bind():
                code = conn.result.get("result")
                if code == _STRONG_AUTH:
                    raise SourceError(f"{where} requires signing or TLS for a bind", "use ldaps:// or --starttls")
                raise SourceError(f"{where} refused the bind of credential {options['creds']!r}: {self._said(conn)}",
                                  "check the bind name and password (`posture creds add ldap NAME`)")  # fmt: skip
            self._conn = conn
            self._base = self._base_dn(where, options.get("base_dn"))
            return self._base
        except lx.LDAPException as exc:
            _discard(conn)
            raise SourceError(*self._why(where, exc)) from None
        except SourceError:
            _discard(conn)
            raise

    @staticmethod
    def _said(conn: Any) -> str:
        code = conn.result.get("result")
        text = str(conn.result.get("description") or _RESULTS.get(code, f"result {code}"))
        return text.replace("invalidCredentials", "invalid credentials")[:120]

    @staticmethod
    def _why(where: str, exc: Exception) -> tuple[str, str]:
        text = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            return (f"{where}: the server's certificate is not trusted (certificate verify failed)",
                    "give the CA that signed it with --ca-file PEM")  # fmt: skip
        if "doesn't match any name" in text or "LDAPCertificateError" in type(exc).__name__:
            return (f"{where}: the server's certificate does not name {where.split('//')[1].rsplit(':', 1)[0]}",
                    "connect by a name its certificate holds")  # fmt: skip
        if "socket" in text.lower() or "timed out" in text or "refused" in text or "unreachable" in text:
            return f"cannot reach {where}: {text.splitlines()[0][:160]}", "check the address, port and firewalls"
        return f"{where}: {type(exc).__name__}: {text.splitlines()[0][:160] if text else ''}", "check the server"

    def _base_dn(self, where: str, given: str | None) -> str:
        """The base DN given (checked: it must exist), else the rootDSE's defaultNamingContext."""
        conn = self._conn
        if given:
            if not conn.search(given, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["1.1"]):
                if conn.result.get("result") == 32:
                    raise SourceError(f"{where}: the base DN {given[:120]!r} does not exist", "check --base-dn")
                raise SourceError(f"{where}: cannot read the base DN {given[:120]!r}: {self._said(conn)}",
                                  "check --base-dn and the account's rights")  # fmt: skip
            return given
        conn.search("", "(objectClass=*)", search_scope=ldap3.BASE, attributes=["defaultNamingContext"])
        found = next((_text(e.get("raw_attributes", {}).get("defaultNamingContext"), 1024)
                      for e in conn.response or [] if e.get("type") == "searchResEntry"), None)  # fmt: skip
        if not found:
            raise SourceError(f"{where} does not say its defaultNamingContext", "give --base-dn")
        return found

    def _read(self, request: Request, seq: int, progress: Progress) -> Generator[Batch, None, None]:
        where = request.targets[0]
        base = self.open(request) if self._conn is None else self._base
        deadline = time.monotonic() + float(request.options.get("time_limit") or TIME_LIMIT)
        stale_days = int(request.options.get("stale_days") or DEFAULT_STALE_DAYS)
        cookie: bytes | None = None
        objects = pages = referrals = 0
        started = time.monotonic()
        try:
            while True:
                if self._cancelled:
                    return
                left = deadline - time.monotonic()
                if left <= 0 or objects >= MAX_OBJECTS:
                    raise SourceError(f"{where}: the directory read took too long ({objects} objects read)",
                                      "give a narrower --base-dn")  # fmt: skip
                ok = self._conn.search(base, FILTER, attributes=list(ATTRIBUTES), paged_size=int(
                    request.options.get("page_size") or PAGE_SIZE), paged_cookie=cookie,
                    time_limit=max(1, int(left)))  # fmt: skip
                if not ok and self._conn.result.get("result") not in (0, 4):  # 4: size limit, a partial page
                    if self._conn.result.get("result") == 32:
                        raise SourceError(f"{where}: the base DN {base[:120]!r} does not exist", "check --base-dn")
                    raise SourceError(f"{where}: the search failed: {self._said(self._conn)}", "check --base-dn")
                entries = []
                for entry in self._conn.response or []:
                    if entry.get("type") == "searchResEntry":
                        entries.append((str(entry.get("dn") or ""), entry.get("raw_attributes") or {}))
                    elif entry.get("type") == "searchResRef":
                        referrals += 1  # never followed: see the module docstring
                control = (self._conn.result.get("controls") or {}).get("1.2.840.113556.1.4.319") or {}
                cookie = (control.get("value") or {}).get("cookie") or None  # before managedBy look-ups reset it
                pages += 1
                objects += len(entries)
                hosts = [self._host(dn, raw, request.options, stale_days) for dn, raw in entries]
                if cookie:
                    yield Batch(hosts=hosts)
                    continue
                detail = f"{objects} computer objects in {pages} page(s) under {base[:200]}"
                if referrals:
                    detail += f"; {referrals} referral(s) not followed (posture never follows referrals)"
                yield Batch(hosts=hosts, done=1, unit=seq, outcomes=[Outcome(
                    where, "ok", detail, str(request.options["creds"]), round(time.monotonic() - started, 3), pages,
                )])  # fmt: skip
                return
        except lx.LDAPException as exc:
            if self._cancelled:
                return
            raise SourceError(*self._why(where, exc)) from None
        finally:
            self._close()

    def _manager(self, dn: str) -> str | None:
        """managedBy's DN as the manager's displayName (else its name), looked up once per DN."""
        if dn in self._managers:
            return self._managers[dn]
        name = None
        if self._conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["displayName", "name"]):
            for entry in self._conn.response or []:
                raw = entry.get("raw_attributes") or {}
                name = _text(raw.get("displayName"), 128) or _text(raw.get("name"), 128)
        if len(self._managers) < MAX_MANAGERS:
            self._managers[dn] = name
        return name

    def _host(self, dn: str, raw: dict[str, list[bytes]], options: dict[str, Any], stale_days: int) -> PreparedHost:
        """One computer object as a host observation: its names, its OS as it states it, the rest as evidence."""
        short = _text(raw.get("name"), 64)
        dns = _hostname(_text(raw.get("dNSHostName"), 253))
        # The DNS name is the identifier; the short name only when there is none (two domains may each have
        # a PC01: merging on it is the store's last resort, with its own checks, `IdentityIndex.by_short_name`).
        names = (dns,) if dns else tuple(filter(None, (_hostname(short),)))
        os_name = _text(raw.get("operatingSystem"))
        os_version = _text(raw.get("operatingSystemVersion"), 64)
        service_pack = _text(raw.get("operatingSystemServicePack"), 64)
        uac_text = _text(raw.get("userAccountControl"), 12) or ""
        uac = int(uac_text) if uac_text.isdigit() else None
        last_logon, created = _filetime(raw.get("lastLogonTimestamp")), _generalized(raw.get("whenCreated"))
        manager_dn = _text(raw.get("managedBy"), 1024)
        parent = bound(dn.split(",", 1)[1] if "," in dn else "", 1024) or ""
        directory = {
            "dn": bound(dn.replace("\x00", ""), 1024),
            "name": short,
            "dNSHostName": _text(raw.get("dNSHostName"), 253),
            "operatingSystem": os_name,
            "operatingSystemVersion": os_version,
            "operatingSystemServicePack": service_pack,
            "last_logon": last_logon,
            "password_last_set": _filetime(raw.get("pwdLastSet")),
            "created": created,
            "user_account_control": uac,
            "disabled": bool(uac is not None and uac & ACCOUNT_DISABLE),
            "stale": _stale(last_logon, created, stale_days),
            "stale_days": stale_days,
            "managed_by": manager_dn,
            "owner": self._manager(manager_dn) if manager_dn else None,
            "description": _text(raw.get("description"), 512),
            "ou": parent,
            "site": ou_lookup(parent, options.get("ou_sites") or {}),
            "business_service": ou_lookup(parent, options.get("ou_services") or {}),
        }
        oses = (OsMatch(name=os_name, accuracy=100, generation=os_version, method="directory"),) if os_name else ()
        return prepare_host(HostObservation(status="directory", addresses=(), hostnames=names, os_matches=oses,
                                            observed_at=None, directory=directory))  # fmt: skip


def _discard(conn: Any) -> None:
    """Unbind and close the connection's socket: ldap3 leaves the plain socket open when the TLS handshake
    fails (an untrusted certificate), which a long-lived process would pile up."""
    with suppress(Exception):
        conn.unbind()
    sock = getattr(conn, "socket", None)
    if sock is not None:
        with suppress(OSError):
            sock.close()
