"""Signed (and optionally encrypted) host-agent bundles: keys, sealing, verification and import.

A bundle is what `posture agent collect` writes: the agent's JSON payload, gzipped, signed with the
collecting machine's Ed25519 key. It may also be sealed to the central site's X25519 public key
(ephemeral X25519, HKDF-SHA256, AES-256-GCM) so that it can travel by e-mail or a file share; it is
signed first and sealed second, so the central site checks who signed what it decrypted.

The central site imports only what it can verify: the signature against its trust list
(`posture keys trust`), the size (a bound before anything is read), the decompressed size, the
payload's shape, and that the bundle was not imported before (its id and digest are kept in the
`bundles` table, so a replay is refused even after the scan it made is pruned). Every bundle named on a
command line is checked before any is written; each accepted one is then written in one transaction.

Private keys are sealed at rest with the vault key (`scanner.vault`); public keys are plain text lines,
`posture-ed25519 BASE64 COMMENT`, that can be pasted into a ticket or a config file.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import ipaddress
import json
import logging
import os
import re
import socket
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from scanner.compat import UTC
from scanner.db import Database
from scanner.errors import PostureError
from scanner.hostagent import MAC_RE, MAX_PACKAGES, MAX_SOCKETS, PAYLOAD_FORMAT
from scanner.model import bound
from scanner.paths import config_dir, read_regular_file
from scanner.safefs import write_atomic
from scanner.sources import Request
from scanner.store import PreparedHost, Store, utc_now
from scanner.vault import check_name, seal, unseal, write_private

SIGNED_FORMAT = "posture-bundle/1"
SEALED_FORMAT = "posture-sealed/1"
SIGNING_PREFIX = "posture-ed25519"
ENCRYPTION_PREFIX = "posture-x25519"
DEFAULT_MAX_BYTES = 64 * 2**20  # a host with 10,000 packages makes about 300 KiB
MAX_PAYLOAD_BYTES = 256 * 2**20  # decompressed: a gzip bomb stops here
# What a payload's JSON may hold, counted on its bytes before it is parsed (brackets and commas inside
# strings count too: an upper bound). A real one has about one object per package and two per socket;
# a hostile signer's `[{},{},...]` of 256 MiB would otherwise become 64 million dicts.
MAX_CONTAINERS = 4 * (MAX_PACKAGES + 2 * MAX_SOCKETS) + 4096
MAX_VALUES = 16 * MAX_PACKAGES + 80 * MAX_SOCKETS + 65536
# collected_at: agents' clocks drift, but not by years; a bundle dated 9999 would block every later one
# of its machine (replays are told by date), and one dated before this software existed is damaged.
EARLIEST_COLLECTED = datetime(2000, 1, 1, tzinfo=UTC)
CLOCK_SLACK = timedelta(days=1)


class BundleRejected(PostureError):
    """A bundle that is not imported, and why (one line, naming the file)."""


# ---- keys ------------------------------------------------------------------------------------------


def keys_dir() -> Path:
    return config_dir() / "keys"


def trust_path() -> Path:
    return config_dir() / "trusted-keys.json"


def key_id(public: bytes) -> str:
    """A short, stable name for a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public).hexdigest()[:16]


def public_line(prefix: str, public: bytes, comment: str) -> str:
    return f"{prefix} {base64.b64encode(public).decode()} {comment}".strip()


def parse_public_line(text: str, prefix: str) -> bytes:
    """The raw 32-byte key from a `prefix BASE64 [comment]` line (or the contents of a .pub file)."""
    parts = text.strip().split()
    if len(parts) < 2 or parts[0] != prefix:
        raise PostureError(f"not a {prefix} public key", f"give the line `posture keys list` prints ({prefix} ...)")
    try:
        raw = base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise PostureError(f"the {prefix} key is not valid base64", "copy the whole line again") from None
    if len(raw) != 32:
        raise PostureError(f"the {prefix} key is {len(raw)} bytes, not 32", "copy the whole line again")
    return raw


