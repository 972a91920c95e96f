"""Issue 12, item 6: "Old and damaged files. The pre-5.20 layout is read fully; a file with nmap's own
`</host><<host` artefact or a truncated end keeps every complete host before the damage and says what it
skipped." The files and where they come from: tests/scanner/data/README.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scanner.nmap_xml import OLD_CLASS_CPES, NmapXmlReader
from tests.conftest import query, run_posture

DATA = Path(__file__).parent / "data"
OLD_LAYOUT = DATA / "nmap551-old-layout.xml"
WINDOWS_2003 = DATA / "nmap551-windows-2003.xml"
THREE_HOSTS = DATA / "nmap793-3hosts.xml"  # real nmap 7.93 output: 127.97.0.1, .2, .3
NMAP_OS_DB = Path("/usr/share/nmap/nmap-os-db")


def os_rows(db: Path | str, address: str) -> list[tuple[object, ...]]:
    return query(
        db,
        "SELECT s.name, s.vendor, s.product, s.version, s.cpe FROM software s JOIN asset_identifiers i "
        "ON i.asset_id = s.asset_id WHERE s.kind = 'os' AND i.value = ? ORDER BY s.id",
        address,
    )


def test_old_layout_classes_are_kept(store_db: Path | str, tmp_path: Path) -> None:
    """Item 6, "in nmap XML before 5.20 `<osclass>` sits beside `<osmatch>` and is dropped": a real nmap 5.51 file
    keeps every class, beside the match of its accuracy or as a guess of its own, best first."""
    db = store_db
    result = run_posture("import", "nmap", str(OLD_LAYOUT), db=db)
    assert result.returncode == 0, result.stderr
    # 127.0.0.1 has nine classes and no <osmatch> at all: before, it had no OS guess.
    local = os_rows(db, "127.0.0.1")
    assert local[:2] == [("Netgear embedded", "Netgear", "embedded", None, None),
                         ("Linux Linux 2.6.X", "Linux", "Linux", "2.6.X", None)]  # fmt: skip
    assert len(local) == 9
    # scanme.nmap.org: the 92% class goes with the 92% match, as nmap 5.20+ would have nested it.
    scanme = os_rows(db, "74.207.244.221")
    assert scanme[0] == ("Netgear DG834G WAP", "Netgear", "embedded", None, None)
    assert ("Linux 2.6.32", "Linux", "Linux", "2.6.X", None) in scanme
    accuracies = [r[0] for r in query(db, "SELECT accuracy FROM software WHERE kind = 'os' ORDER BY id")]
    assert accuracies[:9] == sorted(accuracies[:9], reverse=True)


def test_old_layout_windows_2003_is_end_of_life(store_db: Path | str, tmp_path: Path) -> None:
    """Item 6, "so 'Windows Server 2003 SP2' (92%), 'Windows XP SP2' ... are all unidentified": the old-layout class
    gets the CPE nmap writes now, and the catalogue's Windows Server 2003 SP2 end of life reaches the asset."""
    db = store_db
    assert run_posture("import", "nmap", str(WINDOWS_2003), db=db).returncode == 0
    windows = ("Microsoft", "Windows")
    assert os_rows(db, "127.97.0.3") == [
        ("Microsoft Windows Server 2003 SP2", *windows, "2003", "cpe:/o:microsoft:windows_server_2003::sp2"),
        ("Microsoft Windows XP SP2", *windows, "XP", "cpe:/o:microsoft:windows_xp::sp2"),
    ]
    assert run_posture("evaluate", db=db).returncode == 0
    result = run_posture("assets", "--format", "json", db=db)
    assert result.returncode == 0, result.stderr
    (asset,) = json.loads(result.stdout)
    os = asset["os"]
    assert (os["product"], os["cycle"], os["lifecycle_state"], os["eol_date"]) == (
        "windows-server", "2003-sp2", "end-of-life", "2015-07-14")  # fmt: skip


