"""`posture share aggregate` (issue 17 item 2) and the procurement plan's `--sector` line (item 3).

The councils are generated (bench/gen_share.py: real catalogue releases and dates, random mixes from a fixed
seed) and written as summary files that follow the contract's JSON Schema; signed ones are signed here with
cryptography directly, as the contract says (`SIGNED_PREFIX` + the file's bytes, Ed25519).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import random
import subprocess
from datetime import date
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bench.gen_share import council, dump, rounded, row, sign, summary, universe, write_councils
from reports.pool import FLOOR_DEVICES, FLOOR_ORGANISATIONS, Pool, Pooled, aggregate, aggregate_command, publish
from rules.catalogue import default_catalogue
from scanner.errors import PostureError
from tests.conftest import POSTURE, new_store, run_posture

ROOT = Path(__file__).resolve().parents[2]
SUMMARY_SCHEMA = json.loads((ROOT / "reports/schemas/share-summary.schema.json").read_text(encoding="utf-8"))
POOLED_SCHEMA = json.loads((ROOT / "reports/schemas/share-pooled.schema.json").read_text(encoding="utf-8"))
DAY = date(2026, 12, 7)


def validate(doc: Any, schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(doc)


@pytest.fixture(scope="module")
def councils(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """24 councils of 40 rows from 90 releases: popular releases pass the thresholds, rare ones do not."""
    return write_councils(tmp_path_factory.mktemp("councils"), 24, 40, seed=17, size=90)


def refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """A one-line refusal on stderr (exit 2, no traceback) containing every word."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and result.stderr.startswith("posture: "), result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr)


def plain_pool(paths: list[Path]) -> dict[tuple[Any, ...], list[int]]:
    """The pooling done by hand: cell -> [sum of count_min, sum of count_max, organisations]."""
    cells: dict[tuple[Any, ...], list[int]] = {}
    for path in paths:
        for r in json.loads(path.read_text(encoding="utf-8"))["rows"]:
            key = (r["kind"], r["product"], r["cycle"], r["category"], r["hardware_family"], r["eol_date"],
                   r["eol_financial_year"], r["extended_until"])  # fmt: skip
            cell = cells.setdefault(key, [0, 0, 0])
            cell[0] += r["count_min"]
            cell[1] += r["count_max"]
            cell[2] += 1
    return cells


def row_key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["kind"], r["product"], r["cycle"], r["category"], r["hardware_family"], r["eol_date"],
            r["eol_financial_year"], r["extended_until"])  # fmt: skip


# ---- the generator follows the contract ------------------------------------------------------------


def test_generated_summaries_follow_the_contract(councils: list[Path]) -> None:
    for path in councils:
        doc = json.loads(path.read_text(encoding="utf-8"))
        validate(doc, SUMMARY_SCHEMA)
        assert path.read_bytes() == dump(doc)  # the contract's serialisation
    assert [rounded(n) for n in (1, 9, 10, 12, 13, 17, 18, 102)] == [
        ("<10", 1, 9), ("<10", 1, 9), ("10", 10, 12), ("10", 10, 12), ("15", 13, 17), ("15", 13, 17),
        ("20", 18, 22), ("100", 98, 102)]  # fmt: skip


# ---- pooling, thresholds, outputs ------------------------------------------------------------------


