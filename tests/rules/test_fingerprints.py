"""The fingerprint database (issue 12, build item 1): every example is a test, the linter names file:line,
hostile device strings are bounded, and a sysObjectID that is not an OID is ignored."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rules import fingerprints
from rules.catalogue import Lifecycle, default_catalogue
from rules.fingerprints import FingerprintError, load, match, match_all, required_words
from rules.identify import identify_sysdescr, lifecycle
from scanner.compat import tomllib
from tests.rules.test_identify import DAY

ROOT = Path(fingerprints.__file__).parent / "fingerprints"


def shipped_examples() -> list[Any]:
    found = []
    for path in sorted(ROOT.glob("*/*.toml")):
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        for fp in data["fingerprint"]:
            for n, example in enumerate(fp["example"]):
                found.append(pytest.param(data["field"], fp["id"], example, id=f"{fp['id']}#{n}"))
    return found


@pytest.mark.parametrize(("field", "fid", "example"), shipped_examples())
def test_every_example_gives_its_result(field: str, fid: str, example: dict[str, Any]) -> None:
    """ "at least one real example string with the result it must give. Every example is a test"."""
    assert example["source"].strip()  # where the real string came from
    own = next(fp for fp in fingerprints.database().fingerprints if fp.id == fid)
    got = next((m for m in match_all(field, example["text"], example.get("object_id"))
                if m.kind == own.kind and (m.product == own.product or m.kind != "software")), None)  # fmt: skip
    assert got is not None and got.id == fid, got
    for key in ("product", "version", "cycle", "model"):
        assert getattr(got, key) == example.get(key), key
    assert list(got.cycles) == example.get("cycles", [])


def test_the_shipped_database_is_clean_and_covers_the_recordings() -> None:
    db = load()
    ids = [fp.id for fp in db.fingerprints]
    assert len(ids) == len(set(ids)) >= 60
    assert db.vendor_of("1.3.6.1.4.1.9.1.617") == "Cisco Systems" and db.vendor_of("1.3.6.1.4.1.99999999.1") is None


def write(tmp_path: Path, text: str, name: str = "acme.toml") -> Path:
    folder = tmp_path / "sysdescr"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return tmp_path


GOOD = """field = "sysdescr"

[[fingerprint]]
id = "acme.os"
pattern = '^Acme OS (?P<version>\\d{1,2}\\.\\d{1,2})'
product = "acme-os"
vendor = "Acme"
family = "Acme OS"
version = "{version}"
category = "network"
confidence = "high"