def test_old_class_cpes_are_nmaps_own() -> None:
    """The mapping for old-layout classes is nmap's: each (vendor, family, generation) row is a `Class` line
    of nmap-os-db whose fingerprint carries that CPE (or one under it, for a generation like 12.X)."""
    pairs: set[tuple[str, str, str, str]] = set()
    for block in NMAP_OS_DB.read_text(encoding="latin-1").split("\nFingerprint ")[1:]:
        lines = block.splitlines()
        cpes = [line.split()[1] for line in lines if line.startswith("CPE ")]
        for line in lines:
            if line.startswith("Class "):
                vendor, family, gen = (p.strip().lower() for p in line[6:].split("|")[:3])
                pairs.update((vendor, family, gen, cpe) for cpe in cpes)
    for (vendor, family, gen), cpe in OLD_CLASS_CPES.items():
        assert any(
            (v, f, g) == (vendor, family, gen) and (c == cpe or c.startswith((f"{cpe}:", f"{cpe}.")))
            for v, f, g, c in pairs
        ), (vendor, family, gen, cpe)


def damaged(tmp_path: Path, how: str) -> Path:
    """A copy of the real three-host file, damaged after its second host the way nmap damages its own."""
    text = THREE_HOSTS.read_text()
    third = text.index("<host ", text.index('addr="127.97.0.2"'))
    if how == "artefact":  # nmap's own stray `<`: `</host><<host`
        bad = text[:third].rstrip("\n") + "<" + text[third:]
        assert "</host><<host " in bad
    else:  # the scan killed while writing the third host
        bad = text[: third + 150]
    path = tmp_path / f"{how}.xml"
    path.write_text(bad)
    return path


@pytest.mark.parametrize("how", ["artefact", "truncated"])
def test_damaged_file_keeps_complete_hosts(store_db: Path | str, tmp_path: Path, how: str) -> None:
    """Item 6, "a file with nmap's own `</host><<host` artefact or a truncated end keeps every complete host before
    the damage and says what it skipped": two hosts kept, a warning naming the line, exit 0, and a scan
    row that ends complete with the damage recorded (never `running`)."""
    db = store_db
    path = damaged(tmp_path, how)
    result = run_posture("import", "nmap", str(path), db=db)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("posture: warning:")]
    assert len(warnings) == 1, result.stderr
    assert f"{path.name} is damaged at line" in warnings[0]
    assert "kept the 2 complete hosts before it; the rest of the file was not read" in warnings[0]
    assert "2 hosts up" in result.stdout
    kept = {r[0] for r in query(db, "SELECT value FROM asset_identifiers WHERE kind = 'ipv4'")}
    assert kept == {"127.97.0.1", "127.97.0.2"}
    ((status, error, hosts),) = query(db, "SELECT status, error, hosts_up FROM scans")
    assert (status, hosts) == ("complete", 2) and "is damaged at line" in str(error)


def test_damaged_reader_keeps_hosts_in_process(tmp_path: Path) -> None:
    """The reader itself (no CLI): the hosts come out, `run.damage` says where it stopped."""
    with damaged(tmp_path, "artefact").open("rb") as fh:
        reader = NmapXmlReader(fh, name="artefact.xml")
        hosts = [h.addresses[0][1] for h in reader]
    assert hosts == ["127.97.0.1", "127.97.0.2"]
    assert reader.run.damage is not None and "line 24" in reader.run.damage
    assert reader.run.warnings == (reader.run.damage,)


def test_damage_before_any_complete_host_changes_nothing(store_db: Path | str, tmp_path: Path) -> None:
    """No complete host before the damage: nothing to keep, so the file is refused as before (exit 2)."""
    db = store_db
    assert run_posture("import", "nmap", str(WINDOWS_2003), db=db).returncode == 0
    text = THREE_HOSTS.read_text()
    cut = tmp_path / "cut.xml"
    cut.write_text(text[: text.index("</host>")])
    before = query(db, "SELECT * FROM assets ORDER BY id")
    result = run_posture("import", "nmap", str(cut), db=db)
    assert result.returncode == 2, result.stderr
    assert "not well-formed" in result.stderr and "Traceback" not in result.stderr
    assert query(db, "SELECT * FROM assets ORDER BY id") == before
    assert query(db, "SELECT status FROM scans ORDER BY id DESC LIMIT 1") == [("failed",)]
