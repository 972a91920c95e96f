"""The agent's Windows code path, on recorded registry data.

No Windows machine is here, so the registry is the one part that cannot run for real: the recording
`data/ws2008r2.reg` is in the format `reg export` writes (UTF-16 with a BOM, CRLF, `\\` continuations,
hex(2) values), written by hand for these tests to match a Windows Server 2008 R2 SP1 file server. The
`winreg` path is driven by a stand-in module over the same recording (a mock, for that reason only).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from scanner.errors import PostureError
from scanner.hostagent import CURRENT_VERSION_KEY, RegExport, WinRegistry, collect_windows, windows_os, windows_software
from tests.conftest import assets_json, query, run_posture

RECORDING = Path(__file__).parent / "data" / "ws2008r2.reg"
EXPECTED_PROGRAMS = [
    ("Adobe Reader X (10.1.16)", "10.1.16", "Adobe Systems Incorporated"),
    ("Java 8 Update 202 (64-bit)", "8.0.2020.8", "Oracle Corporation"),
    ("Microsoft Office Professional Plus 2010", "14.0.7015.1000", "Microsoft Corporation"),
    ("Microsoft SQL Server 2008 R2", "10.50.6000.34", "Microsoft Corporation"),
    ("Mozilla Firefox 52.9.0 ESR (x86 en-GB)", "52.9.0", "Mozilla"),
]


def test_reg_export_is_read_as_windows_writes_it() -> None:
    reg = RegExport(RECORDING)
    values = reg.values(CURRENT_VERSION_KEY.upper())  # key paths are case-insensitive, as in Windows
    assert values["SystemRoot"] == "C:\\Windows"  # hex(2) over a continuation line, UTF-16 decoded
    assert values["RegisteredOwner"] == 'Finance "Team" <script>alert(1)</script>'
    # Programs and Features' rules: no updates (ParentKeyName), system components or nameless entries.
    assert [(p["name"], p["version"], p["vendor"]) for p in windows_software(reg)] == EXPECTED_PROGRAMS
    assert windows_os(reg) == {"platform": "windows", "id": "windows", "pretty_name": "Windows Server 2008 R2 Standard",
                               "build": "7601", "version_id": "6.1", "service_pack": "Service Pack 1",
                               "installation_type": "Server"}  # fmt: skip


def test_not_a_registry_export(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.reg"
    bogus.write_text("[HKEY_LOCAL_MACHINE\\SOFTWARE]\n", encoding="utf-8")
    with pytest.raises(PostureError, match="is not a registry export"):
        RegExport(bogus)


class FakeWinreg:
    """Stand-in for the `winreg` module (Windows only) over the recording: a mock, as it cannot run here."""

    HKEY_LOCAL_MACHINE = "HKEY_LOCAL_MACHINE"
    KEY_READ = 0x20019
    KEY_WOW64_64KEY = 0x100

    def __init__(self, reg: RegExport) -> None:
        self.reg = reg
        self.opened: list[int] = []

    def OpenKey(self, root: str, sub: str, reserved: int, access: int) -> Any:
        path = f"{root}\\{sub}"
        if path.lower() not in self.reg.keys and not self.reg.subkeys(path):
            raise FileNotFoundError(path)
        self.opened.append(access)
        return _Key(path)

    def QueryInfoKey(self, key: _Key) -> tuple[int, int, int]:
        return len(self.reg.subkeys(key.path)), len(self.reg.values(key.path)), 0

    def EnumKey(self, key: _Key, index: int) -> str:
        return self.reg.subkeys(key.path)[index]

    def EnumValue(self, key: _Key, index: int) -> tuple[str, Any, int]:
        name, data = list(self.reg.values(key.path).items())[index]
        return name, data, 4 if isinstance(data, int) else 1


class _Key(SimpleNamespace):
    def __init__(self, path: str) -> None:
        super().__init__(path=path)

    def __enter__(self) -> _Key:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def test_live_registry_path_reads_the_same() -> None:
    reg = RegExport(RECORDING)
    fake = FakeWinreg(reg)
    live = collect_windows(WinRegistry(fake), "FIN-SQL-01")
    assert [(p["name"], p["version"]) for p in live["packages"]] == [(n, v) for n, v, _ in EXPECTED_PROGRAMS]
    assert live["os"] == windows_os(reg) and live["host"]["machine_id"] == "5f1c2a349b7e4d218c6a0e3f4b5a6c7d"
    assert fake.opened and all(access & fake.KEY_WOW64_64KEY for access in fake.opened)  # 64-bit view


def test_exported_windows_host_is_identified_and_judged(store_db: Path | str, tmp_path: Path) -> None:
    assert run_posture("keys", "generate").returncode == 0
    pub = Path(os.environ["XDG_CONFIG_HOME"]) / "posture" / "keys" / "signing.pub"
    assert run_posture("keys", "trust", str(pub), "--name", "records-office").returncode == 0
    out = tmp_path / "fin-sql-01.bundle"
    made = run_posture("agent", "collect", "--from-reg", str(RECORDING), "--hostname", "FIN-SQL-01", "--out", str(out))
    assert made.returncode == 0, made.stderr
    assert "Windows Server 2008 R2 Standard; 5 packages" in made.stderr
    db = store_db
    assert run_posture("import", "bundle", str(out), db=db).returncode == 0
    assert run_posture("evaluate", "--on", "2026-11-23", db=db).returncode == 0  # identifies; the view reads it
    [asset] = assets_json(db)
    assert asset["name"] == "FIN-SQL-01"
    assert (asset["os"]["product"], asset["os"]["cycles"], asset["os"]["method"]) == (
        "windows-server", ["2008-r2-sp1"], "registry")
    found = {(s["product"], s["cycle"]) for s in asset["software"]}
    # SQL Server 2008 R2 is cycle 10.50 in the catalogue; Firefox 52 ESR predates its Firefox cycles.
    assert {("office", "2010"), ("mssqlserver", "10.50-sp3"), ("firefox", None)} <= found
    assert run_posture("evaluate", "--on", "2026-11-23", db=db).returncode == 0
    rules = {r[0] for r in query(db, "SELECT rule_id FROM findings WHERE status != 'fixed'")}
    assert {"protect.eol-os", "protect.eol-software"} <= rules
