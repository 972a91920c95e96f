"""What a site collector and the central server say to each other (`posture collector`, `posture serve`), and
the checks each end makes on what the other sent.

- **Requests are signed.** Every request a collector makes carries its key id, its site, the time, a fresh
  nonce and an Ed25519 signature (the machine's signing key, `posture keys generate`) over those, the method,
  the path and the SHA-256 of the body, under a domain of its own (`REQUEST_DOMAIN`), so no bundle or
  sector summary signature can stand in for one. The server accepts a request only from a key its config
  lists for that site (`[sites.NAME] collectors`), within MAX_SKEW of its own clock, with a nonce it has
  not seen in that window. TLS keeps the requests private; the signature says which collector asks, so a
  stolen TLS session or a proxy in between cannot take a site's work or upload into it.
- **An offer** (`POST /api/v1/take`) is one queued chunk: its targets, the run's nmap options and the
  scopes. The collector trusts none of it blindly: the options must be the few nmap settings posture
  itself sets (`check_options`: never free text that reaches nmap's argument list), and every target must
  lie inside the collector's own scope (its config's, item 4 of the issue) as well as the scopes sent.
- **A result** (`POST /api/v1/results`) is a bundle (`scanner.bundles`, the host agents' format: signed,
  optionally sealed to the server's X25519 key) whose payload is a `CHUNK_FORMAT` object: which run, chunk,
  queue job and attempt, and nmap's XML as nmap wrote it (or nmap's error). The server keys it by the
  SHA-256 of its bytes, so a re-upload is a no-op, and stores the chunk once whoever uploads it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from scanner.compat import UTC
from scanner.errors import PostureError

API = "/api/v1"
REQUEST_DOMAIN = b"posture.collector-request/1\n"
CHUNK_FORMAT = "posture-chunk/1"
MAX_SKEW = 300  # seconds a request's time may differ from the server's clock
MAX_UPLOAD = 64 * 2**20  # bytes of one result bundle (a /24's XML with scripts is a few MiB)
MAX_XML = 48 * 2**20
MAX_TARGETS = 4096  # a chunk's targets (posture's chunks are at most 4,096 addresses)
HEADERS = ("x-posture-key", "x-posture-site", "x-posture-time", "x-posture-nonce", "x-posture-signature")
_NONCE = re.compile(r"^[0-9a-f]{32}$")
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
_TARGET = re.compile(r"^[0-9A-Fa-f.:/]{2,64}$")  # an address or a network, nothing else (no option, no name)


class Refusal(PostureError):
    """A request or upload the server refuses: `status` is its HTTP status, the message its one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def request_message(method: str, path: str, site: str, stamp: str, nonce: str, body: bytes) -> bytes:
    """What a request's signature covers."""
    return REQUEST_DOMAIN + "\n".join((method, path, site, stamp, nonce, hashlib.sha256(body).hexdigest())).encode()


def signed_headers(method: str, path: str, site: str, body: bytes) -> dict[str, str]:
    """The headers of one signed request, made with this machine's signing key."""
    from scanner.bundles import sign_detached

    stamp, nonce = str(int(datetime.now(UTC).timestamp())), os.urandom(16).hex()
    kid, _, signature = sign_detached(request_message(method, path, site, stamp, nonce, body))
    return {"x-posture-key": kid, "x-posture-site": site, "x-posture-time": stamp, "x-posture-nonce": nonce,
            "x-posture-signature": signature}  # fmt: skip


class Nonces:
    """Nonces seen within the skew window: a request replayed inside it is refused (outside it, its time
    is). Bounded: past `limit` live nonces the server refuses new requests until old ones expire."""

    def __init__(self, limit: int = 200_000) -> None:
        self.seen: dict[str, float] = {}
        self.limit = limit

    def fresh(self, nonce: str, now: float) -> bool:
        if len(self.seen) >= self.limit // 2:
            self.seen = {n: t for n, t in self.seen.items() if now - t <= 2 * MAX_SKEW}
        if nonce in self.seen or len(self.seen) >= self.limit:
            return False
        self.seen[nonce] = now
        return True


