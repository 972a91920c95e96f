"""Hostile Windows registry exports (issue 11): values that are not what their kind says, and text that is
not UTF-16. The recording tests/scanner/data/ws2008r2.reg (the format `reg export` writes) with one bad
value put in, read by the real `posture agent collect --from-reg`, signing with a real key."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.errors import PostureError
from scanner.hostagent import RegExport, collect_windows
from tests.conftest import run_posture

RECORDING = Path(__file__).parents[1] / "scanner" / "data" / "ws2008r2.reg"
KEY = "[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion]\r\n"


def with_lines(*lines: str) -> bytes:
    """The recording, as UTF-16 with its BOM, with `lines` added to the CurrentVersion key."""
    text = RECORDING.read_bytes().decode("utf-16")
    assert KEY in text
    return text.replace(KEY, KEY + "".join(line + "\r\n" for line in lines)).encode("utf-16")


@pytest.fixture
def signing_key() -> None:
    made = run_posture("keys", "generate")
    assert made.returncode == 0, made.stderr


def collect(path: Path, tmp_path: Path) -> tuple[int, str, dict[str, object]]:
    out = tmp_path / "host.bundle"
    result = run_posture("agent", "collect", "--from-reg", str(path), "--hostname", "FIN-SQL-01", "--out", str(out),
                         "--json")  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stderr, json.loads(result.stdout) if result.returncode == 0 else {}


BAD_VALUES = [
    ('"UBR"=dword:zz', "'UBR' is not a dword (1 to 8 hex digits): 'zz'"),
    ('"UBR"=dword:' + "f" * 5000, "'UBR' is not a dword (1 to 8 hex digits): 'ffff"),
    ('"SystemRoot"=hex(2):zz,00', "'SystemRoot' is not hex bytes: 'zz,00'"),
    ('"PathName"=hex(7):43,00,123,00', "'PathName' is not hex bytes"),
]


@pytest.mark.parametrize(("line", "warning"), BAD_VALUES)
def test_a_bad_value_is_skipped_with_a_warning(signing_key: None, tmp_path: Path, line: str, warning: str) -> None:
    """Low, ".reg: `dword:zz`, `hex(2):zz`, a 5,000-digit dword" (each a traceback): the value is skipped with
    a warning naming its line, and the rest of the export is read and signed. Skipping is the kinder choice:
    one odd value should not stop a machine of thousands of programs from being inventoried."""
    reg = tmp_path / "export.reg"
    reg.write_bytes(with_lines(line))
    code, stderr, payload = collect(reg, tmp_path)
    assert code == 0, stderr
    assert f"posture: agent: {reg}:4: {warning}" in stderr  # line 4: the first value of the key
    assert "value skipped" in stderr
    assert payload["os"] == {"platform": "windows", "id": "windows", "pretty_name": "Windows Server 2008 R2 Standard",
                             "build": "7601", "version_id": "6.1", "service_pack": "Service Pack 1",
                             "installation_type": "Server"}  # fmt: skip
    assert len(payload["packages"]) == 5  # type: ignore[arg-type]
    assert any(warning in w for w in payload["warnings"])  # type: ignore[attr-defined]
    assert (tmp_path / "host.bundle").is_file()


def test_odd_length_utf16_is_refused(signing_key: None, tmp_path: Path) -> None:
    """Low, ".reg: ... odd-length UTF-16" (a traceback): UTF-16 of an odd number of bytes was cut short in
    transit; it is a one-line refusal (exit 2), and no bundle is written."""
    reg = tmp_path / "cut.reg"
    reg.write_bytes(RECORDING.read_bytes() + b"\x41")
    out = tmp_path / "host.bundle"
    result = run_posture("agent", "collect", "--from-reg", str(reg), "--hostname", "X", "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"posture: error: {reg} is cut short (UTF-16 text of an odd number of bytes) " \
                                    "(export it again)"  # fmt: skip
    assert not out.exists()


def test_lone_surrogate_is_read_as_a_replacement(signing_key: None, store_db: Path | str, tmp_path: Path) -> None:
    """Low, ".reg: ... a lone surrogate" (a traceback): the registry allows lone surrogates in names, so the
    character is read as U+FFFD with a warning and the rest is kept (the bundle is valid UTF-8 JSON)."""
    text = RECORDING.read_bytes().decode("utf-16")
    marker = '"DisplayName"="Java 8 Update 202 (64-bit)"'
    assert marker in text
    head, tail = text.split(marker)
    reg = tmp_path / "surrogate.reg"
    reg.write_bytes(head.encode("utf-16") + '"DisplayName"="Java \ud800 8"'.encode("utf-16-le", "surrogatepass")
                    + tail.encode("utf-16-le"))  # fmt: skip
    code, stderr, payload = collect(reg, tmp_path)
    assert code == 0, stderr
    assert "text that is not valid UTF-16 (a lone surrogate) was read as U+FFFD" in stderr
    assert "Java \ufffd 8" in {p["name"] for p in payload["packages"]}  # type: ignore[attr-defined]
    imported = run_posture("import", "bundle", str(tmp_path / "host.bundle"), db=store_db)
    assert imported.returncode == 2 and "not trusted here" in imported.stderr  # read and verified: no crash


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """Low (as for bundles, "a FIFO ... hangs"): a FIFO given as an export is refused, not waited on."""
    fifo = tmp_path / "export.reg"
    os.mkfifo(fifo)
    result = run_posture("agent", "collect", "--from-reg", str(fifo), "--hostname", "X", "--out",
                         str(tmp_path / "b"), timeout=60)  # fmt: skip
    assert result.returncode == 2 and "not a regular file" in result.stderr, result.stderr


# ---- fuzzing: nothing but PostureError ---------------------------------------------------------------------------


def read_all(data: bytes) -> None:
    """What `agent collect --from-reg` does with a file: read it, make the payload, make it JSON."""
    with tempfile.TemporaryDirectory(prefix="posture-fuzz-") as folder:
        path = Path(folder) / "fuzz.reg"
        path.write_bytes(data)
        try:
            reg = RegExport(path)
        except PostureError:
            return
    json.dumps(collect_windows(reg, "X")).encode()


LINES = st.sampled_from(['"UBR"=dword:', '"SystemRoot"=hex(2):', '"X"=hex(7):', '"DisplayName"="', "@=", '"a\\"b"=',
                         "[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion]", "\\"])  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(LINES, st.text(max_size=40)), max_size=5))
def test_fuzz_values(lines: list[tuple[str, str]]) -> None:
    """Item 6: any text after any value kind, in the real export, is read or refused (PostureError)."""
    read_all(with_lines(*(kind + value for kind, value in lines)))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000) | st.lists(st.tuples(st.integers(0, 10**5), st.binary(max_size=6)), max_size=5))
def test_fuzz_bytes_and_mutations(change: bytes | list[tuple[int, bytes]]) -> None:
    """Item 6: arbitrary bytes (as they are, and after a REGEDIT4 header or a UTF-16 BOM, so that they are
    parsed), and the real export with bytes spliced in, are read or refused (PostureError)."""
    if isinstance(change, bytes):
        for prefix in (b"", b"REGEDIT4\r\n[HKLM\\SOFTWARE]\r\n", "\ufeffREGEDIT4\r\n".encode("utf-16-le")):
            read_all(prefix + change)
        return
    data = RECORDING.read_bytes()
    for position, spliced in change:
        at = position % (len(data) + 1)
        data = data[:at] + spliced + data[at + len(spliced) // 2 :]
    read_all(data)