[[fingerprint.example]]
text = "Acme OS 4.2 on a box"
source = "made up for the linter test"
product = "acme-os"
version = "4.2"
"""


def problems_of(root: Path) -> list[str]:
    with pytest.raises(FingerprintError) as caught:
        load(root)
    return caught.value.problems


def test_a_good_file_loads(tmp_path: Path) -> None:
    db = load(write(tmp_path, GOOD))
    assert db.match("sysdescr", "Acme OS 4.2") is not None and db.match("sysdescr", "acme os 4.2") is None


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        (('confidence = "high"', 'confidence = "high"\ncolour = "red"'), 4, "unknown key 'colour'"),
        (("^Acme OS (?P<version>", "^Acme OS ((?P<version>"), 4, "not a regular expression"),
        (("^Acme OS (?P<version>", "^Acme OS (?:\\w+\\s?)* (?P<version>"), 4, "repeats in a row can take"),
        (('version = "4.2"', 'version = "4.3"'), 14, "example gives version '4.2', expected '4.3'"),
        (('text = "Acme OS 4.2 on a box"', 'text = "Acne OS 4.2"'), 14, "matched by nothing"),
        (('version = "{version}"', 'version = "{release}"'), 4, "names group 'release'"),
        (('category = "network"', 'category = "toaster"'), 4, "category 'toaster'"),
        (('family = "Acme OS"\n', ""), 4, "lacks 'family'"),
        (('source = "made up for the linter test"\n', ""), 14, "example lacks 'source'"),
        (("^Acme OS (?P<version>", "^(?:Acme|Bcme)\\W(?:OS|Os)\\W(?P<version>"), 4, "no literal word"),
    ],
)
def test_the_linter_names_file_and_line(tmp_path: Path, change: tuple[str, str], line: int, message: str) -> None:
    """ "The loader lints: unknown key, bad regex, example that does not give its result — each with file:line";
    "lint for nested quantifiers"."""
    assert change[0] in GOOD
    root = write(tmp_path, GOOD.replace(*change, 1))
    found = problems_of(root)
    assert any(p.startswith(f"{root / 'sysdescr' / 'acme.toml'}:{line}: ") and message in p for p in found), found


def test_duplicate_ids_across_files_are_refused(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    root = write(tmp_path, GOOD, "zz-catchall.toml")
    assert any(":4: duplicate id 'acme.os'" in p for p in problems_of(root))


def test_catch_alls_are_read_last(tmp_path: Path) -> None:
    """ "Precedence is explicit (specific before generic; catch-alls in their own file, read last)"."""
    generic = GOOD.replace("acme.os", "any.os").replace("^Acme OS", "\\bOS").replace("acme-os", "some-os")
    generic = generic.replace("Acme OS 4.2 on a box", "Zeta OS 4.2")
    write(tmp_path, generic, "zz-catchall.toml")
    db = load(write(tmp_path, GOOD, "acme.toml"))
    found = db.match("sysdescr", "Acme OS 4.2")
    assert found is not None and found.id == "acme.os"
    assert [fp.id for fp in db.fingerprints] == ["acme.os", "any.os"]


def test_the_linter_rules() -> None:
    # Patterns go through the rule packs' ReDoS check (rules.redos, tested in tests/security): one notion.
    assert required_words(r"^Cisco NX-OS\(tm\) (?P<m>\w+)") == ["cisco", "nx", "os", "tm"]
    assert required_words(r"Cisco IOS Software,") == ["ios", "software"]  # what precedes "Cisco" is unknown
    assert required_words(r"^(?:HP )?ProCurve (?P<m>\w+)") == []


def test_lint_command(tmp_path: Path) -> None:
    """A bad file: one `posture: file:line: ...` line per problem and exit 2, never a traceback."""
    clean = subprocess.run([sys.executable, "-m", "rules.fingerprint_cli", "lint"], capture_output=True, text=True)
    assert clean.returncode == 0 and "every example gives its result" in clean.stdout, clean.stderr
    root = write(tmp_path, GOOD.replace("(?P<version>", "((?P<version>"))
    bad = subprocess.run([sys.executable, "-m", "rules.fingerprint_cli", "lint", str(root)], capture_output=True,
                         text=True)  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith(f"posture: {root / 'sysdescr' / 'acme.toml'}:4: pattern: not a regular expression")


def every_example_text() -> list[str]:
    return [str(p.values[2]["text"]) for p in shipped_examples()]


def test_hostile_strings_through_every_fingerprint() -> None:
    """ "a 100 KB hostile sysDescr ... run through every fingerprint (input bounded; no pattern may backtrack
    catastrophically)"; "NUL bytes and invalid UTF-8 in every field". It returns; no time is asserted."""
    db = load()
    words = " ".join(sorted({w for w in db.index["sysdescr"] if not w.startswith("oid:")}))
    hostile = [
        words * (100_000 // len(words)),
        "Cisco IOS Software, " + "a" * 100_000,
        "Cisco Internetwork Operating System Software " + " " * 100_000 + "IOS (tm)",
        "\x00" * 100_000,
        "APC Web/SNMP Management Card (MB:v" + "9." * 50_000,
        "".join(t + "\x00" for t in every_example_text()) * 20,
    ]
    for text in hostile:
        for fp in db.fingerprints:  # every pattern on the bounded text, not only the first that matches
            fp.pattern.search(text[: fingerprints.MAX_INPUT])
        db.match("sysdescr", text, "1.3.6.1.4.1.9.1.1")
    assert match("sysdescr", b"Arista Networks EOS version 4.20.5F running on an Arista Networks X\xc3\xff\x00") \
        is not None  # fmt: skip
    assert match("sysdescr", b"\x80" * 100_000) is None
    found = match("sysdescr", "Juniper Networks, Inc. mx960 internet router, kernel JUNOS 12.3R6.6\x00\x00")
    assert found is not None and found.version == "12.3R6.6"


@pytest.mark.parametrize("object_id", ["not-an-oid", "1.3.6.1.4.1.1588.2.1.1.1x", "", "1..3", "1.3.6.1.4.1." + "9" * 20,
                                       "1.3.6.1.4.1.1588.2.1.1.10", "1" + ".1" * 2000])  # fmt: skip
def test_a_sysobjectid_that_is_not_the_oid_is_ignored(object_id: str) -> None:
    """ "a sysObjectID that is not an OID": ignored (and a longer sibling OID is not its prefix)."""
    assert match("sysdescr", "Fibre Channel Switch.", object_id) is None
    assert match("sysdescr", "Fibre Channel Switch.", ".1.3.6.1.4.1.1588.2.1.1.1") is not None


def test_ios_xe_is_not_classic_ios() -> None:
    """ "`Cisco IOS Software, IOS-XE Software ... Version 03.06.04.E` is called classic IOS 03.06 with high
    confidence": now IOS XE, whose 3.x releases the catalogue lacks, so the lifecycle stays unknown."""
    cat = default_catalogue()
    descr = ("Cisco IOS Software, IOS-XE Software, Catalyst 4500 L3 Switch  Software (cat4500es8-UNIVERSALK9NPE-M), "
             "Version 03.06.04.E RELEASE SOFTWARE (fc2)")  # fmt: skip
    found = identify_sysdescr(descr, "1.3.6.1.4.1.9.1.1", cat)
    assert found is not None and (found.product, found.cycles, found.version) == ("cisco-ios-xe", (), "03.06.04.E")
    assert found.method == "sysDescr" and found.fingerprint == "cisco.ios-xe.3"
    assert lifecycle(found, cat, DAY).state is Lifecycle.UNKNOWN
    modern = identify_sysdescr("Cisco IOS Software [Cupertino], Catalyst L3 Switch Software (CAT9K_IOSXE), Version "
                               "17.9.4a, RELEASE SOFTWARE (fc3)", None, cat)  # fmt: skip
    assert modern is not None and (modern.product, modern.cycles) == ("cisco-ios-xe", ("17.9",))


KINDS = """field = "service"

[[fingerprint]]
id = "acme.iis"
pattern = '^Microsoft IIS httpd (?P<version>\\d{1,2}\\.\\d)'
product = "iis"
vendor = "Microsoft"
family = "Microsoft IIS"
version = "{version}"
category = "server"
confidence = "high"

[[fingerprint.example]]
text = "Microsoft IIS httpd 7.5"
source = "nmap -sV VERSION column"
product = "iis"
version = "7.5"

[[fingerprint]]
id = "acme.iis.windows"
pattern = '^Microsoft IIS httpd 7\\.5'
kind = "os"
cycles = ["windows/7", "windows-server/2008-r2"]
product = "windows"
vendor = "Microsoft"
family = "Microsoft Windows"
category = "server"
confidence = "medium"

[[fingerprint.example]]
text = "Microsoft IIS httpd 7.5"
source = "nmap -sV VERSION column"
product = "windows"
cycles = ["windows/7", "windows-server/2008-r2"]
"""


def test_one_banner_names_a_program_and_its_os(tmp_path: Path) -> None:
    """ "IIS version -> the Windows releases that shipped it": a match per kind, the OS as "one of"."""
    folder = tmp_path / "service"
    folder.mkdir()
    (folder / "acme.toml").write_text(KINDS, encoding="utf-8")
    db = load(tmp_path)
    got = {m.kind: m for m in db.match_all("service", "Microsoft IIS httpd 7.5")}
    assert got["software"].product == "iis" and got["software"].version == "7.5"
    assert got["os"].cycles == ("windows/7", "windows-server/2008-r2")
    assert db.match("service", "Microsoft IIS httpd 7.5").id == "acme.iis"  # type: ignore[union-attr]
    (folder / "acme.toml").write_text(KINDS.replace('kind = "os"', 'kind = "shoe"'), encoding="utf-8")
    assert any("kind 'shoe' is not one of" in p for p in problems_of(tmp_path))


# Families the lifecycle catalogue dates under a slug of its own, and the names fingerprints gave them before.
CATALOGUE_SLUGS = {"netapp-ontap-7-mode": "netapp-ontap-7mode", "brocade-fabric-os": "brocade-fos",
                   "sophos-sfos": "sophos-firewall", "solaris": "oracle-solaris", "aix": "ibm-aix",
                   "jetty": "eclipse-jetty", "mikrotik-routeros": "routeros"}  # fmt: skip
# Tables whose cycle names carry the mode: a stated release keeps that naming even where the table lacks it.
CYCLE_SUFFIXES = {"cisco-nx-os": ("-nxos", "-aci", "-mds"), "netapp-ontap-7mode": ("-7mode",)}


def test_catalogued_families_use_the_catalogues_slug_and_cycle_names() -> None:
    """Identification yields the catalogue's product and its exact cycle names (issue 13): a family the
    catalogue dates is never left under an own slug, where no lifecycle could ever reach it."""
    catalogue = default_catalogue()
    products = {fp.product for fp in fingerprints.database().fingerprints}
    for old, new in CATALOGUE_SLUGS.items():
        assert old not in products and new in products and catalogue.product(new) is not None, (old, new)
    for param in shipped_examples():
        _, _, example = param.values
        if example["product"] in CYCLE_SUFFIXES and "cycle" in example:
            assert example["cycle"].endswith(CYCLE_SUFFIXES[example["product"]]), example
