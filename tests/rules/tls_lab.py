"""A TLS lab for tests/rules/test_tls.py: certificates made with the real `openssl`, served by a real nginx
on this module's own loopback range (127.103.0.0/16), read by the real nmap (ssl-cert, ssl-enum-ciphers).

The same code wrote tests/scanner/data/tls-certificates.xml and tls-ciphers.xml (`python -m
tests.rules.tls_lab DIR` runs the lab once and keeps nmap's XML; tests/scanner/data/README.md says when).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from scanner.compat import UTC
from scanner.lab import _wait_listening, find_binary, nginx_config, stop_group

PORT = 443
MODERN_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"  # forward secrecy and AEAD only: the NCSC's TLS 1.2 profile


@dataclass(frozen=True)
class Site:
    """One nginx server: its address, its certificate and how its TLS is set up."""

    name: str
    address: str
    bits: int = 2048
    digest: str = "sha256"
    self_signed: bool = False
    valid: tuple[str, str] | None = None  # openssl ca -startdate/-enddate; None: from now for a year
    subject: str = ""  # default /CN=<name>.posture.test
    protocols: str = "TLSv1.2 TLSv1.3"
    ciphers: str = MODERN_CIPHERS


def _stamp(when: datetime) -> str:
    return when.strftime("%Y%m%d%H%M%SZ")


def certificate_sites(now: datetime) -> list[Site]:
    """The certificates of issue 14: a good one signed by a test CA, expired, expiring in 10 days, SHA-1
    signed, RSA 1024, self-signed, one with three problems at once (expired, SHA-1, RSA 1024), and two hostile
    ones: dates of 1960 and 9999, and a self-signed one whose subject carries control characters, markup and a
    right-to-left override."""
    return [
        Site("good", "127.103.0.1"),
        Site("expired", "127.103.0.2", valid=("20200101000000Z", "20210101000000Z")),
        Site("expiring", "127.103.0.3", valid=(_stamp(now - timedelta(days=300)), _stamp(now + timedelta(days=10)))),
        Site("sha1", "127.103.0.4", digest="sha1"),
        Site("rsa1024", "127.103.0.5", bits=1024),
        Site("selfsigned", "127.103.0.6", self_signed=True),
        Site("absurd", "127.103.0.7", valid=("19600101000000Z", "99991231235959Z")),
        Site("oldest", "127.103.0.9", bits=1024, digest="sha1", valid=("20150101000000Z", "20180101000000Z")),
        Site("control", "127.103.0.8", self_signed=True,
             subject="/CN=evil\x1b[31mred\x07bell<img src=x onerror=alert(1)>\u202egnp.exe/O=posture lab"),
    ]


def cipher_sites() -> list[Site]:
    """An old-style server with TLS 1.0 and 1.1, NULL and anonymous ciphers and RSA key exchange (OpenSSL 3
    offers them only at security level 0), and one with TLS 1.2+ and forward-secret AEAD ciphers only."""
    return [
        Site("legacy", "127.103.0.20", protocols="TLSv1 TLSv1.1 TLSv1.2", ciphers="ALL:eNULL:@SECLEVEL=0"),
        Site("modern", "127.103.0.21"),
    ]


CA_CONFIG = """[ ca ]
default_ca = lab
[ lab ]
database = {root}/index.txt
new_certs_dir = {root}
serial = {root}/serial
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
[ anything ]
commonName = supplied
organizationName = optional
"""


def _openssl(*args: str) -> None:
    subprocess.run([find_binary("openssl", "openssl"), *args], check=True, capture_output=True, timeout=60)


def make_certificates(root: Path, sites: list[Site], now: datetime) -> None:
    """A test CA, then each site's key and certificate (signed by the CA, or by itself)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "index.txt").write_text("")
    (root / "serial").write_text("01\n")
    (root / "ca.cnf").write_text(CA_CONFIG.format(root=root))
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(root / "ca.key"), "-out",
             str(root / "ca.pem"), "-days", "3650", "-subj", "/CN=Posture Test CA/O=posture lab")  # fmt: skip
    for site in sites:
        key, pem, csr = (root / f"{site.name}.{ext}" for ext in ("key", "pem", "csr"))
        subject = site.subject or f"/CN={site.name}.posture.test/O=posture lab"
        if site.self_signed:
            _openssl("req", "-utf8", "-x509", "-newkey", f"rsa:{site.bits}", "-nodes", "-keyout", str(key),
                     "-out", str(pem), "-days", "365", f"-{site.digest}", "-subj", subject)  # fmt: skip
            continue
        _openssl("req", "-utf8", "-newkey", f"rsa:{site.bits}", "-nodes", "-keyout", str(key), "-out", str(csr),
                 "-subj", subject)  # fmt: skip
        start, end = site.valid or (_stamp(now - timedelta(days=1)), _stamp(now + timedelta(days=365)))
        _openssl("ca", "-batch", "-config", str(root / "ca.cnf"), "-cert", str(root / "ca.pem"), "-keyfile",
                 str(root / "ca.key"), "-in", str(csr), "-out", str(pem), "-notext", "-md", site.digest,
                 "-startdate", start, "-enddate", end)  # fmt: skip


def _nginx_config(root: Path, sites: list[Site]) -> Path:
    servers = "".join(
        f"  server {{ listen {s.address}:{PORT} ssl; ssl_certificate {root / s.name}.pem; "
        f"ssl_certificate_key {root / s.name}.key; ssl_protocols {s.protocols}; "
        # @SECLEVEL=0 lets OpenSSL 3 load an RSA 1024 or SHA-1 certificate at all
        f'ssl_ciphers "{s.ciphers}{"" if "SECLEVEL" in s.ciphers else ":@SECLEVEL=0"}"; return 200 "lab\\n"; }}\n'
        for s in sites
    )
    return nginx_config(root, servers)


@contextlib.contextmanager
def nginx(root: Path, sites: list[Site]) -> Iterator[None]:
    """A real nginx serving every site on its 127.103.0.x address, stopped (its process group) however the
    test ends. Loopback addresses of 127.0.0.0/8 need no interface address to be bound."""
    config = _nginx_config(root, sites)
    log = root / "nginx.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([find_binary("nginx", "nginx-light"), "-c", str(config), "-p", str(root)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        try:
            for site in sites:
                _wait_listening(site.address, PORT, proc, root / "nginx-error.log")
            yield
        finally:
            stop_group(proc)


def nmap(sites: list[Site], scripts: str, out: Path) -> Path:
    """The real nmap against the sites, as issue 14 says: -sT on the port, the TLS scripts, XML out."""
    subprocess.run([find_binary("nmap", "nmap"), "-n", "-Pn", "-sT", "-p", str(PORT), "--script", scripts,
                    "-oX", str(out), *(s.address for s in sites)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    return out


def run(root: Path, sites: list[Site], scripts: str, out: Path, now: datetime) -> Path:
    """Make the certificates, serve them, scan them: nmap's XML."""
    make_certificates(root / "pki", sites, now)
    with nginx(root / "pki", sites):
        return nmap(sites, scripts, out)


if __name__ == "__main__":  # python -m tests.rules.tls_lab DIR: write the two fixture files into DIR
    target = Path(sys.argv[1])
    moment = datetime.now(UTC)
    run(target / "lab-certs", certificate_sites(moment), "ssl-cert", target / "tls-certificates.xml", moment)
    run(target / "lab-ciphers", cipher_sites(), "ssl-cert,ssl-enum-ciphers", target / "tls-ciphers.xml", moment)
