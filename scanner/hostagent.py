"""The host agent: what a machine says about itself, gathered on the machine (`posture agent collect`).

Network scans guess an OS from packets and banners; the host knows. The agent reads the OS release
(`/etc/os-release`, the kernel), the installed packages (dpkg, rpm, apk, Python distributions; on
Windows the registry's Uninstall keys), the listening sockets (`/proc/net`) and the host's identity
(machine-id, hostnames, addresses, MACs), and returns one JSON-able payload. Every reader is local:
nothing here touches the network, and a reader that fails leaves a warning in the payload instead of
stopping the others. Programs run from an argv list, never a shell.

The Windows code path reads through a small `Registry` interface: `WinRegistry` (the `winreg` module, on
Windows) or `RegExport` (a `reg export` file, so a Windows machine that cannot run posture can still be
inventoried from its exported keys).
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from scanner import __version__
from scanner.compat import UTC
from scanner.errors import PostureError
from scanner.model import bound
from scanner.paths import read_regular_file
from scanner.proc import child_env, dies_with_parent

PAYLOAD_FORMAT = "posture-agent/1"
MAX_PACKAGES = 100_000  # far above any real host; a bound on what a hostile payload can make us store
MAX_SOCKETS = 20_000
COMMAND_TIMEOUT = 120  # seconds for one package manager listing
MAC_RE = re.compile(r"([0-9A-F]{2}:){5}[0-9A-F]{2}")

UNINSTALL_KEYS = (
    r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall",
    r"HKEY_LOCAL_MACHINE\SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall",
)
CURRENT_VERSION_KEY = r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows NT\CurrentVersion"


# ---- Linux and other Unix ---------------------------------------------------------------------------


def parse_os_release(text: str) -> dict[str, str]:
    """`KEY=value` lines, values unquoted as the os-release(5) shell-like syntax allows."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if not m:
            continue
        value = m.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[m.group(1)] = bound(re.sub(r"\\(.)", r"\1", value), 256) or ""
    return out


def _os_release(root: Path) -> dict[str, str]:
    for candidate in (root / "etc/os-release", root / "usr/lib/os-release"):
        if candidate.is_file():
            return parse_os_release(candidate.read_text(encoding="utf-8", errors="replace")[:65536])
    return {}


def _run(argv: list[str]) -> str | None:
    """A listing command's stdout, or None when the program is not installed here."""
    if shutil.which(argv[0]) is None:
        return None
    done = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=COMMAND_TIMEOUT,
                          check=False, env=child_env(LC_ALL="C"), preexec_fn=dies_with_parent())  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {done.returncode}: {done.stderr.strip()[:200]}")
    return done.stdout


def _package(manager: str, name: str, version: str, arch: str = "", vendor: str = "") -> dict[str, str]:
    entry = {"manager": manager, "name": bound(name, 256) or "", "version": bound(version, 128) or ""}
    if arch:
        entry["arch"] = bound(arch, 32) or ""
    if vendor:
        entry["vendor"] = bound(vendor, 256) or ""
    return entry


def dpkg_packages(output: str) -> list[dict[str, str]]:
    """`dpkg-query -W -f '${db:Status-Abbrev}\\t${Package}\\t${Version}\\t${Architecture}\\n'`: installed only."""
    out = []
    for line in output.splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and parts[0].startswith("ii"):
            out.append(_package("dpkg", parts[1], parts[2], parts[3]))
    return out


def rpm_packages(output: str) -> list[dict[str, str]]:
    """`rpm -qa --qf '%{NAME}\\t%{VERSION}-%{RELEASE}\\t%{ARCH}\\t%{VENDOR}\\n'`."""
    out = []
    for line in output.splitlines():
        parts = line.split("\t")
        if len(parts) == 4:
            out.append(_package("rpm", parts[0], parts[1], parts[2], "" if parts[3] == "(none)" else parts[3]))
    return out


def apk_packages(output: str) -> list[dict[str, str]]:
    """`apk info -v`: `musl-1.2.4-r2` per line; the version starts at the last dash followed by a digit
    before `-rN`."""
    out = []
    for line in output.splitlines():
        m = re.match(r"^(.+?)-(\d[^-]*-r\d+)$", line.strip())
        if m:
            out.append(_package("apk", m.group(1), m.group(2)))
    return out