def _raw_public(private: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return bytes(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def generate_keys(force: bool = False) -> dict[str, str]:
    """This machine's signing key (Ed25519, for agents) and encryption key (X25519, for the central site).

    Private halves are sealed with the vault key; public halves are written next to them as .pub lines.
    An existing key is kept unless `force`: replacing it breaks every trust made with it.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    made: dict[str, str] = {}
    comment = f"{os.environ.get('USER', 'posture')}@{socket.gethostname()[:64]}"
    for name, prefix, make in (("signing", SIGNING_PREFIX, Ed25519PrivateKey.generate),
                               ("encryption", ENCRYPTION_PREFIX, X25519PrivateKey.generate)):  # fmt: skip
        path = keys_dir() / f"{name}.key"
        if path.exists() and not force:
            made[name] = (keys_dir() / f"{name}.pub").read_text(encoding="utf-8").strip()
            continue
        private = make()
        raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        write_private(path, json.dumps({"kind": name, **seal(f"key:{name}", raw)}).encode())
        line = public_line(prefix, _raw_public(private), comment)
        write_atomic(keys_dir() / f"{name}.pub", (line + "\n").encode())
        made[name] = line
    return made


def _private_key(name: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    path = keys_dir() / f"{name}.key"
    if not path.exists():
        raise PostureError(f"this machine has no {name} key", "make one with `posture keys generate`")
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise PostureError(f"the key file {path} is damaged", "restore it, or `posture keys generate --force`") \
            from None
    raw = unseal(f"key:{name}", entry)
    return (Ed25519PrivateKey if name == "signing" else X25519PrivateKey).from_private_bytes(raw)


def own_public_keys() -> dict[str, str]:
    out = {}
    for name in ("signing", "encryption"):
        path = keys_dir() / f"{name}.pub"
        if path.exists():
            out[name] = path.read_text(encoding="utf-8").strip()
    return out


def trusted_keys() -> dict[str, dict[str, str]]:
    """key id -> {name, public (base64), added}."""
    path = trust_path()
    if not path.exists():
        return {}
    try:
        data: dict[str, dict[str, str]] = json.loads(path.read_text(encoding="utf-8"))["keys"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise PostureError(f"the trust list {path} is damaged", "restore it from backup") from None
    return data


def trust(line: str, name: str) -> str:
    """Add an agent's signing key to the trust list under a name; returns its key id."""
    check_name(name, "key")
    raw = parse_public_line(line, SIGNING_PREFIX)
    keys = trusted_keys()
    kid = key_id(raw)
    clash = next((k for k, v in keys.items() if v["name"] == name and k != kid), None)
    if clash:
        raise PostureError(f"a different key is already trusted as {name!r} ({clash})", "choose another name")
    keys[kid] = {"name": name, "public": base64.b64encode(raw).decode(), "added": utc_now()}
    write_private(trust_path(), json.dumps({"keys": keys}, indent=2).encode())
    return kid


def untrust(name_or_id: str) -> str:
    keys = trusted_keys()
    kid = next((k for k, v in keys.items() if name_or_id in (k, v["name"])), None)
    if kid is None:
        raise PostureError(f"no trusted key {name_or_id[:70]!r}", "see `posture keys list`")
    del keys[kid]
    write_private(trust_path(), json.dumps({"keys": keys}, indent=2).encode())
    return kid


# ---- detached signatures (a file signed beside it: the sector-sharing summary) ---------------------


def _bundle_domain(message: bytes) -> bool:
    """True for a message a bundle's signature covers (`_signed_message`): never signed or accepted detached."""
    return message.startswith(SIGNED_FORMAT.encode() + b"\0")


def sign_detached(message: bytes) -> tuple[str, str, str]:
    """(key id, public key base64, signature base64) of this machine's Ed25519 signing key over `message`.

    The caller puts its own domain prefix first (reports/share.py: `posture.share-summary/1\\n` + the file's
    bytes), so one kind of signed file can never be passed off as another; a message shaped like a bundle's
    is refused outright, so a detached signature can never stand in for a bundle's. No key: a PostureError
    saying to run `posture keys generate`."""
    if _bundle_domain(message):
        raise ValueError("a detached signature never covers a bundle's message")
    signer = _private_key("signing")
    public = _raw_public(signer)
    return key_id(public), base64.b64encode(public).decode(), base64.b64encode(signer.sign(message)).decode()


def verify_detached(public: bytes, signature: bytes, message: bytes) -> bool:
    """Whether `signature` is `public`'s (raw 32-byte Ed25519 key) over `message`; False for anything
    malformed (a wrong length, a bundle-shaped message) rather than an exception."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if len(public) != 32 or len(signature) != 64 or _bundle_domain(message):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


# ---- writing a bundle -----------------------------------------------------------------------------


def _signed_message(kid: str, payload: bytes) -> bytes:
    """What the signature covers: the format and the key id as well as the payload, so neither can be
    swapped under a valid signature."""
    return SIGNED_FORMAT.encode() + b"\0" + kid.encode() + b"\0" + payload


def make_bundle(payload: dict[str, Any], encrypt_to: str | None = None) -> bytes:
    """The bundle file's bytes: the payload gzipped and signed; sealed to `encrypt_to` (a public line)."""
    signer = _private_key("signing")
    kid = key_id(_raw_public(signer))
    packed = gzip.compress(json.dumps(payload, separators=(",", ":")).encode(), mtime=0)
    envelope = {
        "format": SIGNED_FORMAT,
        "key_id": kid,
        "signature": base64.b64encode(signer.sign(_signed_message(kid, packed))).decode(),
        "payload": base64.b64encode(packed).decode(),
    }
    signed = json.dumps(envelope).encode()
    return signed if encrypt_to is None else _seal_to(signed, parse_public_line(encrypt_to, ENCRYPTION_PREFIX))


def _aead_key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    info = SEALED_FORMAT.encode() + ephemeral + recipient
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def _seal_to(signed: bytes, recipient: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    ephemeral = X25519PrivateKey.generate()
    eph_public = _raw_public(ephemeral)
    key = _aead_key(ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient)), eph_public, recipient)
    nonce = os.urandom(12)
    header = {
        "format": SEALED_FORMAT,
        "recipient": key_id(recipient),
        "ephemeral": base64.b64encode(eph_public).decode(),
        "nonce": base64.b64encode(nonce).decode(),
    }
    ciphertext = AESGCM(key).encrypt(nonce, signed, json.dumps(header, sort_keys=True).encode())
    return json.dumps({**header, "ciphertext": base64.b64encode(ciphertext).decode()}).encode()


def write_bundle(path: Path, data: bytes) -> None:
    """Write atomically (`scanner.safefs`): a full disk or a crash leaves no half bundle under the real name,
    and a link planted at the name is replaced, never written through."""
    write_atomic(path, data)


# ---- reading and verifying -------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedBundle:
    path: Path
    digest: str
    key_id: str
    key_name: str
    sealed: bool
    payload: dict[str, Any]


def _b64(envelope: dict[str, str], field: str, path: Path) -> bytes:
    try:
        return base64.b64decode(str(envelope[field]), validate=True)
    except (KeyError, ValueError):
        raise BundleRejected(f"{path}: damaged bundle (its {field} is missing or not base64)") from None


_WS = rb"[ \t\r\n]*"
_FIELD = rb'"([a-z_]{1,32})"' + _WS + b":" + _WS + rb'"([\x20\x21\x23-\x5b\x5d-\x7e]*)"'  # plain ASCII, no escapes
_PLAIN_FIELD = _FIELD.replace(b"(", b"(?:")
_ENVELOPE = re.compile(_WS + rb"\{(?:" + _WS + _PLAIN_FIELD + _WS + rb",){0,15}"
                       + _WS + _PLAIN_FIELD + _WS + rb"\}" + _WS)  # fmt: skip
_ENVELOPE_FIELD = re.compile(_FIELD)


def _envelope(data: bytes, path: Path) -> dict[str, str]:
    """The envelope's fields, read before anything in the file is verified, so without a JSON parser.

    An envelope is what `make_bundle` writes: one flat JSON object of at most 16 plain ASCII strings.
    Anything else (nesting, numbers, escapes, `[[[[...`, a 64 MiB `[{},{},...]`) is refused by one
    regular-expression match that builds no objects, so an unsigned file costs no more memory than its
    own bytes, and the signature is checked over the bytes before the payload is unpacked or parsed.
    """
    if not _ENVELOPE.fullmatch(data):
        raise BundleRejected(f"{path}: not a signed posture bundle (not the envelope `posture agent collect` writes)",
                             "only signed bundles are imported")  # fmt: skip
    fields: dict[str, str] = {}
    view = memoryview(data)
    for match in _ENVELOPE_FIELD.finditer(data):
        key = match.group(1).decode()
        if key in fields:
            raise BundleRejected(f"{path}: damaged bundle (its {key} is given twice)", "ask for the bundle again")
        fields[key] = str(view[match.start(2) : match.end(2)], "ascii")  # decoded in place: no third copy
    return fields


def _payload_json(data: bytes, path: Path) -> dict[str, Any]:
    """The verified payload, parsed: its size is already bounded (MAX_PAYLOAD_BYTES); its counts of objects,
    arrays and values are bounded here before parsing, and its depth by the parser's own recursion limit.
    Signed is not the same as harmless: a compromised host signs what it likes."""
    if data.count(b"{") + data.count(b"[") > MAX_CONTAINERS or data.count(b",") > MAX_VALUES:
        raise BundleRejected(f"{path}: the payload is malformed (more objects or values than any host has)",
                             "collect it again with this version")  # fmt: skip
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BundleRejected(f"{path}: damaged payload (not JSON, or nested too deep)", "ask for the bundle again") \
            from None
    if not isinstance(value, dict):
        raise BundleRejected(f"{path}: damaged payload (not a JSON object)", "ask for the bundle again")
    return value


def _unseal(envelope: dict[str, str], path: Path) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        private = _private_key("encryption")
    except PostureError as exc:
        raise BundleRejected(f"{path}: encrypted, and {exc.message}", exc.hint) from None
    mine = _raw_public(private)
    if envelope.get("recipient") != key_id(mine):
        raise BundleRejected(
            f"{path}: encrypted to another key ({str(envelope.get('recipient'))[:20]}), not this site's "
            f"({key_id(mine)})",
            "the agent must encrypt to the x25519 key that `posture keys list` shows here",
        )
    ephemeral, nonce, ciphertext = (_b64(envelope, f, path) for f in ("ephemeral", "nonce", "ciphertext"))
    header = {k: envelope.get(k) for k in ("format", "recipient", "ephemeral", "nonce")}
    try:
        key = _aead_key(private.exchange(X25519PublicKey.from_public_bytes(ephemeral)), ephemeral, mine)
        return bytes(AESGCM(key).decrypt(nonce, ciphertext, json.dumps(header, sort_keys=True).encode()))
    except (InvalidTag, ValueError):
        raise BundleRejected(f"{path}: tampered or damaged (decryption failed its integrity check)",
                             "ask for the bundle again") from None  # fmt: skip


def _gunzip(packed: bytes, path: Path) -> bytes:
    inflater = zlib.decompressobj(wbits=31)
    try:
        data = inflater.decompress(packed, MAX_PAYLOAD_BYTES + 1)
    except zlib.error:
        raise BundleRejected(f"{path}: damaged payload (not gzip)") from None
    if len(data) > MAX_PAYLOAD_BYTES or inflater.unconsumed_tail:
        raise BundleRejected(f"{path}: the payload unpacks to more than {MAX_PAYLOAD_BYTES // 2**20} MiB",
                             "no real host has that much; refused")  # fmt: skip
    return data


def read_bundle(path: Path, trusted: dict[str, dict[str, str]], max_bytes: int = DEFAULT_MAX_BYTES,
                follow_links: bool = True) -> VerifiedBundle:  # fmt: skip
    """Open, decrypt and verify one bundle; raise BundleRejected with the reason. Writes nothing.

    Whatever is wrong with the file, the answer is a refusal of that file: one hostile file in a batch
    (or an inbox) never stops the others.
    """
    try:
        return _read_bundle(path, trusted, max_bytes, follow_links)
    except BundleRejected:
        raise
    except PostureError as exc:
        raise BundleRejected(exc.message, exc.hint) from None
    except Exception as exc:  # a surprise in one file is that file's refusal, never the batch's crash
        raise BundleRejected(f"{path}: could not be read as a bundle ({type(exc).__name__})",
                             "ask for the bundle again") from None  # fmt: skip


def _read_bundle(path: Path, trusted: dict[str, dict[str, str]], max_bytes: int, follow_links: bool) -> VerifiedBundle:
    raw = read_regular_file(path, max_bytes, "a bundle", "raise it with --max-size if this is real", follow_links)
    return verify_bundle(raw, path, trusted, check_payload)


def verify_bundle(raw: bytes, path: Path, trusted: dict[str, dict[str, str]],
                  check: Callable[[dict[str, Any], Path], dict[str, Any]]) -> VerifiedBundle:  # fmt: skip
    """A bundle's bytes (already bounded in size) unsealed if sealed, its signature checked against
    `trusted` (key id -> {name, public}), then its payload unpacked, parsed and checked by `check` (which
    raises BundleRejected): a host agent's (`check_payload`) or a site collector's chunk (`posture.wire`).
    `path` names the bundle in refusals (a file, or an upload). The digest is of the signed payload."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    envelope = _envelope(raw, path)
    sealed = envelope.get("format") == SEALED_FORMAT
    if sealed:
        envelope = _envelope(_unseal(envelope, path), path)
    if envelope.get("format") != SIGNED_FORMAT:
        raise BundleRejected(f"{path}: not a signed posture bundle", "make bundles with `posture agent collect`")
    kid = str(envelope.get("key_id", ""))[:64]
    if "signature" not in envelope:
        raise BundleRejected(f"{path}: unsigned", "only signed bundles are imported")
    signature, packed = _b64(envelope, "signature", path), _b64(envelope, "payload", path)
    key = trusted.get(kid)
    if key is None:
        raise BundleRejected(f"{path}: signed by key {kid}, which is not trusted here",
                             "if it is yours, `posture keys trust 'posture-ed25519 ...' --name NAME`")  # fmt: skip
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(key["public"]))
        public.verify(signature, _signed_message(kid, packed))
    except InvalidSignature:
        raise BundleRejected(f"{path}: tampered (the signature of {key['name']} does not match the contents)",
                             "ask for the bundle again") from None  # fmt: skip
    payload = check(_payload_json(_gunzip(packed, path), path), path)
    return VerifiedBundle(path, hashlib.sha256(packed).hexdigest(), kid, key["name"], sealed, payload)


_STR_LIMITS = {"name": 256, "version": 128, "arch": 32, "vendor": 256, "manager": 16}
_STR_KEYS = _STR_LIMITS.keys()
_FAST_LENGTH = 32  # within every limit but the manager's, which must be one of MANAGERS anyway
MANAGERS = frozenset({"dpkg", "rpm", "apk", "pip", "registry"})


def identifier_address(kind: object, value: object) -> str | None:
    """An address that can name one machine, in its canonical form; None for anything else.

    0.0.0.0 and ::, loopback, multicast, link-local and reserved addresses are on many machines at once:
    taken as identifiers they would merge unrelated hosts into one asset. They are dropped, not the
    bundle refused: the rest of what the host says is still true.
    """
    if kind not in ("ipv4", "ipv6") or not isinstance(value, str) or len(value) > 64:
        return None
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    if (ip.version == 4) != (kind == "ipv4") or getattr(ip, "scope_id", None):
        return None
    if ip.is_unspecified or ip.is_loopback or ip.is_multicast or ip.is_link_local or ip.is_reserved:
        return None
    return str(ip)


def check_payload(payload: dict[str, Any], path: Path) -> dict[str, Any]:
    """The payload's shape, with every string bounded: signed is not the same as harmless (a compromised
    host signs what it likes). Any other surprise in its structure is a refusal too, never a crash."""
    try:
        return _check_payload(payload, path)
    except (TypeError, ValueError, AttributeError, KeyError, OverflowError, RecursionError) as exc:
        raise BundleRejected(f"{path}: the payload is malformed ({type(exc).__name__})",
                             "collect it again with this version") from None  # fmt: skip


def _check_payload(payload: dict[str, Any], path: Path) -> dict[str, Any]:
    def bad(why: str) -> BundleRejected:
        return BundleRejected(f"{path}: the payload is malformed ({why})", "collect it again with this version")

    if payload.get("format") != PAYLOAD_FORMAT:
        raise bad(f"format {str(payload.get('format'))[:40]!r}, expected {PAYLOAD_FORMAT}")
    if not re.fullmatch(r"[0-9a-f]{32}", str(payload.get("bundle_id", ""))):
        raise bad("bundle_id")
    try:
        collected = datetime.fromisoformat(str(payload.get("collected_at"))[:40].replace("Z", "+00:00"))
    except ValueError:
        raise bad("collected_at") from None
    if collected.tzinfo is None:
        collected = collected.replace(tzinfo=UTC)  # the agent writes UTC ("Z"); a bare time is read the same
    if not EARLIEST_COLLECTED <= collected <= datetime.now(UTC) + CLOCK_SLACK:
        raise bad(f"collected_at {str(payload.get('collected_at'))[:40]!r} is before 2000 or more than a day ahead "
                  "of this machine's clock")  # fmt: skip
    host, os_info = payload.get("host"), payload.get("os")
    packages, listening = payload.get("packages"), payload.get("listening")
    if not (isinstance(host, dict) and isinstance(os_info, dict) and isinstance(packages, list)
            and isinstance(listening, list)):  # fmt: skip
        raise bad("host, os, packages or listening")
    if len(packages) > MAX_PACKAGES or len(listening) > MAX_SOCKETS:
        raise bad("too many packages or sockets")
    clean_packages = []
    for p in packages:
        if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not p["name"]:
            raise bad("a package without a name")
        if p.get("manager") not in MANAGERS:
            raise bad(f"a package from an unknown manager {str(p.get('manager'))[:20]!r}")
        values = p.values()
        try:  # the usual package: known keys, all strings (join checks that in C), none to cut
            fast = p.keys() <= _STR_KEYS and bool("".join(values)) and max(map(len, values)) <= _FAST_LENGTH
        except TypeError:
            fast = False
        if fast:
            clean_packages.append(p)
        else:
            clean_packages.append({k: bound(str(p[k]), n) or "" for k, n in _STR_LIMITS.items()
                                   if p.get(k) is not None})  # fmt: skip
    clean_listening = []
    for s in listening:  # a port is an int, and `true` (a bool, so an int to isinstance) is not one
        if not (isinstance(s, dict) and s.get("protocol") in ("tcp", "udp") and type(s.get("port")) is int
                and 0 <= s["port"] <= 65535 and isinstance(s.get("addresses", []), list)):  # fmt: skip
            raise bad("a listening socket")
        clean_listening.append({"protocol": s["protocol"], "port": s["port"],
                                "addresses": [bound(str(a), 64) for a in s.get("addresses", [])[:64]],
                                "process": bound(str(s["process"]), 64) if s.get("process") else None})  # fmt: skip
    machine_id = host.get("machine_id")
    if machine_id is not None and not re.fullmatch(r"[0-9a-f]{32}", str(machine_id)):
        raise bad("machine_id")
    addresses = [[k, ip] for k, v in host.get("addresses", [])[:256] if (ip := identifier_address(k, v))]
    macs = [m for m in host.get("macs", [])[:64] if isinstance(m, str) and MAC_RE.fullmatch(m)]
    hostnames = [bound(h, 253) for h in host.get("hostnames", [])[:16] if isinstance(h, str) and h]
    return {
        "format": PAYLOAD_FORMAT,
        "bundle_id": payload["bundle_id"],
        "collected_at": collected.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "agent_version": bound(str(payload.get("agent_version", "")), 32),
        "host": {"machine_id": machine_id, "hostnames": hostnames, "addresses": addresses, "macs": macs},
        "os": {str(k)[:32]: bound(str(v), 256) for k, v in list(os_info.items())[:32] if isinstance(v, str | int)},
        "packages": clean_packages,
        "listening": clean_listening,
        "warnings": [bound(str(w), 300) for w in payload.get("warnings", [])[:32]],
    }


# ---- into the inventory -----------------------------------------------------------------------------


def _service_name(port: int, protocol: str) -> str | None:
    try:
        return socket.getservbyport(port, protocol)  # /etc/services: a file, not a lookup on the network
    except OSError:
        return None


LOOPBACK = ("127.", "::1")


def prepared_host(payload: dict[str, Any]) -> PreparedHost:
    """The payload as the rows a network scan would give: an observation, its services and software."""
    host, os_info = payload["host"], payload["os"]
    ips = [v for _, v in host["addresses"]]
    evidence = {
        "status": "up",
        "addresses": [*host["addresses"], *(["mac", m] for m in host["macs"])],
        "hostnames": host["hostnames"],
        "machine_id": host["machine_id"],
        "kernel": os_info.get("kernel"),
        "agent_version": payload["agent_version"],
        "packages": len(payload["packages"]),
        # The agent lists every listening socket (a missing one is closed), except from a registry export.
        "listening_complete": os_info.get("platform") != "windows",
        "warnings": payload["warnings"],
    }
    services = []
    for s in payload["listening"]:
        local_only = bool(s["addresses"]) and all(a.startswith(LOOPBACK) for a in s["addresses"])
        services.append((s["port"], s["protocol"], "listening-local" if local_only else "open",
                         _service_name(s["port"], s["protocol"]), s["process"], None,
                         bound("listening on " + ", ".join(s["addresses"]), 256), None, "agent", None, None, None,
                         "[]", None))  # fmt: skip
    software: list[tuple[Any, ...]] = []
    if os_info.get("id") or os_info.get("pretty_name"):
        name = os_info.get("pretty_name") or os_info.get("id")
        if os_info.get("kernel"):
            name = f"{name}, kernel {os_info['kernel']}"
        extra = {k: os_info[k] for k in ("id", "id_like", "version_id", "build", "installation_type",
                                          "service_pack") if os_info.get(k)}  # fmt: skip
        method = "registry" if os_info.get("platform") == "windows" else "os-release"
        software.append(("os", name, None, os_info.get("id"), os_info.get("version_id"), None, "[]", 100, method,
                         json.dumps(extra), None))  # fmt: skip
    for p in payload["packages"]:
        software.append(("application", p["name"], p.get("vendor") or None, p["name"], p.get("version") or None, None,
                         "[]", None, p.get("manager", "agent"),
                         json.dumps({"arch": p["arch"]}) if p.get("arch") else None, None))  # fmt: skip
    when = payload["collected_at"]
    return (ips, list(host["macs"]), list(host["hostnames"]), when, False, evidence, services, software)


@dataclass
class Imported:
    path: Path
    scan_id: int
    asset_id: int
    new_asset: bool
    packages: int
    key_name: str


def check_not_replayed(conn: Database, bundle: VerifiedBundle) -> None:
    """Refuse a bundle imported before (same id or same signed payload), or older than the newest one
    already imported from the same agent and machine (an old bundle sent again to roll the record back)."""
    row = conn.execute(
        "SELECT imported_at, file FROM bundles WHERE bundle_id = ? OR digest = ?",
        [bundle.payload["bundle_id"], bundle.digest],
    ).fetchone()
    if row:
        raise BundleRejected(
            f"{bundle.path}: replayed: this bundle was imported on {row[0][:19]} (from {str(row[1])[:100]})",
            "nothing to do; it is already in the inventory",
        )
    machine_id = bundle.payload["host"]["machine_id"]
    if machine_id is None:  # without a machine-id, "the same machine" cannot be told: ids and digests only
        return
    newest = conn.execute(
        "SELECT max(collected_at) FROM bundles WHERE key_id = ? AND machine_id = ?", [bundle.key_id, machine_id]
    ).fetchone()[0]
    if newest and bundle.payload["collected_at"] <= newest:
        raise BundleRejected(f"{bundle.path}: replayed or stale: collected {bundle.payload['collected_at']}, but "
                             f"a newer bundle from this machine ({newest}) is already imported",
                             "collect a fresh bundle on the host")  # fmt: skip


def import_bundle(store: Store, bundle: VerifiedBundle, max_bytes: int, follow_links: bool) -> Imported:
    """Write one verified bundle through the discovery-source runner (`scanner.sources.bundle`): its run row,
    the observation and the replay record, in one transaction."""
    from scanner.scan import run_source
    from scanner.sources.bundle import BundleSource

    source = BundleSource()
    options = {"signed_by": bundle.key_name, "key_id": bundle.key_id, "encrypted": bundle.sealed,
               "digest": bundle.digest, "max_bytes": max_bytes, "follow_links": follow_links}  # fmt: skip
    request = Request([], options, input_file=str(bundle.path))  # its file is its target: a bundle covers no network
    summary = run_source(store, source, request, _QUIET)  # a refusal under the write lock raises, writing nothing
    assert source.asset_id is not None
    return Imported(bundle.path, summary.scan_id, source.asset_id, summary.new_assets > 0,
                    len(bundle.payload["packages"]), bundle.key_name)  # fmt: skip


class _Quiet:
    """No progress lines for one bundle: `import_files` says what happened to each."""

    def start(self, total_hosts: int, total_chunks: int, already_done: int) -> None: ...

    def update(self, hosts_done: int) -> None: ...

    def chunk_done(self, chunks_done: int, total_chunks: int, hosts_done: int, hosts_up: int) -> None: ...

    def batch_saved(self, hosts_done: int, hosts_up: int) -> None: ...

    def finish(self) -> None: ...


_QUIET = _Quiet()


@dataclass
class ImportOutcome:
    imported: list[Imported]
    refused: list[tuple[Path, str]]  # each refused file and why


def import_files(store: Store, paths: Sequence[Path], max_bytes: int, tell: Callable[[str, int], None],
                 follow_links: bool = True) -> ImportOutcome:  # fmt: skip
    """Verify every bundle, then import those that passed, oldest first. A job's inbox reads with
    `follow_links` false: a link swapped in for a checked entry is refused, never read as root.

    Nothing is written until all are checked. Only one payload is in memory at a time: the first pass
    keeps each bundle's digest, and the second reads the file again and insists on the same digest (a
    file swapped in between is refused, not trusted on the strength of the first read).
    """
    trusted = trusted_keys()
    passed: list[tuple[str, str, Path]] = []  # (collected_at, digest, path)
    seen: set[str] = set()
    outcome = ImportOutcome([], [])

    def refuse(path: Path, exc: BundleRejected) -> None:
        outcome.refused.append((path, str(exc)))
        tell(f"refused {exc}", logging.WARNING)

    for path in paths:
        try:
            bundle = read_bundle(path, trusted, max_bytes, follow_links)
            if bundle.payload["bundle_id"] in seen:
                raise BundleRejected(f"{path}: replayed: the same bundle is given twice on this command line")
            check_not_replayed(store.conn, bundle)
        except BundleRejected as exc:
            refuse(path, exc)
            continue
        seen.add(bundle.payload["bundle_id"])
        passed.append((bundle.payload["collected_at"], bundle.digest, path))
    for _, digest, path in sorted(passed):  # a week of one host's bundles goes in in order
        try:
            bundle = read_bundle(path, trusted, max_bytes, follow_links)
            if bundle.digest != digest:
                raise BundleRejected(f"{path}: changed while it was being imported", "import it again")
            done = import_bundle(store, bundle, max_bytes, follow_links)
        except BundleRejected as exc:
            refuse(path, exc)
            continue
        outcome.imported.append(done)
        tell(f"imported {done.path}: signed by {done.key_name}, {done.packages} packages, asset {done.asset_id}"
             f"{' (new)' if done.new_asset else ''} (scan {done.scan_id})", logging.INFO)  # fmt: skip
    return outcome
