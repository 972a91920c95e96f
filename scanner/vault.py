"""Encrypted credentials (SNMP communities and v3 keys, LDAP bind names and passwords), named so scans can
refer to them.

Each secret is sealed with AES-256-GCM under a key that lives in its own file (mode 0600, under the XDG
config dir) or in `POSTURE_KEY`; the credential's name is bound in as associated data, so a sealed blob
cannot be moved under another name. Names, kinds, versions and v3 user names are stored in clear so they
can be listed; secrets are decrypted only in memory, when a scan needs them, and never written to the
inventory, a report, a log line or an exception.
"""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import Any

from scanner.agents.snmp import SnmpCredential
from scanner.errors import PostureError
from scanner.paths import config_dir
from scanner.proc import protect_secrets
from scanner.safefs import make_dirs, write_atomic

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
KEY_BYTES = 32


def vault_path() -> Path:
    return Path(os.environ.get("POSTURE_VAULT") or config_dir() / "credentials.json")


def key_path() -> Path:
    return config_dir() / "vault.key"


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read (a secret is never shared with the config's [files] group),
    atomically and never through a link (`scanner.safefs`): a crash leaves the old file or the new one."""
    make_dirs(path.parent)
    write_atomic(path, data, mode=0o600)


def _key(create: bool) -> bytes:
    """The vault key. Every seal and unseal comes through here, so this is where the process stops being
    dumpable (`protect_secrets`): from now on it holds the key and soon the secrets it opens."""
    protect_secrets()
    env = os.environ.get("POSTURE_KEY")
    if env:
        try:
            key = base64.b64decode(env, validate=True)
        except ValueError as exc:
            raise PostureError("POSTURE_KEY is not base64", "give 32 random bytes, base64-encoded") from exc
        if len(key) != KEY_BYTES:
            raise PostureError("POSTURE_KEY must decode to 32 bytes", "e.g. `head -c32 /dev/urandom | base64`")
        return key
    path = key_path()
    if path.exists():
        key = path.read_bytes()
        if len(key) != KEY_BYTES:
            raise PostureError(f"the vault key {path} is damaged", "restore it from backup")
        return key
    if not create:
        raise PostureError(f"no vault key at {path}", "add a credential first: `posture creds add snmp NAME`")
    key = os.urandom(KEY_BYTES)
    write_private(path, key)
    return key


def _load() -> dict[str, Any]:
    path = vault_path()
    if not path.exists():
        return {"version": 1, "credentials": {}}
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise PostureError(f"the credentials file {path} is damaged", "restore it from backup") from exc
    return data


def check_name(name: str, what: str = "credential") -> str:
    """A name for a credential or a trusted key: safe in a file, a log line and a command line."""
    if not NAME_RE.match(name):
        raise PostureError(f"invalid {what} name {name[:70]!r}", "use letters, digits, '.', '_' and '-'")
    return name


def seal(label: str, plain: bytes) -> dict[str, str]:
    """Encrypt a secret under the vault key, bound to `label` (a sealed blob only opens under its label)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    sealed = AESGCM(_key(create=True)).encrypt(nonce, plain, label.encode())
    return {"nonce": base64.b64encode(nonce).decode(), "sealed": base64.b64encode(sealed).decode()}


def unseal(label: str, entry: dict[str, Any]) -> bytes:
    """The secret `seal` made, decrypted in memory only."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        return AESGCM(_key(create=False)).decrypt(
            base64.b64decode(entry["nonce"]), base64.b64decode(entry["sealed"]), label.encode()
        )
    except (InvalidTag, ValueError, KeyError, TypeError) as exc:
        raise PostureError(
            f"{label!r} cannot be decrypted with this key", "check POSTURE_KEY or the key file"
        ) from exc


def check_v3(cred: SnmpCredential) -> None:
    """An SNMPv3 user and keys posture can use: printable ASCII, keys of 8 characters or more.

    Why ASCII: pysnmp encodes these as Latin-1, so other characters fail on every device that answers
    (and a Latin-1 key would not be the bytes a UTF-8 device configuration holds); devices' own CLIs
    take the same printable characters.
    """
    for what, value in (("user name", cred.user), ("keys", cred.auth_key), ("keys", cred.priv_key)):
        if value is not None and not all(" " <= c <= "~" for c in value):
            raise PostureError(f"SNMPv3 {what} must be printable ASCII", "use what the devices are configured with")
    if any(key is not None and len(key) < 8 for key in (cred.auth_key, cred.priv_key)):
        raise PostureError("SNMPv3 keys are at least 8 characters", "use the keys configured on the devices")


def add_snmp(cred: SnmpCredential) -> None:
    check_name(cred.name)
    check_v3(cred)
    secret = {"community": cred.community, "auth_key": cred.auth_key, "priv_key": cred.priv_key}
    sealed = seal(cred.name, json.dumps(secret).encode())
    data = _load()
    data["credentials"][cred.name] = {
        "kind": "snmp",
        "version": cred.version,
        "user": cred.user,
        "auth_protocol": cred.auth_protocol,
        "priv_protocol": cred.priv_protocol,
        "context": cred.context,
        **sealed,
    }
    write_private(vault_path(), json.dumps(data, indent=2).encode())


def list_credentials() -> list[dict[str, Any]]:
    return [
        {"name": name, **{k: v for k, v in entry.items() if k not in ("nonce", "sealed")}}
        for name, entry in sorted(_load()["credentials"].items())
    ]


def remove(name: str) -> None:
    data = _load()
    if name not in data["credentials"]:
        raise PostureError(f"no credential named {name[:70]!r}", "see `posture creds list`")
    del data["credentials"][name]
    write_private(vault_path(), json.dumps(data, indent=2).encode())


def add_ldap(name: str, bind_name: str, password: str) -> None:
    """An LDAP simple-bind credential (`posture import ad --creds NAME`). The bind name is sealed with the
    password: a DN or UPN names an account with directory read rights, which is worth keeping from the list."""
    check_name(name)
    for what, value in (("bind name", bind_name), ("password", password)):
        if not value or len(value) > 1024 or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise PostureError(f"the LDAP {what} must be 1 to 1024 characters without control characters",
                               "give the DN or user@domain, then the password")
    sealed = seal(name, json.dumps({"bind": bind_name, "password": password}).encode())
    data = _load()
    data["credentials"][name] = {"kind": "ldap", **sealed}
    write_private(vault_path(), json.dumps(data, indent=2).encode())


def ldap_credential(name: str) -> tuple[str, str]:
    """(bind name, password), decrypted in memory for one directory import."""
    entry = _load()["credentials"].get(name)
    if entry is None or entry.get("kind") != "ldap":
        raise PostureError(f"no LDAP credential named {name[:70]!r}", "add it: `posture creds add ldap NAME`")
    secret = json.loads(unseal(name, entry))
    return str(secret["bind"]), str(secret["password"])


def snmp_credential(name: str) -> SnmpCredential:
    """Decrypt one credential for use in this process."""
    entry = _load()["credentials"].get(name)
    if entry is None or entry.get("kind") != "snmp":
        raise PostureError(f"no SNMP credential named {name[:70]!r}", "see `posture creds list`")
    secret = json.loads(unseal(name, entry))
    return SnmpCredential(
        name=name,
        version=entry["version"],
        community=secret.get("community"),
        user=entry.get("user"),
        auth_protocol=entry.get("auth_protocol"),
        auth_key=secret.get("auth_key"),
        priv_protocol=entry.get("priv_protocol"),
        priv_key=secret.get("priv_key"),
        context=entry.get("context") or "",
    )