def python_distributions(dirs: Iterable[Path]) -> list[dict[str, str]]:
    """Python distributions installed outside the OS packages (pip), read from their METADATA files."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for folder in dirs:
        if not folder.is_dir():
            continue
        for meta in sorted(folder.glob("*.dist-info/METADATA")):
            name = version = ""
            with meta.open(encoding="utf-8", errors="replace") as f:
                for line in f:
                    if not line.strip():
                        break  # headers end at the first blank line
                    if line.startswith("Name:"):
                        name = line[5:].strip()
                    elif line.startswith("Version:"):
                        version = line[8:].strip()
            if name and version:
                out.setdefault((name.lower(), version), _package("pip", name, version))
    return list(out.values())


def _python_dirs(root: Path) -> list[Path]:
    found: list[Path] = []
    for pattern in ("usr/lib/python3*/site-packages", "usr/local/lib/python3*/dist-packages",
                    "usr/local/lib/python3*/site-packages", "usr/lib64/python3*/site-packages"):  # fmt: skip
        found.extend(sorted(root.glob(pattern)))
    return found


def _hex_address(text: str) -> str:
    """/proc/net addresses: hex of the address in host byte order, per 32-bit word."""
    raw = bytes.fromhex(text)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, words)


def proc_net_listening(tables: dict[str, str]) -> list[dict[str, Any]]:
    """Listening TCP sockets and bound UDP sockets from /proc/net/{tcp,tcp6,udp,udp6} texts."""
    out = []
    for table, text in tables.items():
        protocol = "udp" if table.startswith("udp") else "tcp"
        for line in text.splitlines()[1:]:
            fields = line.split()
            if len(fields) < 10:
                continue
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if protocol == "tcp" and state != "0A":  # LISTEN
                continue
            if protocol == "udp" and set(remote.split(":")[0]) != {"0"}:  # a connected UDP socket is a client
                continue
            address, port = local.rsplit(":", 1)
            out.append({"protocol": protocol, "address": _hex_address(address), "port": int(port, 16),
                        "inode": inode})  # fmt: skip
            if len(out) >= MAX_SOCKETS:
                return out
    return out


def _socket_owners(inodes: set[str]) -> dict[str, str]:
    """socket inode -> the owning process's name (needs root to see other users' processes)."""
    owners: dict[str, str] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            links = [str(fd.readlink()) for fd in (proc / "fd").iterdir()]
            mine = [link[8:-1] for link in links if link.startswith("socket:[") and link[8:-1] in inodes]
            if mine:
                name = (proc / "comm").read_text(errors="replace").strip()[:64]
                owners.update((inode, name) for inode in mine if inode not in owners)
        except OSError:
            continue  # the process ended, or is not ours to read
    return owners


def listening_sockets() -> list[dict[str, Any]]:
    tables = {}
    for table in ("tcp", "tcp6", "udp", "udp6"):
        try:
            tables[table] = Path(f"/proc/net/{table}").read_text()
        except OSError:
            continue
    sockets = proc_net_listening(tables)
    owners = _socket_owners({s["inode"] for s in sockets})
    merged: dict[tuple[str, int], dict[str, Any]] = {}
    for s in sockets:  # one entry per port: the addresses it listens on, and who owns it
        entry = merged.setdefault(
            (s["protocol"], s["port"]), {"protocol": s["protocol"], "port": s["port"], "addresses": [], "process": None}
        )
        if s["address"] not in entry["addresses"]:
            entry["addresses"].append(s["address"])
        entry["process"] = entry["process"] or owners.get(s["inode"])
    return sorted(merged.values(), key=lambda e: (e["protocol"], e["port"]))


def host_identity(root: Path = Path("/")) -> dict[str, Any]:
    """machine-id, hostnames, addresses and MACs. Hostnames come from the kernel and /etc/hostname only:
    a DNS lookup (getfqdn) would send traffic, and the agent sends none."""
    identity: dict[str, Any] = {"machine_id": None, "hostnames": [], "addresses": [], "macs": []}
    for path in (root / "etc/machine-id", root / "var/lib/dbus/machine-id"):
        if path.is_file():
            value = path.read_text(errors="replace").strip()
            if re.fullmatch(r"[0-9a-f]{32}", value):
                identity["machine_id"] = value
                break
    names = [socket.gethostname()]
    if (root / "etc/hostname").is_file():
        names.append((root / "etc/hostname").read_text(errors="replace").strip())
    identity["hostnames"] = list(dict.fromkeys(bound(n, 253) for n in names if n and n != "localhost"))
    net = Path("/sys/class/net")
    if net.is_dir():
        for iface in sorted(net.iterdir()):
            try:
                mac = (iface / "address").read_text().strip().upper()
            except OSError:
                continue
            if MAC_RE.fullmatch(mac) and mac != "00:00:00:00:00:00":
                identity["macs"].append(mac)
    try:  # iproute2 before 4.13 has no -j: then the addresses are missing, the rest stays
        output = _run(["ip", "-j", "address", "show"])
        links = json.loads(output) if output else []
    except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired):
        links = []
    for link in links if isinstance(links, list) else []:
        for addr in link.get("addr_info", []):
            local = str(addr.get("local", ""))
            if addr.get("family") in ("inet", "inet6") and not local.startswith(("127.", "fe80:")) and local != "::1":
                identity["addresses"].append(["ipv4" if addr["family"] == "inet" else "ipv6", local])
    identity["macs"] = list(dict.fromkeys(identity["macs"]))
    return identity


def collect_unix(root: Path = Path("/")) -> dict[str, Any]:
    """Everything the agent reads on Linux (and other systems with /proc and these package managers)."""
    warnings: list[str] = []
    uname = platform.uname()
    os_info: dict[str, Any] = {"platform": uname.system.lower(), "kernel": uname.release, "arch": uname.machine}
    release = _os_release(root)
    for key in ("ID", "ID_LIKE", "VERSION_ID", "PRETTY_NAME", "VERSION_CODENAME"):
        if key in release:
            os_info[key.lower()] = release[key]
    packages: list[dict[str, str]] = []
    listings = (
        (["dpkg-query", "-W", "-f", "${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n"], dpkg_packages),
        (["rpm", "-qa", "--qf", "%{NAME}\t%{VERSION}-%{RELEASE}\t%{ARCH}\t%{VENDOR}\n"], rpm_packages),
        (["apk", "info", "-v"], apk_packages),
    )
    for argv, parse in listings:
        try:
            output = _run(argv)
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
            warnings.append(f"{argv[0]}: {exc}")
            continue
        if output is not None:
            packages.extend(parse(output))
    try:
        packages.extend(python_distributions(_python_dirs(root)))
    except OSError as exc:
        warnings.append(f"python distributions: {exc}")
    try:
        listening = listening_sockets()
    except (OSError, ValueError) as exc:
        listening = []
        warnings.append(f"listening sockets: {exc}")
    try:
        identity = host_identity(root)
    except (OSError, ValueError, RuntimeError, subprocess.TimeoutExpired) as exc:
        identity = {"machine_id": None, "hostnames": [socket.gethostname()], "addresses": [], "macs": []}
        warnings.append(f"host identity: {exc}")
    return _payload(identity, os_info, packages, listening, warnings)


def _payload(identity: dict[str, Any], os_info: dict[str, Any], packages: list[dict[str, str]],
             listening: list[dict[str, Any]], warnings: list[str]) -> dict[str, Any]:  # fmt: skip
    return {
        "format": PAYLOAD_FORMAT,
        "bundle_id": uuid.uuid4().hex,
        "collected_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "agent_version": __version__,
        "host": identity,
        "os": os_info,
        "packages": packages[:MAX_PACKAGES],
        "listening": listening,
        "warnings": warnings,
    }


# ---- Windows ------------------------------------------------------------------------------------------


class Registry(Protocol):
    """Just what the agent reads of a registry: subkey names, and a key's values."""

    def subkeys(self, path: str) -> list[str]: ...

    def values(self, path: str) -> dict[str, Any]: ...