def check_request(headers: Mapping[str, str], method: str, path: str, body: bytes,
                  keys: Mapping[str, tuple[str, bytes]], nonces: Nonces, now: float) -> tuple[str, str]:  # fmt: skip
    """The (key id, name) of the collector that signed this request, or a Refusal. `keys` are the
    collectors the request's site trusts (`scanner.jobs.Site.collectors`)."""
    from scanner.bundles import verify_detached

    got = {h: headers.get(h, "") for h in HEADERS}
    kid, stamp, nonce = got["x-posture-key"], got["x-posture-time"], got["x-posture-nonce"]
    if not all(got.values()) or not _KEY_ID.match(kid) or not _NONCE.match(nonce) or not stamp.isdigit():
        raise Refusal(401, "unsigned or malformed request (a collector signs every request)")
    if kid not in keys:
        raise Refusal(403, f"key {kid} is not a collector of this site")
    if abs(now - int(stamp[:12])) > MAX_SKEW:
        raise Refusal(401, f"the request's time is more than {MAX_SKEW} s from the server's (check both clocks)")
    try:
        signature = base64.b64decode(got["x-posture-signature"], validate=True)
    except ValueError:
        raise Refusal(401, "the request's signature is not base64") from None
    message = request_message(method, path, got["x-posture-site"], stamp, nonce, body)
    if not verify_detached(keys[kid][1], signature, message):
        raise Refusal(401, f"the request's signature is not {keys[kid][0]}'s")
    if not nonces.fresh(nonce, now):
        raise Refusal(409, "replayed request (its nonce was seen)")
    return kid, keys[kid][0]


# ---- offers ----------------------------------------------------------------------------------------

# The nmap settings a run may carry to a collector, with their types: what `scanner.agents.nmap.nmap_args`
# reads. Anything else in an offer is refused, so a server (or whoever holds its TLS key) cannot put free
# text on a collector's nmap command line.
_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "ports": (str, type(None)), "top_ports": (int, type(None)), "version_detection": (bool,),
    "os_detection": (bool, type(None)), "privileged": (bool, type(None)), "max_rate": (int, type(None)),
    "timing": (str,), "printer_ports": (bool,), "host_timeout": (str, type(None)), "dns": (bool,),
    "scripts": (bool,), "tls_ciphers": (bool,),
}  # fmt: skip
_HOST_TIMEOUT = re.compile(r"^[0-9]{1,6}(ms|s|m|h)?$")


def check_options(options: object) -> dict[str, Any]:
    """An offer's nmap options, each of a known key, type and form; a PostureError for anything else."""
    from scanner.agents.nmap import TIMING
    from scanner.targets import validate_ports

    if not isinstance(options, dict):
        raise PostureError("the offer's options are not an object")
    out: dict[str, Any] = {}
    for key, value in options.items():
        kinds = _OPTION_TYPES.get(str(key))
        if kinds is None or not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise PostureError(f"the offer's option {str(key)[:40]!r} is not one posture sets, or not of its type")
        out[key] = value
    if out.get("ports") is not None:
        out["ports"] = validate_ports(out["ports"])
    if out.get("timing", "normal") not in TIMING:
        raise PostureError("the offer's timing is not one of nmap's")
    if out.get("host_timeout") is not None and not _HOST_TIMEOUT.match(out["host_timeout"]):
        raise PostureError("the offer's host_timeout is not a time")
    for key in ("top_ports", "max_rate"):
        if out.get(key) is not None and not 1 <= out[key] <= 1_000_000:
            raise PostureError(f"the offer's {key} is out of range")
    return out


@dataclass(frozen=True)
class Offer:
    job: int
    attempt: int
    run: int
    seq: int
    targets: list[str]
    options: dict[str, Any]
    lease: float  # seconds without a heartbeat after which the server gives the chunk to another