def test_aggregate_publishes_only_rows_above_both_thresholds(councils: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "pooled"
    result = run_posture("share", "aggregate", *map(str, councils), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "pooled 24 summaries" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["opportunities.html", "pooled.csv", "pooled.json"]
    assert out.stat().st_mode & 0o777 == 0o700 and (out / "pooled.json").stat().st_mode & 0o777 == 0o600
    pooled = json.loads((out / "pooled.json").read_text(encoding="utf-8"))
    validate(pooled, POOLED_SCHEMA)
    assert pooled["organisations"] == 24 and pooled["thresholds"] == {"min_organisations": 5, "min_devices": 10}
    expected = {k: v for k, v in plain_pool(councils).items() if v[2] >= 5 and v[0] >= 10}
    hidden = {k: v for k, v in plain_pool(councils).items() if k not in expected}
    assert len(expected) >= 20 and len(hidden) >= 20  # both kinds of cell are exercised
    assert {row_key(r): [r["count_min"], r["count_max"], r["organisations"]] for r in pooled["rows"]} == expected
    for r in pooled["rows"]:
        assert r["count"] == f"{r['count_min']:,}-{r['count_max']:,}"
    with (out / "pooled.csv").open(encoding="utf-8") as f:
        header = f.readline().strip().split(",")
        assert header[:4] == ["kind", "product", "label", "release"] and len(f.readlines()) == len(pooled["rows"])


def test_the_page_is_self_contained_and_says_what_to_buy_together(councils: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "pooled"
    assert run_posture("share", "aggregate", *map(str, councils), "--out", str(out)).returncode == 0
    page = (out / "opportunities.html").read_text(encoding="utf-8")
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page and "<link" not in page
    pooled = json.loads((out / "pooled.json").read_text(encoding="utf-8"))
    ws2012 = max((r for r in pooled["rows"] if r["product"] == "windows-server" and r["cycle"] == "2012-r2"),
                 key=lambda r: r["count_min"])  # fmt: skip
    assert ws2012["release"] == "Windows Server 2012 R2" and ws2012["extended_until"] == "2026-10-13"
    sentence = (f"<strong>Windows Server 2012 R2</strong>: {ws2012['organisations']} councils, <span class=\"tok\">"
                f"{ws2012['count']}</span> {'servers' if ws2012['category'] == 'servers' else ''}")
    assert sentence.rstrip() in page and "extended support ends <span class=\"tok\">2026-10-13</span>" in page
    assert "Hardware families due together" in page and "Catalyst" in page
    for total in pooled["totals"]:
        assert f"<td class=\"num\">{total['count']}</td>" in page


def test_hostile_labels_are_escaped_and_csv_cells_neutralised(tmp_path: Path) -> None:
    """A product this posture's catalogue knows is named by the catalogue, whatever a file calls it; a product
    it does not know (a newer posture's) keeps the files' label, escaped in the page and neutralised in CSV."""
    release = universe(1)[0]
    evil = "=HYPERLINK(\"http://x\")<script>alert(1)</script>"
    paths = []
    for n in range(10):
        r = row(release, "servers", 40 + 5 * n, DAY)
        r["label"] = evil
        if n >= 5:
            r["product"] = "newer-product"
        paths.append(tmp_path / f"c{n}.json")
        paths[-1].write_bytes(dump(summary([r], organisation=f"Council {n}")))
    out = tmp_path / "out"
    result = run_posture("share", "aggregate", *map(str, paths), "--out", str(out))
    assert result.returncode == 0, result.stderr
    pooled = json.loads((out / "pooled.json").read_text(encoding="utf-8"))
    labels = {r["product"]: r["label"] for r in pooled["rows"]}
    assert labels[release.product] == default_catalogue().products[release.product].title, labels
    assert labels["newer-product"] == evil, labels
    page = (out / "opportunities.html").read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "'=HYPERLINK" in (out / "pooled.csv").read_text(encoding="utf-8")


# ---- secondary suppression -------------------------------------------------------------------------


def pool_of(paths: list[Path], min_organisations: int = 5, min_devices: int = 10) -> Pooled:
    return aggregate(paths, None, min_organisations, min_devices, DAY)


def published(pooled: Pooled) -> dict[tuple[Any, ...], tuple[int, int]]:
    return {row_key(r): (r["count_min"], r["count_max"]) for r in pooled.rows}


@pytest.mark.parametrize("thresholds", [(5, 10), (FLOOR_ORGANISATIONS, FLOOR_DEVICES)])
def test_a_total_minus_its_published_cells_reveals_nothing(councils: list[Path], thresholds: tuple[int, int]) -> None:
    pooled = pool_of(councils, *thresholds)
    for total in pooled.totals:
        cells = [r for r in pooled.rows if r["due_financial_year"] == total["financial_year"]]
        assert total["rows"] == len(cells)
        assert total["count_min"] - sum(r["count_min"] for r in cells) == 0
        assert total["count_max"] - sum(r["count_max"] for r in cells) == 0
    assert {t["financial_year"] for t in pooled.totals} == {r["due_financial_year"] for r in pooled.rows}


@pytest.mark.parametrize("thresholds", [(5, 10), (FLOOR_ORGANISATIONS, FLOOR_DEVICES)])
def test_subtracting_one_council_reveals_no_more_than_its_own_file(councils: list[Path],
                                                                   thresholds: tuple[int, int]) -> None:  # fmt: skip
    """Pool all councils, then all but one, for every council: the difference of the two outputs, cell by
    cell and total by total, never narrows that council's count beyond its own file's range, and no cell
    hidden in either output can be computed from what the outputs publish."""
    everyone = pool_of(councils, *thresholds)
    all_cells = published(everyone)
    truth = plain_pool(councils)
    for leaving in councils:
        own = {row_key(r): (r["count_min"], r["count_max"]) for r in json.loads(leaving.read_text())["rows"]}
        rest = pool_of([p for p in councils if p != leaving], *thresholds)
        rest_cells = published(rest)
        assert rest_cells.keys() <= all_cells.keys()  # adding a council never hides a published cell
        for key, (low, high) in all_cells.items():
            if key in rest_cells:  # published in both: the difference is exactly the council's own range
                difference = (low - rest_cells[key][0], high - rest_cells[key][1])
                assert difference == own.get(key, (0, 0))
                assert difference[1] - difference[0] >= own.get(key, (0, 0))[1] - own.get(key, (0, 0))[0]
            else:  # hidden without the council: the pool of the rest has no figure containing it
                assert truth[key][2] - (key in own) < thresholds[0] or truth[key][0] - own.get(key, (0, 0))[0] < \
                    thresholds[1]
        for output in (everyone, rest):  # a hidden cell is in no total of either output
            shown = published(output)
            year = {row_key(r): r["due_financial_year"] for r in output.rows}
            for total in output.totals:
                parts = [v for k, v in shown.items() if year[k] == total["financial_year"]]
                assert (total["count_min"], total["count_max"]) == (sum(p[0] for p in parts), sum(p[1] for p in parts))
        # The totals' difference is the published cells' difference: nothing from a hidden cell leaks through.
        years = {t["financial_year"] for t in everyone.totals} | {t["financial_year"] for t in rest.totals}
        for fy in years:
            a = next(((t["count_min"], t["count_max"]) for t in everyone.totals if t["financial_year"] == fy), (0, 0))
            b = next(((t["count_min"], t["count_max"]) for t in rest.totals if t["financial_year"] == fy), (0, 0))
            cells_a = [r for r in everyone.rows if r["due_financial_year"] == fy]
            cells_b = [r for r in rest.rows if r["due_financial_year"] == fy]
            assert a[0] - b[0] == sum(r["count_min"] for r in cells_a) - sum(r["count_min"] for r in cells_b)
            assert a[1] - b[1] == sum(r["count_max"] for r in cells_a) - sum(r["count_max"] for r in cells_b)


def test_thresholds_below_the_floor_are_refused(councils: list[Path], tmp_path: Path) -> None:
    for option, value in (("--min-organisations", "2"), ("--min-devices", "4")):
        result = run_posture("share", "aggregate", *map(str, councils[:3]), "--out", str(tmp_path / "o"), option, value)
        refused(result, "thresholds below 3 organisations or 5 devices")
        assert not (tmp_path / "o").exists()
    with pytest.raises(PostureError):
        publish(Pool(), 2, 10, DAY)


# ---- bad input: refused, named, nothing written ----------------------------------------------------


def one_council(tmp_path: Path, seed: int = 3) -> dict[str, Any]:
    return summary(council(random.Random(seed), universe(30), 12))


BAD_ROWS = [
    ("count_min", -1, "count_min must be a whole number of at least 1, not -1"),
    ("count_min", 1.5, "count_min must be a whole number of at least 1, not 1.5"),
    ("count_max", "9", "count_max must be a whole number"),
    ("count_min", True, "count_min must be a whole number"),
    ("count", "12", 'count must be "<10" or a whole number rounded to 5'),
    ("count", "-5", 'count must be "<10"'),
    ("eol_date", "2026-02-30", "eol_date must be null or a date"),
    ("eol_financial_year", "1999/00", "is not the financial year of eol_date"),
    ("kind", "toaster", "kind must be one of"),
]


@pytest.mark.parametrize(("key", "value", "message"), BAD_ROWS, ids=[f"{k}={v!r}" for k, v, _ in BAD_ROWS])
def test_a_bad_row_is_refused_naming_file_and_row(tmp_path: Path, key: str, value: Any, message: str) -> None:
    good, bad = one_council(tmp_path, 1), one_council(tmp_path, 2)
    bad["rows"][4][key] = value
    paths = [tmp_path / "good.json", tmp_path / "bad.json"]
    paths[0].write_bytes(dump(good))
    paths[1].write_bytes(dump(bad))
    out = tmp_path / "out"
    result = run_posture("share", "aggregate", *map(str, paths), "--out", str(out))
    refused(result, f"{paths[1]}: row 5", message)
    assert not out.exists()


def test_inconsistent_counts_extra_keys_and_duplicate_rows(tmp_path: Path) -> None:
    cases: list[tuple[str, Any]] = []
    doc = one_council(tmp_path)
    doc["rows"][0].update(count="25", count_min=20, count_max=27)
    cases.append(("count_min..count_max 20..27 is not the range of count '25' (23..27)", doc))
    doc = one_council(tmp_path)
    doc["rows"][0].update(count="<10", count_min=1, count_max=10)
    cases.append(("is not the range of count '<10' (1..9)", doc))
    doc = one_council(tmp_path)
    doc["rows"][2]["site"] = "Town Hall"
    cases.append(("row 3", doc))
    doc = one_council(tmp_path)
    doc["address"] = "10.0.0.1"
    cases.append(("unknown key 'address'", doc))
    doc = one_council(tmp_path)
    del doc["rules"]
    cases.append(("the key 'rules' is missing", doc))
    doc = one_council(tmp_path)
    doc["rows"].append(copy.deepcopy(doc["rows"][1]))
    cases.append((f"row {len(doc['rows'])}", doc))
    cases.append(("the same row as row 2", doc))
    doc = one_council(tmp_path)
    doc["evaluated_on"] = "2026-13-01"
    cases.append(("evaluated_on must be a date", doc))
    doc = one_council(tmp_path)
    assert doc["rows"][-1]["kind"] == "os"
    doc["rows"][-1]["hardware_family"] = "Catalyst 2950"
    cases.append((f"row {len(doc['rows'])} (windows-server 2016): hardware_family is only for kind hardware", doc))
    for n, (message, doc) in enumerate(cases):
        path = tmp_path / f"case{n}.json"
        path.write_bytes(dump(doc))
        result = run_posture("share", "aggregate", str(path), "--out", str(tmp_path / "out"))
        refused(result, str(path), message)
    assert not (tmp_path / "out").exists()


def test_future_schema_duplicate_keys_nan_and_not_json(tmp_path: Path) -> None:
    doc = one_council(tmp_path)
    doc["schema"] = "posture.share-summary/2"
    future = tmp_path / "future.json"
    future.write_bytes(dump(doc))
    refused(run_posture("share", "aggregate", str(future), "--out", str(tmp_path / "o")),
            "schema posture.share-summary/2 is not one this posture reads", "upgrade posture")  # fmt: skip
    text = dump(one_council(tmp_path)).decode()
    cases = {"twice.json": text.replace('"count": ', '"count": "<10", "count": ', 1),
             "nan.json": text.replace('"count_min": 1', '"count_min": NaN', 1),
             "junk.json": text[:200], "list.json": "[1, 2]", "latin1.json": "\xe9"}  # fmt: skip
    messages = {"twice.json": "appears twice", "nan.json": "NaN", "junk.json": "not valid JSON",
                "list.json": "not a posture share summary", "latin1.json": "not UTF-8"}  # fmt: skip
    for name, body in cases.items():
        path = tmp_path / name
        path.write_bytes(body.encode("latin-1") if name == "latin1.json" else body.encode())
        refused(run_posture("share", "aggregate", str(path), "--out", str(tmp_path / "o")), str(path), messages[name])
    assert not (tmp_path / "o").exists()


def test_the_same_council_twice_is_refused(tmp_path: Path) -> None:
    doc = one_council(tmp_path)
    first, copy_of = tmp_path / "a.json", tmp_path / "b.json"
    first.write_bytes(dump(doc))
    copy_of.write_bytes(dump(doc))
    refused(run_posture("share", "aggregate", str(first), str(copy_of), "--out", str(tmp_path / "o")),
            f"{copy_of}: refused: a duplicate: the same bytes as {first}")  # fmt: skip
    named = [dict(doc, organisation="Example Borough Council"), dict(one_council(tmp_path, 9),
                                                                      organisation="Example Borough Council")]
    for path, d in zip((first, copy_of), named, strict=True):
        path.write_bytes(dump(d))
    refused(run_posture("share", "aggregate", str(first), str(copy_of), "--out", str(tmp_path / "o")),
            "'Example Borough Council' for 2026-12 is also")  # fmt: skip
    named[1]["period"] = "2026-Q4"
    copy_of.write_bytes(dump(named[1]))
    assert run_posture("share", "aggregate", str(first), str(copy_of), "--out", str(tmp_path / "o")).returncode == 0


# ---- signatures ------------------------------------------------------------------------------------


def keyline(private: Ed25519PrivateKey, comment: str) -> str:
    import base64

    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return f"posture-ed25519 {base64.b64encode(raw).decode()} {comment}"


def test_signatures_are_required_when_keys_are_trusted(tmp_path: Path) -> None:
    keys = [Ed25519PrivateKey.generate() for _ in range(6)]
    paths = []
    for n, key in enumerate(keys):
        paths.append(tmp_path / f"c{n}.json")
        paths[-1].write_bytes(dump(one_council(tmp_path, n)))
        sign(paths[-1], key)
    trusted = tmp_path / "councils.keys"
    trusted.write_text("# the councils' keys\n" + "\n".join(keyline(k, f"council-{n}") for n, k in
                                                           enumerate(keys[:5])) + "\n", encoding="utf-8")  # fmt: skip
    out = tmp_path / "out"
    ok = run_posture("share", "aggregate", *map(str, paths[:5]), "--out", str(out), "--trusted", str(trusted))
    assert ok.returncode == 0, ok.stderr
    # The .sig files themselves may be given too (summaries/*): each is read beside its summary.
    both = [str(p) for path in paths[:5] for p in (path, path.with_name(path.name + ".sig"))]
    assert run_posture("share", "aggregate", *both, "--out", str(out), "--trusted", str(trusted)).returncode == 0

    refused(run_posture("share", "aggregate", *map(str, paths), "--out", str(tmp_path / "o"),
                        "--trusted", str(trusted)), f"{paths[5]}: refused: signed by key", "which is not trusted")
    unsigned = tmp_path / "unsigned.json"
    unsigned.write_bytes(dump(one_council(tmp_path, 40)))
    refused(run_posture("share", "aggregate", str(paths[0]), str(unsigned), "--out", str(tmp_path / "o"),
                        "--trusted", str(trusted)), f"{unsigned}: refused: unsigned")  # fmt: skip
    tampered = paths[1].read_bytes().replace(b'"count_max": 9', b'"count_max": 8', 1)
    paths[1].write_bytes(tampered)
    refused(run_posture("share", "aggregate", *map(str, paths[:5]), "--out", str(tmp_path / "o"),
                        "--trusted", str(trusted)), f"{paths[1]}: refused: tampered")  # fmt: skip
    # Re-hashed but not re-signed: the signature itself fails.
    sig = paths[1].with_name(paths[1].name + ".sig")
    envelope = json.loads(sig.read_text())
    envelope["signed_sha256"] = __import__("hashlib").sha256(tampered).hexdigest()
    sig.write_text(json.dumps(envelope))
    refused(run_posture("share", "aggregate", str(paths[1]), "--out", str(tmp_path / "o"), "--trusted", str(trusted)),
            "tampered: the signature does not verify")  # fmt: skip
    # Without trusted keys a tampered file is still refused: its .sig says so.
    refused(run_posture("share", "aggregate", str(paths[1]), "--out", str(tmp_path / "o")), "tampered")
    # One key, two summaries (two periods): one council counted twice.
    again = tmp_path / "again.json"
    doc = one_council(tmp_path, 77)
    doc["period"] = "2026-11"
    again.write_bytes(dump(doc))
    sign(again, keys[0])
    refused(run_posture("share", "aggregate", str(paths[0]), str(again), "--out", str(tmp_path / "o"),
                        "--trusted", str(trusted)),
            "signed by the same key as", "periods 2026-12 and 2026-11")  # fmt: skip
    bad_keys = tmp_path / "bad.keys"
    bad_keys.write_text("posture-ed25519 AAAA\n", encoding="utf-8")
    refused(run_posture("share", "aggregate", str(paths[0]), "--out", str(tmp_path / "o"), "--trusted", str(bad_keys)),
            f"{bad_keys}:1:")  # fmt: skip
    assert not (tmp_path / "o").exists()


def test_the_trust_store_is_used_with_trust_store(tmp_path: Path) -> None:
    env = {f"XDG_{n}_HOME": str(tmp_path / n.lower()) for n in ("DATA", "CONFIG", "STATE")}
    env["POSTURE_VAULT"] = ""
    key = Ed25519PrivateKey.generate()
    line = tmp_path / "council.pub"
    line.write_text(keyline(key, "council") + "\n", encoding="utf-8")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("POSTURE_")}
    clean.update(env)
    clean.pop("POSTURE_VAULT")
    trusted = subprocess.run([POSTURE, "keys", "trust", str(line), "--name", "council-a"], capture_output=True,
                             text=True, env=clean, check=False)  # fmt: skip
    assert trusted.returncode == 0, trusted.stderr
    path = tmp_path / "a.json"
    path.write_bytes(dump(one_council(tmp_path)))
    sign(path, key)
    ran = subprocess.run([POSTURE, "share", "aggregate", str(path), "--out", str(tmp_path / "o"), "--trust-store"],
                         capture_output=True, text=True, env=clean, check=False)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    other = tmp_path / "b.json"
    other.write_bytes(dump(one_council(tmp_path, 5)))
    sign(other, Ed25519PrivateKey.generate())
    ran = subprocess.run([POSTURE, "share", "aggregate", str(other), "--out", str(tmp_path / "o"), "--trust-store"],
                         capture_output=True, text=True, env=clean, check=False)  # fmt: skip
    refused(ran, "not trusted")


# ---- files: never through links; memory flat -------------------------------------------------------


def test_outputs_never_go_through_symbolic_links(councils: list[Path], tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "linked"
    link.symlink_to(target)
    refused(run_posture("share", "aggregate", *map(str, councils[:5]), "--out", str(link)), "symbolic link")
    assert list(target.iterdir()) == []
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me", encoding="utf-8")
    (out / "pooled.json").symlink_to(victim)
    assert run_posture("share", "aggregate", *map(str, councils[:5]), "--out", str(out)).returncode == 0
    assert victim.read_text(encoding="utf-8") == "keep me"
    assert not (out / "pooled.json").is_symlink()
    assert json.loads((out / "pooled.json").read_text())["organisations"] == 5
    refused(run_posture("share", "aggregate", *map(str, councils[:5]), "--out", str(victim)), "is not a folder")


def peak_mib(argv: list[str]) -> float:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    return usage.ru_maxrss / 1024


def test_a_thousand_files_in_flat_memory(tmp_path: Path) -> None:
    """1,000 councils of 60 rows: works, and the peak memory is within a few MiB of 100 councils' (the
    files are read one at a time; only the running sums are kept)."""
    paths = write_councils(tmp_path / "in", 1000, 60, seed=5, size=200)
    small = peak_mib([POSTURE, "share", "aggregate", *map(str, paths[:100]), "--out", str(tmp_path / "small")])
    large = peak_mib([POSTURE, "share", "aggregate", *map(str, paths), "--out", str(tmp_path / "large")])
    assert json.loads((tmp_path / "large" / "pooled.json").read_text())["organisations"] == 1000
    assert large - small < 12, (small, large)


# ---- help ------------------------------------------------------------------------------------------


def test_help_has_examples_and_fits_80_columns() -> None:
    """As tests/test_cli_help.py checks every command (it does not reach the share group's lazy commands)."""
    ctx = click.Context(aggregate_command, info_name="posture share aggregate", terminal_width=80,
                        max_content_width=80)  # fmt: skip
    text = aggregate_command.get_help(ctx)
    assert "Examples:" in text and "posture share aggregate" in text.split("Examples:", 1)[1]
    assert [line for line in text.splitlines() if len(line) > 80] == []
    shown = run_posture("share", "aggregate", "--help")
    assert shown.returncode == 0 and "--min-organisations" in shown.stdout


# ---- the procurement plan's --sector line (item 3) -------------------------------------------------


Sector = tuple[Path | str, Path, Path, Path]  # (db, config, costs, pooled.json)


@pytest.fixture(scope="module")
def sector(request: pytest.FixtureRequest, store_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Sector:
    """(db, config, costs, pooled.json): the two-server estate of test_procurement and 20 councils in
    which Windows Server 2008 R2 SP1 is common."""
    from tests.reports.test_procurement import estate

    tmp = tmp_path_factory.mktemp("sector")
    db, config, costs = estate(tmp, new_store(request, store_kind, tmp))
    paths = write_councils(tmp / "in", 20, 30, seed=11, size=40)
    out = tmp / "pooled"
    made = run_posture("share", "aggregate", *map(str, paths), "--out", str(out))
    assert made.returncode == 0, made.stderr
    return db, config, costs, out / "pooled.json"


def expected_line(pooled_json: Path) -> str:
    today_fy = f"{date.today().year if date.today().month >= 4 else date.today().year - 1}"
    rows = [r for r in json.loads(pooled_json.read_text())["rows"]
            if r["product"] == "windows-server" and r["cycle"] == "2008-r2-sp1"]  # fmt: skip
    best = max(rows, key=lambda r: (r["category"] == "servers", r["count_min"]))
    fy = f"{today_fy}/{str(int(today_fy) + 1)[2:]}"
    return (f"{best['organisations']} councils also have Windows Server 2008 R2 SP1 past its end, due in {fy} "
            f"({best['count_min']:,}-{best['count_max']:,} devices): a joint purchase may be possible")


def test_procurement_markdown_gains_the_sector_line(sector: Sector) -> None:
    db, config, costs, pooled = sector
    plain = run_posture("--config", str(config), "plan", "procurement", "--costs", str(costs), db=db)
    assert plain.returncode == 0 and "Joint purchase" not in plain.stdout
    result = run_posture("--config", str(config), "plan", "procurement", "--costs", str(costs), "--sector",
                         str(pooled), db=db)  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.replace("\\", "").split())
    assert "Joint purchase with other councils" in result.stdout
    assert expected_line(pooled) in text and "| 1 | Microsoft Windows Server 2008 R2 SP1 |" in text
    assert "Sector data: pooled.json" in text
    as_csv = run_posture("--config", str(config), "plan", "procurement", "--costs", str(costs), "--sector",
                         str(pooled), "--format", "csv", db=db)  # fmt: skip
    lots = {row["number"]: row for row in csv.DictReader(io.StringIO(as_csv.stdout)) if row["number"]}
    assert expected_line(pooled) in lots["1"]["sector"]


def test_procurement_docx_shows_the_sector_line(sector: Sector, tmp_path: Path) -> None:
    from tests.reports.test_procurement_render import document_words

    db, config, costs, pooled = sector
    path = tmp_path / "strategy.docx"
    result = run_posture("--config", str(config), "plan", "procurement", "--costs", str(costs), "--sector",
                         str(pooled), "--format", "docx", "--out", str(path), db=db)  # fmt: skip
    assert result.returncode == 0, result.stderr
    import docx

    cells = [c.text for t in docx.Document(str(path)).tables for row in t.rows for c in row.cells]
    assert any(expected_line(pooled) in c for c in cells), cells
    assert {"joint", "purchase", "councils"} <= document_words(path)


def test_a_bad_sector_file_is_refused(sector: Sector, tmp_path: Path) -> None:
    db, _, _, pooled = sector
    summary_file = tmp_path / "summary.json"
    summary_file.write_bytes(dump(summary([])))
    refused(run_posture("plan", "procurement", "--sector", str(summary_file), db=db),
            "schema 'posture.share-summary/1' is not posture.share-pooled/1")  # fmt: skip
    doc = json.loads(pooled.read_text())
    doc["rows"][0]["organisations"] = "many"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(doc))
    refused(run_posture("plan", "procurement", "--sector", str(broken), db=db), f"{broken}: row 1")


def test_sector_lines_match_release_and_year() -> None:
    """Same product and release, and the pooled row's year reckoned as the lot's (its end of life's year,
    or this one when past); the lot's own category first, then the most devices."""
    from reports.procurement import Lot, sector_lines

    def lot(number: int, product: str, cycle: str, category: str, eol: str, fy: str) -> Lot:
        return Lot(number, product, cycle, product, category, 2, eol, None, ["end-of-life"], [], "", {}, "replace",
                   None, None, fy)  # fmt: skip

    def pooled(product: str, cycle: str, category: str, fy: str, orgs: int, low: int, kind: str = "os"
               ) -> dict[str, Any]:  # fmt: skip
        return {"kind": kind, "product": product, "cycle": cycle, "release": f"{product} {cycle}", "category": category,
                "eol_financial_year": fy, "organisations": orgs, "count_min": low, "count_max": low + 40}  # fmt: skip

    lots = [lot(1, "windows-server", "2016", "servers", "2027-01-12", "2026/27"),
            lot(2, "windows-server", "2012-r2", "servers", "2023-10-10", "2026/27"),
            lot(3, "rhel", "7", "servers", "2024-06-30", "2026/27"),
            lot(4, "cisco-hardware-eol.catalyst-3850", "catalyst-3850", "network", "2025-10-31", "2026/27")]
    rows = [pooled("windows-server", "2016", "end-user", "2026/27", 30, 1200),
            pooled("windows-server", "2016", "servers", "2026/27", 14, 1000),
            pooled("windows-server", "2012-r2", "servers", "2023/24", 9, 50),
            pooled("rhel", "7", "servers", "2029/30", 9, 50),
            pooled("cisco-hardware-eol", "catalyst-3850", "network", "2025/26", 6, 30, kind="hardware")]
    lines = sector_lines(lots, rows, DAY)
    assert lines[1] == ("14 councils also have windows-server 2016 ending in 2026/27 (1,000-1,040 devices): a joint "
                        "purchase may be possible")  # fmt: skip
    assert lines[2].startswith("9 councils also have windows-server 2012-r2 past its end, due in 2026/27 (50-90")
    assert 3 not in lines  # RHEL 7 ends for the others in 2029/30, not this year
    assert lines[4].startswith("6 councils also have cisco-hardware-eol catalyst-3850 past its end")