class WinRegistry:
    """The live registry through `winreg` (Windows only; 64-bit view, so WOW6432Node is read as stored)."""

    def __init__(self, winreg: Any = None) -> None:
        if winreg is None:
            import winreg as _winreg  # type: ignore[import-not-found,unused-ignore]

            winreg = _winreg
        self.winreg = winreg

    def _open(self, path: str) -> Any:
        hive, _, sub = path.partition("\\")
        root = getattr(self.winreg, hive)
        return self.winreg.OpenKey(root, sub, 0, self.winreg.KEY_READ | getattr(self.winreg, "KEY_WOW64_64KEY", 0))

    def subkeys(self, path: str) -> list[str]:
        try:
            key = self._open(path)
        except OSError:
            return []
        with key:
            count = self.winreg.QueryInfoKey(key)[0]
            return [self.winreg.EnumKey(key, i) for i in range(count)]

    def values(self, path: str) -> dict[str, Any]:
        try:
            key = self._open(path)
        except OSError:
            return {}
        with key:
            count = self.winreg.QueryInfoKey(key)[1]
            return {name: data for name, data, _type in (self.winreg.EnumValue(key, i) for i in range(count))}


class RegExport:
    """A `reg export` file (REGEDIT5: UTF-16 with a BOM, or the older ANSI REGEDIT4) as a `Registry`.

    String and DWORD values are read, REG_EXPAND_SZ / REG_MULTI_SZ from their hex form; other binary
    values are skipped (nothing the agent needs is binary).

    The file comes from another machine, so it is read as hostile. A file that is not whole (UTF-16 with
    an odd number of bytes: cut short in transit) or not an export at all is refused. One bad value
    (`dword:zz`, a dword of more than 8 hex digits, `hex(2):zz`) is skipped with a warning naming its
    line, and a lone UTF-16 surrogate (which the registry itself allows in a name) is read as U+FFFD
    with a warning: an export of thousands of programs is not thrown away for one odd value. The
    warnings (`warnings`, at most MAX_WARNINGS) travel in the bundle.
    """

    MAX_BYTES = 256 * 1024 * 1024
    MAX_WARNINGS = 20

    def __init__(self, path: Path) -> None:
        data = read_regular_file(path, self.MAX_BYTES, "a registry export", "export only the keys needed")
        self.warnings: list[str] = []
        self._skipped = 0
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            if len(data) % 2:
                raise PostureError(f"{path} is cut short (UTF-16 text of an odd number of bytes)", "export it again")
            try:
                text = data.decode("utf-16")
            except UnicodeDecodeError:  # with an even length, only a lone surrogate
                text = data.decode("utf-16", "replace")
                self._warn(f"{path}: text that is not valid UTF-16 (a lone surrogate) was read as U+FFFD")
        else:
            text = data.decode("utf-8", "replace")
        del data
        if not text.lstrip("\ufeff").startswith(("Windows Registry Editor Version 5.00", "REGEDIT4")):
            raise PostureError(f"{path} is not a registry export", "make it with `reg export KEY FILE`")
        self.keys: dict[str, dict[str, Any]] = {}
        current: dict[str, Any] | None = None
        for number, line in _joined_lines(text):
            if line.startswith("[") and line.endswith("]"):
                current = self.keys.setdefault(line[1:-1].lower(), {"__path": line[1:-1]})
            elif current is not None and "=" in line:
                try:
                    name, value = _reg_value(line)
                except ValueError as exc:
                    self._warn(f"{path}:{number}: {exc}; value skipped")
                    continue
                if name is not None:
                    current[name] = value
        if self._skipped:
            self.warnings.append(f"{path}: {self._skipped} more warnings")

    def _warn(self, message: str) -> None:
        if len(self.warnings) < self.MAX_WARNINGS:
            self.warnings.append(message)
        else:
            self._skipped += 1

    def subkeys(self, path: str) -> list[str]:
        prefix = path.lower() + "\\"
        return sorted({k[len(prefix):].split("\\")[0] for k in self.keys if k.startswith(prefix)})  # fmt: skip

    def values(self, path: str) -> dict[str, Any]:
        return {k: v for k, v in self.keys.get(path.lower(), {}).items() if k != "__path"}