def _whole(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**62:
        raise PostureError(f"the offer's {what} is not a whole number")
    return value


def check_offer(offer: object, own_scope: list[str]) -> Offer:
    """An offer as the collector accepts it: well formed, and each target inside the collector's own scope
    and inside every scope the server sent; a PostureError saying what is wrong otherwise (nmap never runs)."""
    from scanner.targets import parse_networks, parse_target, plan_scan

    if not isinstance(offer, dict):
        raise PostureError("the offer is not an object")
    targets = offer.get("targets")
    if (not isinstance(targets, list) or not 0 < len(targets) <= MAX_TARGETS
            or not all(isinstance(t, str) and _TARGET.match(t) for t in targets)):  # fmt: skip
        raise PostureError("the offer's targets are not a list of addresses and networks")
    scopes = offer.get("scopes")
    if not isinstance(scopes, dict) or not all(isinstance(v, list) for v in scopes.values()):
        raise PostureError("the offer's scopes are not lists of networks")
    parsed = [parse_target(t, resolve=False) for t in targets]
    for what, scope in [("this collector's scope", own_scope), *((f"the {k} scope", v) for k, v in scopes.items())]:
        if not scope:
            continue
        if not all(isinstance(s, str) for s in scope):
            raise PostureError(f"{what} is not a list of networks")
        try:
            plan_scan(parsed, (), parse_networks(list(scope), what))
        except PostureError as exc:
            raise PostureError(exc.message, "the server offered a target outside it") from None
    lease = offer.get("lease", 60)
    if not isinstance(lease, (int, float)) or isinstance(lease, bool) or not 1 <= lease <= 3600:
        raise PostureError("the offer's lease is out of range")
    return Offer(_whole(offer.get("job"), "job"), _whole(offer.get("attempt"), "attempt"),
                 _whole(offer.get("run"), "run"), _whole(offer.get("seq"), "seq"), list(targets),
                 check_options(offer.get("options", {})), float(lease))  # fmt: skip


# ---- results ---------------------------------------------------------------------------------------


def chunk_payload(offer: Offer, site: str, xml: bytes | None, error: str | None) -> dict[str, Any]:
    """A result's payload: nmap's XML as nmap wrote it (decoded as Latin-1, byte for byte, so nothing is
    lost to a device's odd bytes), or nmap's error."""
    return {"format": CHUNK_FORMAT, "site": site, "run": offer.run, "seq": offer.seq, "job": offer.job,
            "attempt": offer.attempt, "targets": offer.targets, "collected_at": datetime.now(UTC).isoformat(),
            "nmap_xml": None if xml is None else xml.decode("latin-1"),
            "error": None if error is None else error[:500]}  # fmt: skip


def check_chunk_payload(payload: dict[str, Any], path: Path) -> dict[str, Any]:
    """A result's payload, checked as `scanner.bundles.verify_bundle` asks (BundleRejected naming `path`)."""
    from scanner.bundles import BundleRejected

    def bad(why: str) -> BundleRejected:
        return BundleRejected(f"{path}: not a chunk result ({why})", "upload it with this version's collector")

    if payload.get("format") != CHUNK_FORMAT:
        raise bad("format")
    for key in ("run", "seq", "job", "attempt"):
        value = payload.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**62:
            raise bad(key)
    targets = payload.get("targets")
    if not isinstance(targets, list) or not all(isinstance(t, str) and _TARGET.match(t) for t in targets):
        raise bad("targets")
    if not isinstance(payload.get("site"), str) or not isinstance(payload.get("collected_at"), str):
        raise bad("site or time")
    xml, error = payload.get("nmap_xml"), payload.get("error")
    if (xml is None) == (error is None) or not isinstance(xml or error, str) or len(xml or "") > MAX_XML:
        raise bad("it holds neither nmap's output nor its error, or too much of it")
    return payload
