"""`posture share summary` (issue 17 item 1): an anonymised legacy-technology summary a council can pool.

Councils are built by tests/reports/councils.py the way posture builds an inventory (nmap XML, signed
agent bundles, the asset register with hostile owners and sites, `posture evaluate`); each summary is
searched, byte for byte, for every address, hostname, MAC, owner, site, serial, device label and stated
version its inventory holds, checked against the shipped JSON Schema and against counts taken from the
database directly.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reports.share import ROW_KEYS, SIGNED_PREFIX, _row, financial_year, rounded, to_csv
from rules.catalogue import load_catalogue
from scanner.bundles import SIGNED_FORMAT, key_id, sign_detached, verify_detached
from tests.conftest import execute, new_store, query, run_posture
from tests.reports.councils import Council, build_council, council_env

SCHEMA_PATH = Path(__file__).parents[2] / "reports" / "schemas" / "share-summary.schema.json"
TOP_KEYS = ["schema", "organisation", "period", "evaluated_on", "posture_version", "catalogue_date", "policy",
            "rules", "counts", "rows"]  # fmt: skip
COUNCILS = 4  # mixes 0-3 of councils.MIXES: 12 and 25 Windows 7 PCs, 11 XP PCs, counts below 10


@pytest.fixture(scope="module")
def councils(request: pytest.FixtureRequest, store_kind: str,
             tmp_path_factory: pytest.TempPathFactory) -> list[Council]:  # fmt: skip
    root = tmp_path_factory.mktemp("councils")
    return [build_council(root, n, lambda folder: new_store(request, store_kind, folder)) for n in range(COUNCILS)]


def summarise(council: Council, out: Path, *args: str) -> Any:
    return run_posture("--config", str(council.config), "share", "summary", "--out", str(out), *args,
                       db=council.db, env=council.env)  # fmt: skip


def written(council: Council, out: Path, *args: str) -> bytes:
    done = summarise(council, out, *args)
    assert done.returncode == 0, done.stderr
    return out.read_bytes()


def refused(done: Any, *words: str) -> None:
    """One line on stderr naming the problem, exit 2, no traceback."""
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("posture: ") and "Traceback" not in done.stderr, done.stderr
    for word in words:
        assert word in lines[0], lines[0]


# ---- the rounding, and the financial year -----------------------------------------------------------


@given(st.integers(min_value=1, max_value=10**7))
def test_rounding_carries_the_range_the_true_count_lies_in(count: int) -> None:
    shown, least, most = rounded(count)
    assert least <= count <= most
    if count < 10:
        assert (shown, least, most) == ("<10", 1, 9)
        return
    value = int(shown)
    assert value % 5 == 0 and abs(value - count) <= 2 and value >= 10
    assert all(rounded(n)[0] == shown for n in range(least, most + 1))  # every count in the range shows so
    assert rounded(least - 1)[0] != shown and rounded(most + 1)[0] != shown  # and none outside it


def test_rounding_at_the_edges() -> None:
    assert [rounded(n) for n in (1, 9, 10, 12, 13, 17, 18)] == [
        ("<10", 1, 9), ("<10", 1, 9), ("10", 10, 12), ("10", 10, 12), ("15", 13, 17), ("15", 13, 17),
        ("20", 18, 22)]  # fmt: skip
    with pytest.raises(ValueError, match="at least one"):
        rounded(0)


def test_the_uk_financial_year_runs_april_to_march() -> None:
    assert [financial_year(d) for d in ("2014-04-08", "2014-03-31", "2020-01-14", "2019-03", "2000-04-01", None)] \
        == ["2014/15", "2013/14", "2019/20", "2018/19", "2000/01", None]  # fmt: skip


# ---- what is in a summary, and what never is ------------------------------------------------------------


def test_no_summary_holds_anything_that_identifies_its_council(councils: list[Council], tmp_path: Path) -> None:
    for council in councils:
        out = tmp_path / council.folder.name
        out.mkdir()
        files = [written(council, out / "summary.json", "--sign"), (out / "summary.json.sig").read_bytes(),
                 written(council, out / "summary.csv"),
                 (out / "summary.csv.datapackage.json").read_bytes()]  # fmt: skip
        printed = run_posture("--config", str(council.config), "share", "summary", "--out", "-", db=council.db)
        assert printed.returncode == 0 and printed.stdout.encode() == files[0], printed.stderr
        assert len(council.identifying) > 100
        for data in files:
            lowered = data.lower()
            for said in council.identifying:
                forms = {said.encode(), json.dumps(said, ensure_ascii=False)[1:-1].encode(),
                         json.dumps(said)[1:-1].encode()}  # fmt: skip
                assert not any(f.lower() in lowered for f in forms), (council.name, said)
        # The inventory does hold them: the same search finds them in its own asset export.
        export = run_posture("export", "assets", "--format", "json", db=council.db).stdout.encode().lower()
        assert len([s for s in council.identifying if s.lower().encode() in export]) > len(council.identifying) // 2
        names = {r[0] for r in query(council.db, "SELECT value FROM asset_identifiers WHERE kind = 'hostname'")}
        hostile = query(council.db, "SELECT count(*) FROM assets WHERE owner LIKE '%<script>%' OR owner LIKE '=%' "
                        "OR owner LIKE '+%' OR owner LIKE '@%'")[0][0]  # fmt: skip
        assert names & council.identifying and hostile


def test_only_products_and_cycles_the_shipped_catalogue_names(councils: list[Council], tmp_path: Path) -> None:
    catalogue = load_catalogue()
    for council in councils:
        summary = json.loads(written(council, tmp_path / "s.json"))
        assert summary["rows"]
        for row in summary["rows"]:
            product = catalogue.products[row["product"]]
            assert row["label"] == product.title
            for name in (row["cycle"] or "").split(" / "):
                slug, _, cycle = name.rpartition("/")
                assert not name or cycle in {c.name for c in catalogue.products[slug or row["product"]].cycles}
        # The inventory identifies products the catalogue does not name (OpenSSH, vsftpd): never shared.
        stored = {r[0] for r in query(council.db, "SELECT product FROM identity_items")}
        assert stored - set(catalogue.products) and not stored - set(catalogue.products) & {
            r["product"] for r in summary["rows"]}  # fmt: skip


def test_a_device_stated_cycle_or_an_unlisted_product_is_never_a_row() -> None:
    """SonicWall's table is keyed by model: a TZ 670 keeps its own name as the cycle ("tz-670", not a row
    of the table), so the row names the product and no cycle or family; a product of posture's own
    fingerprints (not in the catalogue) gives no row at all."""
    catalogue = load_catalogue()
    item = {"kind": "hardware", "product": "sonicwall-tz", "cycles": ["tz-670"], "lifecycle_state": "unknown",
            "label": "SonicWall TZ (TZ 670)", "model": "TZ 670"}  # fmt: skip
    row = _row(item, "hardware", "network", catalogue)
    assert row is not None and row[1] == "sonicwall-tz" and row[3] is None and row[9] is None
    listed = _row({**item, "cycles": ["tz-210"], "lifecycle_state": "end-of-life", "eol_date": "2017-05-30"},
                  "hardware", "network", catalogue)  # fmt: skip
    assert listed is not None and listed[3] == "tz-210" and listed[9] and listed[6] == "2017/18"
    assert _row({**item, "product": "vsftpd"}, "hardware", "network", catalogue) is None
    assert _row({**item, "kind": "os"}, "hardware", "network", catalogue) is None  # the role decides the kind
    assert _row({**item, "cycles": ["tz-210"]}, "hardware", "<b>x</b>", catalogue)[8] == "unknown"  # type: ignore[index]


def test_each_summary_validates_against_the_shipped_schema(councils: list[Council], tmp_path: Path) -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    for council in councils:
        data = written(council, tmp_path / "s.json", "--period", "2026-Q4")
        summary = json.loads(data)
        validator.validate(summary)
        assert list(summary) == TOP_KEYS and all(list(r) == list(ROW_KEYS) for r in summary["rows"])
        assert data == (json.dumps(summary, indent=1, ensure_ascii=False) + "\n").encode()
        assert summary["period"] == "2026-Q4" and summary["counts"] == {"rounding": 5, "small_below": 10}
        assert summary["organisation"] == (council.name if council.shares_name else None)
        keys = [(r["kind"], r["product"], r["cycle"] or "", r["category"], r["hardware_family"] or "")
                for r in summary["rows"]]  # fmt: skip
        assert keys == sorted(keys)
        assert "protect.eol-os" in summary["rules"] and summary["rules"] == sorted(summary["rules"])
        evaluated = query(council.db, "SELECT day, catalogue_date FROM evaluations ORDER BY id DESC LIMIT 1")[0]
        assert (summary["evaluated_on"], summary["catalogue_date"]) == evaluated
    bad = {**summary, "rows": [{**summary["rows"][0], "count": "7"}]}
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(bad)


def _true_count(db: Path | str, row: dict[str, Any]) -> int:
    """The assets of a row, counted from the stored identities directly (SQL, not posture's code). The
    release list is matched as the JSON text both stores hold, `["7-sp1"]`."""
    role = "os" if row["kind"] in ("os", "firmware") else row["kind"]
    found = query(db, """
        SELECT count(DISTINCT i.asset_id) FROM identities i
        JOIN identity_items t ON t.id = i.item_id JOIN identified_assets a ON a.asset_id = i.asset_id
        WHERE i.role = ? AND t.kind = ? AND t.product = ? AND t.cycles = ? AND a.category = ?
          AND t.lifecycle_state = ? AND coalesce(t.eol_date, '') = ?""", role, row["kind"], row["product"],
                  json.dumps([row["cycle"]]), row["category"], row["lifecycle_state"],
                  row["eol_date"] or "")  # fmt: skip
    return int(found[0][0])


def test_counts_are_rounded_with_their_ranges(councils: list[Council], tmp_path: Path) -> None:
    seen = set()
    for council in councils:
        summary = json.loads(written(council, tmp_path / "s.json"))
        for row in summary["rows"]:
            if row["cycle"] and "/" not in row["cycle"] and row["kind"] != "hardware":
                true = _true_count(council.db, row)
                assert true and (row["count"], row["count_min"], row["count_max"]) == rounded(true), row
                seen.add(row["count"])
        windows = {(r["cycle"], r["category"]): r for r in summary["rows"] if r["product"] == "windows"}
        pcs = {0: ("7-sp1", "10", 10, 12), 2: ("5-sp3", "10", 10, 12), 3: ("7-sp1", "25", 23, 27)}
        n = int(council.folder.name.rsplit("-", 1)[1])
        if n in pcs:  # councils.MIXES: 12 Windows 7 PCs, 11 XP PCs, 25 Windows 7 PCs
            cycle, shown, least, most = pcs[n]
            row = windows[(cycle, "end-user")]
            assert (row["count"], row["count_min"], row["count_max"]) == (shown, least, most)
            assert row["eol_financial_year"] == financial_year(row["eol_date"])
    assert {"<10", "10", "25"} <= seen


def test_csv_has_the_same_rows_and_the_descriptor_the_file_fields(councils: list[Council], tmp_path: Path) -> None:
    council = councils[3]
    summary = json.loads(written(council, tmp_path / "s.json"))
    data = written(council, tmp_path / "rows.txt", "--format", "csv")
    lines = list(csv.reader(io.StringIO(data.decode())))
    assert lines[0] == list(ROW_KEYS)
    assert lines[1:] == [["" if r[k] is None else str(r[k]) for k in ROW_KEYS] for r in summary["rows"]]
    descriptor = json.loads((tmp_path / "rows.txt.datapackage.json").read_text(encoding="utf-8"))
    [resource] = descriptor["resources"]
    assert resource["path"] == "rows.txt" and [f["name"] for f in resource["schema"]["fields"]] == list(ROW_KEYS)
    assert descriptor["posture"] == {k: v for k, v in summary.items() if k != "rows"}
    assert descriptor["profile"] == "tabular-data-package"


def test_csv_cells_are_formula_neutralised() -> None:
    """posture's CSV writer (scanner.model.write_csv): a cell starting with = + - @ reads as text."""
    row = dict.fromkeys(ROW_KEYS, None) | {"label": "=HYPERLINK(1)", "product": "+x", "count": "<10"}
    text = to_csv({"rows": [row]}).decode()
    assert "'=HYPERLINK(1)" in text and "'+x" in text and ",<10," in text


# ---- the signature ------------------------------------------------------------------------------------


def test_the_signature_verifies_and_fails_after_one_byte_changes(councils: list[Council], tmp_path: Path) -> None:
    council = councils[1]
    data = written(council, tmp_path / "s.json", "--sign")
    sig = json.loads((tmp_path / "s.json.sig").read_text(encoding="utf-8"))
    assert list(sig) == ["schema", "key_id", "public", "signed_sha256", "signature"]
    assert sig["schema"] == "posture.share-signature/1" and sig["signed_sha256"] == hashlib.sha256(data).hexdigest()
    public, signature = base64.b64decode(sig["public"]), base64.b64decode(sig["signature"])
    assert sig["key_id"] == key_id(public)
    own = (Path(council.env["XDG_CONFIG_HOME"]) / "posture" / "keys" / "signing.pub").read_text(encoding="utf-8")
    assert sig["public"] in own  # the council's own machine key
    assert verify_detached(public, signature, SIGNED_PREFIX + data)
    assert not verify_detached(public, signature, data)  # the domain prefix is part of what was signed
    for at in (0, len(data) // 2, len(data) - 1):
        changed = bytearray(data)
        changed[at] ^= 0x01
        assert not verify_detached(public, signature, SIGNED_PREFIX + bytes(changed))
    bad = bytearray(signature)
    bad[10] ^= 0x80
    assert not verify_detached(public, bytes(bad), SIGNED_PREFIX + data)
    assert not verify_detached(public[:31], signature, SIGNED_PREFIX + data)
    other = json.loads((tmp_path / "s.json.sig").read_text(encoding="utf-8"))
    assert other == sig


def test_a_detached_signature_never_covers_a_bundle(tmp_path: Path) -> None:
    assert run_posture("keys", "generate").returncode == 0
    bundle_message = SIGNED_FORMAT.encode() + b"\0" + b"0123456789abcdef\0payload"
    with pytest.raises(ValueError, match="bundle"):
        sign_detached(bundle_message)
    kid, public, signature = sign_detached(SIGNED_PREFIX + b"{}\n")
    assert verify_detached(base64.b64decode(public), base64.b64decode(signature), SIGNED_PREFIX + b"{}\n")
    assert kid == key_id(base64.b64decode(public))


def test_signing_without_a_key_is_refused_and_writes_nothing(councils: list[Council], tmp_path: Path) -> None:
    council = councils[0]
    keyless = council_env(tmp_path / "fresh-machine")
    out = tmp_path / "s.json"
    done = run_posture("share", "summary", "--out", str(out), "--sign", db=council.db, env=keyless)
    refused(done, "no signing key", "posture keys generate")
    assert not out.exists() and not (tmp_path / "s.json.sig").exists()


# ---- bad input --------------------------------------------------------------------------------------


@pytest.fixture
def unevaluated(store_db: Path | str, tmp_path: Path) -> Path | str:
    db = store_db
    from tests.rules.estate import RDP, WINDOWS_2008, Host, write_estate

    xml = write_estate(tmp_path / "scan.xml", [Host("10.9.0.1", "02:00:00:00:09:01", [RDP], WINDOWS_2008)])
    assert run_posture("import", "nmap", str(xml), db=db).returncode == 0
    return db


def test_no_evaluation_yet_is_refused(unevaluated: Path | str, tmp_path: Path) -> None:
    done = run_posture("share", "summary", "--out", str(tmp_path / "s.json"), db=unevaluated)
    refused(done, "no evaluation yet", "posture evaluate")
    assert not (tmp_path / "s.json").exists()
    assert run_posture("evaluate", db=unevaluated).returncode == 0
    assert run_posture("share", "summary", "--out", str(tmp_path / "s.json"), db=unevaluated).returncode == 0
    # An evaluation that did not record its rules (an older posture): evaluate again, it says.
    for evaluation, summary in query(unevaluated, "SELECT id, summary FROM evaluations"):
        older = {k: v for k, v in json.loads(summary).items() if k != "rule_ids"}
        execute(unevaluated, "UPDATE evaluations SET summary = ? WHERE id = ?", json.dumps(older), evaluation)
    refused(run_posture("share", "summary", "--out", "-", db=unevaluated), "did not record", "posture evaluate")


@pytest.mark.parametrize("period", ["2026-13", "2026-Q5", "26-12", "2026-12-01", "2026-00", "", "2026-12\n",
                                    "\uff12\uff10\uff12\uff16-12"])  # fullwidth digits: not a year
def test_a_bad_period_is_refused(councils: list[Council], tmp_path: Path, period: str) -> None:
    refused(summarise(councils[0], tmp_path / "s.json", "--period", period), "--period")
    assert not (tmp_path / "s.json").exists()


def test_bad_destinations_are_refused_and_nothing_is_written(councils: list[Council], tmp_path: Path) -> None:
    council = councils[0]
    refused(summarise(council, tmp_path / "missing" / "s.json"), "no such folder")
    assert not (tmp_path / "missing").exists()
    target = tmp_path / "precious.txt"
    target.write_text("keep me", encoding="utf-8")
    link = tmp_path / "s.json"
    link.symlink_to(target)
    refused(summarise(council, link), "symbolic link")
    assert link.is_symlink() and target.read_text(encoding="utf-8") == "keep me"
    sig_link = tmp_path / "t.json.sig"
    sig_link.symlink_to(target)
    refused(summarise(council, tmp_path / "t.json", "--sign"), "symbolic link")
    assert not (tmp_path / "t.json").exists() and target.read_text(encoding="utf-8") == "keep me"
    refused(summarise(council, tmp_path), "is a folder")
    refused(summarise(council, tmp_path / "u.csv", "--sign"), "--sign")
    done = run_posture("share", "summary", "--out", "-", "--format", "csv", db=council.db, env=council.env)
    refused(done, "--out -")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt", "s.json", "t.json.sig"]


def test_the_share_config_table(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    for text, ok in (('[share]\norganisation = "Example Borough Council"\n', True), ("[share]\n", True),
                     ('[share]\norganisation = ""\n', False), ("[share]\norganisation = 3\n", False),
                     ('[share]\nname = "x"\n', False), ('[share]\norganisation = "' + "x" * 121 + '"\n', False)):
        config.write_text(text, encoding="utf-8")
        done = run_posture("--config", str(config), "config", "check")
        if ok:
            assert done.returncode == 0, (text, done.stderr)
        else:
            refused(done, "[share]")


def test_the_help_has_examples() -> None:
    done = run_posture("share", "summary", "--help")
    assert done.returncode == 0 and "Examples:" in done.stdout
    assert all(len(line) <= 80 for line in done.stdout.splitlines())



# ---- hardware: a real snmpsim serving a recorded Catalyst (the lab: run under the flock) ----------------


@pytest.mark.lab
def test_a_catalogued_chassis_is_a_hardware_row_with_its_family(store_db: Path | str, tmp_path: Path) -> None:
    """The C3560 recording answering as a WS-C3560G-48PS-S (tests/rules/test_hardware.py): the row names
    the catalogue's product, row and family ("Catalyst 3560G") and its last date of support, never the
    model, serial, sysName, sysDescr or address the switch states. On 127.104.0.x (this test's own range)."""
    from scanner.lab import SnmpSimLab
    from tests.rules.test_hardware import _derived_recording

    db = store_db
    with SnmpSimLab((str(_derived_recording(tmp_path)),), base="127.104.0.", first=2) as lab:
        [address] = lab.devices
        scanned = run_posture("snmp", address, "--snmp-timeout", "5", db=db)
        assert scanned.returncode == 0, scanned.stderr
    assert run_posture("evaluate", db=db).returncode == 0
    data = run_posture("share", "summary", "--out", "-", db=db).stdout.encode()
    summary = json.loads(data)
    [box] = [r for r in summary["rows"] if r["kind"] == "hardware"]
    assert (box["product"], box["cycle"], box["hardware_family"], box["eol_date"], box["eol_financial_year"]) == (
        "cisco-hardware-eol", "catalyst-3560g-3750g", "Catalyst 3560G", "2018-01-31", "2017/18")  # fmt: skip
    assert (box["category"], box["count"], box["lifecycle_state"]) == ("network", "<10", "end-of-life")
    assert [r["product"] for r in summary["rows"] if r["kind"] != "hardware"] == ["cisco-ios"]
    stated = {address, *(r[0] for r in query(db, "SELECT value FROM asset_identifiers")),
              *(r[0] for r in query(db, "SELECT name FROM assets WHERE name IS NOT NULL"))}
    for extra, version in query(db, "SELECT extra, version FROM software"):
        facts = json.loads(extra) if extra else {}
        stated |= {str(facts[k]) for k in ("model", "serial", "descr") if isinstance(facts, dict) and facts.get(k)}
        stated |= {version} if version and len(version) >= 5 else set()
    assert "WS-C3560G-48PS-S" in stated and len(stated) > 5
    assert not [s for s in stated if s.encode().lower() in data.lower()]