def _joined_lines(text: str) -> Iterator[tuple[int, str]]:
    """Lines of a .reg file with `\\` continuations joined, each with the number of its first line."""
    pending = ""
    start = 1
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        yield start, pending + line
        pending = ""
    if pending:
        yield start, pending


def _reg_string(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


_DWORD = re.compile(r"[0-9a-fA-F]{1,8}")
_HEX_TEXT = re.compile(r"[0-9a-fA-F, \t]*")


def _reg_value(line: str) -> tuple[str | None, Any]:
    """One `"name"=value` line as (name, value); (None, None) for a kind the agent does not read, and a
    ValueError (saying what is wrong) for a value that is not what its kind says."""
    m = re.match(r'^(@|"((?:[^"\\]|\\.)*)")=(.*)$', line)
    if not m:
        return None, None
    name = "" if m.group(1) == "@" else _reg_string(m.group(2))
    raw = m.group(3)
    if raw.startswith('"') and raw.endswith('"'):
        return name, _reg_string(raw[1:-1])
    if raw.startswith("dword:"):
        if not _DWORD.fullmatch(raw[6:]):
            raise ValueError(f"{bound(name, 60)!r} is not a dword (1 to 8 hex digits): {bound(raw[6:], 24)!r}")
        return name, int(raw[6:], 16)
    hexed = re.match(r"^hex\((2|7)\):(.*)$", raw)
    if hexed:
        parts = [b.strip() for b in hexed.group(2).split(",") if b.strip()]
        if not _HEX_TEXT.fullmatch(hexed.group(2)) or any(len(b) > 2 for b in parts):
            raise ValueError(f"{bound(name, 60)!r} is not hex bytes: {bound(hexed.group(2), 24)!r}")
        data = bytes.fromhex("".join(b.rjust(2, "0") for b in parts))
        text = data.decode("utf-16-le", "replace").rstrip("\x00")
        return name, text.split("\x00") if hexed.group(1) == "7" else text
    return None, None


def windows_software(reg: Registry) -> list[dict[str, str]]:
    """Programs from the Uninstall keys, as Programs and Features lists them: with a DisplayName, not a
    system component, not an update of another entry."""
    found: dict[tuple[str, str], dict[str, str]] = {}
    for base in UNINSTALL_KEYS:
        for sub in reg.subkeys(base):
            v = reg.values(f"{base}\\{sub}")
            name = str(v.get("DisplayName") or "").strip()
            if not name or v.get("SystemComponent") == 1 or v.get("ParentKeyName"):
                continue
            if str(v.get("ReleaseType", "")) in ("Update", "Hotfix", "Security Update"):
                continue
            version = str(v.get("DisplayVersion") or "").strip()
            found.setdefault((name, version), _package("registry", name, version, vendor=str(v.get("Publisher") or "")))
            if len(found) >= MAX_PACKAGES:
                break
    return sorted(found.values(), key=lambda p: (p["name"].lower(), p["version"]))


def windows_os(reg: Registry) -> dict[str, Any]:
    """The OS from the CurrentVersion key: product name, build (with the update revision) and whether it
    is a server (InstallationType), which the build number alone cannot tell."""
    v = reg.values(CURRENT_VERSION_KEY)
    build = str(v.get("CurrentBuildNumber") or v.get("CurrentBuild") or "")
    info: dict[str, Any] = {"platform": "windows", "id": "windows"}
    if v.get("ProductName"):
        info["pretty_name"] = bound(str(v["ProductName"]), 256)
    if build:
        info["build"] = build + (f".{v['UBR']}" if isinstance(v.get("UBR"), int) else "")
    if isinstance(v.get("CurrentMajorVersionNumber"), int):  # Windows 10 and later still say 6.3 in CurrentVersion
        info["version_id"] = f"{v['CurrentMajorVersionNumber']}.{v.get('CurrentMinorVersionNumber', 0)}"
    elif v.get("CurrentVersion"):
        info["version_id"] = str(v["CurrentVersion"])[:16]
    if v.get("CSDVersion"):
        info["service_pack"] = bound(str(v["CSDVersion"]), 64)
    if v.get("InstallationType"):
        info["installation_type"] = bound(str(v["InstallationType"]), 32)
    return info


def collect_windows(reg: Registry, hostname: str | None = None) -> dict[str, Any]:
    """The payload for a Windows host read through `reg` (live, or from exported keys)."""
    identity: dict[str, Any] = {"machine_id": None, "hostnames": [hostname] if hostname else [], "addresses": [],
                                "macs": []}  # fmt: skip
    guid = reg.values(r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Cryptography").get("MachineGuid")
    if guid:
        identity["machine_id"] = str(guid).lower().replace("-", "")[:32]
    return _payload(identity, windows_os(reg), windows_software(reg), [], [])


def collect(root: Path = Path("/")) -> dict[str, Any]:
    """This machine's payload."""
    if platform.system() == "Windows":
        return collect_windows(WinRegistry(), socket.gethostname())
    return collect_unix(root)
