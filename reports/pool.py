"""`posture share aggregate`: pool many councils' sector-sharing summaries into one table that is safe to
publish, and a page of joint-procurement opportunities (issue 17 item 2).

Input: summaries in the `posture.share-summary/1` form (reports/schemas/share-summary.schema.json), each
read within a size bound and checked strictly: a newer schema is refused naming its version; an unknown or
missing key, a count that is negative, not a whole number or not the range its rounded count stands for, a
date that is not a date, a financial year that is not its date's, or one row key twice is refused naming
the file and the row. With trusted keys (`--trusted FILE`, `--trust-store`) each file needs a `<file>.sig`
by one of them over `SIGNED_PREFIX` + the file's exact bytes; without them a `.sig` beside a file is still
checked (a tampered file is refused) and names the file's key for the duplicate rule. A duplicate (the same
bytes; the same signing key twice; the same named organisation and period) is refused: one council counted
twice would defeat the organisations threshold.

Pooling: a cell is (kind, product, cycle, category, hardware family, end-of-life date, extended support end).
Its range is the sum of the files' count_min and the sum of their count_max; its organisations, how many
files have the row. Files are read one at a time and only these running sums are kept, so memory does not
grow with the number of files.

Publication (primary suppression): a cell is published only when at least `min_organisations` (default 5,
never below 3) organisations contribute and its range's lower end is at least `min_devices` (default 10,
never below 5).

Secondary suppression, the method: **everything published is computed from published cells only.** The
totals per financial year, the products ending together and the hardware families due together are sums of
published cells, so no published figure contains any part of a suppressed cell, and nothing says how many
cells were withheld. Hence (a) a total minus the cells it adds up is zero, never a hidden cell; and (b)
comparing the pool of all councils with the pool of all but one: a cell only gains organisations and
devices when a file is added, so a cell published without the council is published with it, and the
difference of the two is exactly that council's own range (count_min..count_max from its file), never
narrower; a cell hidden in either output appears in no figure of that output, and the difference of two
totals is the difference of the published cells they add up. tests/reports/test_pool.py checks both on
generated councils, removing each in turn.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from reports import model
from reports.share import CATEGORY, PERIOD, ROW_KEYS, RULE_ID, SCHEMA, SIGNATURE_SCHEMA, SIGNED_PREFIX, financial_year
from scanner.errors import PostureError
from scanner.inputs import read_bounded
from scanner.model import printable

if TYPE_CHECKING:
    from rules.catalogue import Product

POOLED_SCHEMA = "posture.share-pooled/1"
MAX_SUMMARY_BYTES = 32 * 2**20  # 100,000 rows (the schema's most) of about 300 bytes
MAX_SIGNATURE_BYTES = 4096
MAX_TRUST_BYTES = 1 << 20
FLOOR_ORGANISATIONS, FLOOR_DEVICES = 3, 5  # the lowest thresholds anyone may choose
SUPPRESSION = "published-cells-only"  # the secondary suppression method (see the module's notes)

TOP_KEYS = frozenset({"schema", "organisation", "period", "evaluated_on", "posture_version", "catalogue_date",
                      "policy", "rules", "counts", "rows"})  # fmt: skip
ROW_KEYSET = frozenset(ROW_KEYS)
KINDS = frozenset({"os", "firmware", "software", "hardware"})
POLICIES = frozenset({"security", "maintenance", "last-date-of-support"})
MAX_ROWS = 100_000
_SCHEMA_NAME = re.compile(r"posture\.share-summary/([0-9]{1,6})")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}(-[0-9]{2})?")
_FY = re.compile(r"[0-9]{4}/[0-9]{2}")
_PRODUCT = re.compile(r"[a-z0-9][a-z0-9._+-]{0,79}")
_STATE = re.compile(r"[a-z][a-z-]{0,39}")
_COUNT = re.compile(r"<10|[1-9][0-9]*[05]")

# A pooled cell: (kind, product, cycle, category, hardware_family, eol_date, eol_financial_year, extended_until)
Key = tuple[str, str, str | None, str, str | None, str | None, str | None, str | None]


# ---- reading one summary ---------------------------------------------------------------------------


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different: `{"count": 5, "count": 500}` means different things to
    different readers, so it is refused rather than read as the last one."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"the key {twice[:40]!r} appears twice in one object")
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json(data: bytes, path: Path, what: str) -> Any:
    """A JSON document, strictly: UTF-8, no repeated key, no NaN or Infinity, nesting bounded."""
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise PostureError(f"{path}: not UTF-8 text (byte {exc.start})", f"give a {what}") from None
    except RecursionError:
        raise PostureError(f"{path}: nested too deeply", f"give a {what}") from None
    except ValueError as exc:  # JSONDecodeError, a repeated key, an integer of more than 4,300 digits
        raise PostureError(f"{path}: not valid JSON: {str(exc)[:160]}", f"give a {what}") from None


def _is_day(text: object) -> bool:
    if not isinstance(text, str) or not _DAY.fullmatch(text):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _shown(value: object) -> str:
    """A value from a file, for a refusal: short, and never a control character."""
    return printable(repr(value), 60)


def _check_header(doc: Any, path: Path) -> None:
    """The file-level fields (the row checks are `_check_row`)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("schema"), str):
        raise PostureError(f"{path}: not a posture share summary (no \"schema\")",
                           "give the JSON files `posture share summary` writes")  # fmt: skip
    schema = doc["schema"]
    if schema != SCHEMA:
        newer = _SCHEMA_NAME.fullmatch(schema)
        if newer:
            raise PostureError(f"{path}: schema {schema} is not one this posture reads (it reads {SCHEMA})",
                               "upgrade posture on this machine, or ask for a summary in the older form")  # fmt: skip
        raise PostureError(f"{path}: schema {_shown(schema)} is not a posture share summary",
                           "give the JSON files `posture share summary` writes")  # fmt: skip
    extra, missing = sorted(set(doc) - TOP_KEYS), sorted(TOP_KEYS - set(doc))
    if extra or missing:
        which = f"unknown key {_shown(extra[0])}" if extra else f"the key {missing[0]!r} is missing"
        raise PostureError(f"{path}: {which}", f"a {SCHEMA} file has exactly: {', '.join(sorted(TOP_KEYS))}")
    organisation = doc["organisation"]
    problems = [
        (organisation is not None and (not isinstance(organisation, str) or not 0 < len(organisation) <= 200),
         "organisation must be null or a name of at most 200 characters"),
        (not isinstance(doc["period"], str) or not PERIOD.fullmatch(doc["period"]),
         "period must be YYYY-MM or YYYY-Qn"),
        (not _is_day(doc["evaluated_on"]), "evaluated_on must be a date, YYYY-MM-DD"),
        (not isinstance(doc["posture_version"], str) or len(doc["posture_version"]) > 50,
         "posture_version must be text of at most 50 characters"),
        (not isinstance(doc["catalogue_date"], str) or len(doc["catalogue_date"]) > 50,
         "catalogue_date must be text of at most 50 characters"),
        (not isinstance(doc["policy"], dict) or set(doc["policy"]) != {"unsupported_after"}
         or doc["policy"]["unsupported_after"] not in POLICIES,
         f"policy must be {{\"unsupported_after\": one of {', '.join(sorted(POLICIES))}}}"),
        (not isinstance(doc["rules"], list) or len(doc["rules"]) > 1000
         or not all(isinstance(r, str) and RULE_ID.fullmatch(r) for r in doc["rules"]),
         "rules must be a list of rule ids"),
        (doc["counts"] != {"rounding": 5, "small_below": 10} or any(type(v) is not int for v in doc["counts"].values()),
         'counts must be {"rounding": 5, "small_below": 10}'),
        (not isinstance(doc["rows"], list), "rows must be a list"),
    ]  # fmt: skip
    for bad, message in problems:
        if bad:
            raise PostureError(f"{path}: {message}", "is the file damaged, or edited by hand?")
    if len(doc["rows"]) > MAX_ROWS:
        raise PostureError(f"{path}: {len(doc['rows']):,} rows, over the {MAX_ROWS:,} a summary may have",
                           "is this a summary from posture?")  # fmt: skip


def _row_problem(row: Any) -> str | None:
    """What is wrong with a row (every key, its type, its range, its dates and its counts), or None."""
    if not isinstance(row, dict):
        return "a row must be an object"
    if row.keys() != ROW_KEYSET:
        extra, missing = sorted(set(row) - ROW_KEYSET), sorted(ROW_KEYSET - set(row))
        return f"unknown key {_shown(extra[0])}" if extra else f"the key {missing[0]!r} is missing"
    kind, family, cycle, label = row["kind"], row["hardware_family"], row["cycle"], row["label"]
    checks = [
        (kind in KINDS, f"kind must be one of {', '.join(sorted(KINDS))}"),
        (isinstance(row["product"], str) and _PRODUCT.fullmatch(row["product"]), "product must be a catalogue slug"),
        (isinstance(label, str) and 0 < len(label) <= 200, "label must be text of 1 to 200 characters"),
        (cycle is None or (isinstance(cycle, str) and 0 < len(cycle) <= 200), "cycle must be null or text"),
        (isinstance(row["lifecycle_state"], str) and _STATE.fullmatch(row["lifecycle_state"]),
         "lifecycle_state must be a state such as end-of-life"),
        (isinstance(row["category"], str) and CATEGORY.fullmatch(row["category"]), "category must be a category"),
        (family is None or (isinstance(family, str) and 0 < len(family) <= 80), "hardware_family must be null or text"),
        (family is None or kind == "hardware", "hardware_family is only for kind hardware"),
    ]  # fmt: skip
    for key in ("eol_date", "extended_until"):
        value = row[key]
        real = isinstance(value, str) and _DATE.fullmatch(value) is not None and financial_year(value) is not None
        checks.append((value is None or real, f"{key} must be null or a date"))
    eol, fy = row["eol_date"], row["eol_financial_year"]
    checks.append((fy is None or (isinstance(fy, str) and _FY.fullmatch(fy)), "eol_financial_year must be YYYY/YY"))
    for ok, message in checks:
        if not ok:
            return f"{message}, not {_shown(row[message.split()[0]])}"
    expected = financial_year(eol) if eol is not None else None
    if fy != expected:
        return f"eol_financial_year {_shown(fy)} is not the financial year of eol_date {_shown(eol)} ({expected})"
    return _count_problem(row["count"], row["count_min"], row["count_max"])


def _count_problem(count: Any, low: Any, high: Any) -> str | None:
    """A count is "<10" (1..9) or a multiple of 5 standing for the integers that round to it."""
    if not isinstance(count, str) or not _COUNT.fullmatch(count):
        return f'count must be "<10" or a whole number rounded to 5, not {_shown(count)}'
    for name, value in (("count_min", low), ("count_max", high)):
        if type(value) is not int or value < 1:
            return f"{name} must be a whole number of at least 1, not {_shown(value)}"
    n = int(count) if count != "<10" else 0
    expected = (1, 9) if count == "<10" else (max(10, n - 2), n + 2)
    if (low, high) != expected:
        return f"count_min..count_max {low}..{high} is not the range of count {count!r} ({expected[0]}..{expected[1]})"
    return None


# ---- signatures and trust --------------------------------------------------------------------------


def load_trusted(files: Sequence[Path], trust_store: bool) -> dict[str, bytes] | None:
    """key id -> raw Ed25519 public key of every key trusted to sign summaries; None: no trust was given
    (signatures are then checked where present, but not required)."""
    from scanner.bundles import SIGNING_PREFIX, key_id, parse_public_line, trusted_keys

    if not files and not trust_store:
        return None
    trusted: dict[str, bytes] = {}
    for path in files:
        try:
            text = read_bounded(path, MAX_TRUST_BYTES, "file of trusted keys").decode("utf-8")
        except UnicodeDecodeError:
            raise PostureError(f"{path}: not UTF-8 text", "give a file of posture-ed25519 lines") from None
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                raw = parse_public_line(line, SIGNING_PREFIX)
            except PostureError as exc:
                raise PostureError(f"{path}:{n}: {exc.message}", exc.hint) from None
            trusted[key_id(raw)] = raw
    if trust_store:
        for kid, entry in trusted_keys().items():
            trusted[kid] = base64.b64decode(entry["public"])
    if not trusted:
        raise PostureError("no trusted key was given", "put posture-ed25519 lines in the --trusted file, or "
                           "trust keys with `posture keys trust`")  # fmt: skip
    return trusted


def _b64(value: Any, size: int, what: str, sig: Path) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise PostureError(f"{sig}: {what} is not {size} bytes of base64", "sign the summary again")
    return raw


def verify_signature(path: Path, data: bytes, trusted: dict[str, bytes] | None) -> str | None:
    """The key id that signed `path` (its `<path>.sig`), or None when unsigned and no trust was given.

    Refused: no .sig when trust is required; a .sig that is not the contract's form; a file changed after
    signing (its SHA-256 is not the one signed, or the signature does not verify); a key not trusted."""
    sig = path.with_name(path.name + ".sig")
    if not sig.exists():
        if trusted is None:
            return None
        raise PostureError(f"{path}: refused: unsigned (no {sig.name} beside it) and signatures are required",
                           "ask its council for the .sig written by `posture share summary --sign`")  # fmt: skip
    from scanner.bundles import key_id, verify_detached

    envelope = parse_json(read_bounded(sig, MAX_SIGNATURE_BYTES, "summary signature"), sig, "summary signature")
    keys = {"schema", "key_id", "public", "signed_sha256", "signature"}
    if not isinstance(envelope, dict) or set(envelope) != keys or envelope["schema"] != SIGNATURE_SCHEMA:
        raise PostureError(f"{sig}: not a {SIGNATURE_SCHEMA} signature", "sign the summary again")
    public = _b64(envelope["public"], 32, "the public key", sig)
    signature = _b64(envelope["signature"], 64, "the signature", sig)
    kid = key_id(public)
    if envelope["key_id"] != kid:
        raise PostureError(f"{path}: refused: the signature's key_id is not its public key's ({kid})",
                           "the .sig was altered; ask for it again")  # fmt: skip
    if envelope["signed_sha256"] != hashlib.sha256(data).hexdigest():
        raise PostureError(f"{path}: refused: tampered: the file is not the one signed (its SHA-256 differs)",
                           "ask its council for the summary again")  # fmt: skip
    if not verify_detached(public, signature, SIGNED_PREFIX + data):
        raise PostureError(f"{path}: refused: tampered: the signature does not verify",
                           "ask its council for the summary and its .sig again")  # fmt: skip
    if trusted is not None and trusted.get(kid) != public:
        raise PostureError(f"{path}: refused: signed by key {kid}, which is not trusted",
                           "add its posture-ed25519 line to a --trusted file if it is that council's")  # fmt: skip
    return kid


# ---- pooling ---------------------------------------------------------------------------------------


@dataclass
class Pool:
    """The running sums of every file added so far (cell -> [sum of count_min, sum of count_max,
    organisations, label, the lifecycle states given]) and what identifies each file, for the duplicate
    rule."""

    trusted: dict[str, bytes] | None = None
    cells: dict[Key, list[Any]] = field(default_factory=dict)
    files: int = 0
    _digests: dict[str, Path] = field(default_factory=dict)
    _keys: dict[str, tuple[Path, str]] = field(default_factory=dict)
    _named: dict[tuple[str, str], Path] = field(default_factory=dict)
    _good_rows: set[tuple[Any, ...]] = field(default_factory=set)  # row descriptions already checked
    _good_counts: set[tuple[Any, ...]] = field(default_factory=set)

    def add(self, path: Path) -> None:
        """Read, check and add one summary, or refuse it (a refusal ends the run: see `_add_rows`)."""
        data = read_bounded(path, MAX_SUMMARY_BYTES, "share summary")
        kid = verify_signature(path, data, self.trusted)
        doc = parse_json(data, path, "share summary")
        _check_header(doc, path)
        self._not_duplicate(path, data, kid, doc["organisation"], doc["period"])
        self._add_rows(path, doc["rows"])
        self.files += 1

    def _not_duplicate(self, path: Path, data: bytes, kid: str | None, organisation: str | None, period: str) -> None:
        digest = hashlib.sha256(data).hexdigest()
        if digest in self._digests:
            raise PostureError(f"{path}: refused: a duplicate: the same bytes as {self._digests[digest]}",
                               "give each council's summary once")  # fmt: skip
        if kid is not None and kid in self._keys:
            earlier, earlier_period = self._keys[kid]
            same = "for the same period" if earlier_period == period else f"(periods {earlier_period} and {period})"
            raise PostureError(f"{path}: refused: a duplicate: signed by the same key as {earlier} {same}",
                               "give one summary per council, all of one period")  # fmt: skip
        if organisation is not None and (organisation, period) in self._named:
            raise PostureError(f"{path}: refused: a duplicate: {organisation[:80]!r} for {period} is also "
                               f"{self._named[organisation, period]}", "give each council's summary once")  # fmt: skip
        self._digests[digest] = path
        if kid is not None:
            self._keys[kid] = (path, period)
        if organisation is not None:
            self._named[organisation, period] = path

    def _add_rows(self, path: Path, rows: list[Any]) -> None:
        """Every row checked (each distinct row description and count once per run: councils repeat them)
        and added to its cell. A refused row stops the whole run (`aggregate`), so a pool that refused a
        file is never published."""
        good_rows, good_counts, cells = self._good_rows, self._good_counts, self.cells
        seen: dict[tuple[Any, ...], int] = {}
        in_file: set[tuple[Any, ...]] = set()  # the cells this file has added to
        for n, row in enumerate(rows, 1):
            try:
                described, counts = _DESCRIBED(row), _COUNTS(row)
                known = (len(row) == len(ROW_KEYS) and described in good_rows and counts in good_counts
                         and type(counts[1]) is int and type(counts[2]) is int)  # fmt: skip
            except (TypeError, KeyError, IndexError):  # not an object, a key missing, an unhashable value
                known = False
            if not known:
                problem = _row_problem(row)
                if problem is not None:
                    raise PostureError(f"{path}: row {n}{_which(row)}: {problem}", "is the file damaged, or edited "
                                       "by hand? Refused: nothing was written")  # fmt: skip
                good_rows.add(described)
                good_counts.add(counts)
            key, label = described[:8], described[8]
            ident = (*key, described[9])  # the row's whole description but its label: a summary's row key
            if ident in seen:
                raise PostureError(f"{path}: row {n}{_which(row)}: the same row as row {seen[ident]} (kind, "
                                   "product, cycle, state, dates, category and hardware family)", "is the file "
                                   "damaged, or edited by hand? Refused: nothing was written")  # fmt: skip
            seen[ident] = n
            cell = cells.get(key)
            if cell is None:
                cells[key] = [counts[1], counts[2], 1, label, {described[9]}]
                in_file.add(key)
            else:
                cell[0] += counts[1]
                cell[1] += counts[2]
                if key not in in_file:  # two rows of one file in one cell (states differ) are one organisation
                    cell[2] += 1
                    in_file.add(key)
                if label < cell[3]:  # the same whichever order the files come in
                    cell[3] = label
                cell[4].add(described[9])  # councils judged on different days may differ


# A row's description (the cell's key, then label and state) and its counts, each read in one C call.
_DESCRIBED = itemgetter("kind", "product", "cycle", "category", "hardware_family", "eol_date", "eol_financial_year",
                        "extended_until", "label", "lifecycle_state")  # fmt: skip
_COUNTS = itemgetter("count", "count_min", "count_max")


def _which(row: Any) -> str:
    """" (windows-server 2012-r2)": which row, for a refusal (its product and cycle, when they are text)."""
    if not isinstance(row, dict):
        return ""
    words = [w for w in (row.get("product"), row.get("cycle")) if isinstance(w, str)]
    return f" ({_shown(' '.join(words))[1:-1]})" if words else ""


@dataclass(frozen=True)
class Pooled:
    """What is published: the cells that pass both thresholds, and the totals of those cells only."""

    pooled_on: date
    organisations: int
    min_organisations: int
    min_devices: int
    rows: list[dict[str, Any]]
    totals: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {"schema": POOLED_SCHEMA, "pooled_on": self.pooled_on.isoformat(), "organisations": self.organisations,
                "thresholds": {"min_organisations": self.min_organisations, "min_devices": self.min_devices},
                "suppression": SUPPRESSION, "rows": self.rows, "totals": self.totals}  # fmt: skip


def check_thresholds(min_organisations: int, min_devices: int) -> None:
    if min_organisations < FLOOR_ORGANISATIONS or min_devices < FLOOR_DEVICES:
        raise PostureError(f"thresholds below {FLOOR_ORGANISATIONS} organisations or {FLOOR_DEVICES} devices are "
                           "refused: so few would let a council's own numbers be read back",
                           f"use --min-organisations {FLOOR_ORGANISATIONS} or more and --min-devices "
                           f"{FLOOR_DEVICES} or more")  # fmt: skip


def span(low: int, high: int) -> str:
    """A range as people read it: "1,200-1,300"."""
    return f"{low:,}" if low == high else f"{low:,}-{high:,}"


def release_name(kind: str, found: Product | None, cycle: str | None, label: str, family: str | None) -> str:
    """The release as a buyer knows it: the catalogue's name of the cycle ("Windows Server 2012 R2"), the
    product and cycle ("Microsoft Windows XP SP3"), or a hardware family ("Catalyst 3850 family hardware");
    `found` is the product in this posture's catalogue, if it has it."""
    if kind == "hardware":
        return f"{family or label} hardware"
    if cycle is None:
        return label
    from rules.hardware import family_of

    named = found.cycle(cycle) if found is not None and " / " not in cycle else None
    shown = cycle if named is None else family_of(named) if named.label.startswith("Row ") else named.label
    title_words = {w.lower() for w in label.split()}
    return shown if shown.split()[0].lower() in title_words else f"{label} {shown}"


def publish(pool: Pool, min_organisations: int, min_devices: int, day: date) -> Pooled:
    """The cells at or above both thresholds, sorted, and totals per financial year of those cells only."""
    from rules.catalogue import default_catalogue

    check_thresholds(min_organisations, min_devices)
    catalogue = default_catalogue()
    rows = []
    for key, (low, high, orgs, label, states) in pool.cells.items():
        if orgs < min_organisations or low < min_devices:
            continue
        kind, product, cycle, category, family, eol, eol_fy, extended = key
        known = catalogue.product(product)  # a product this posture knows is named by its catalogue, never by a
        label = known.title if known is not None else label  # file (one council's text in everyone's table)
        due = extended or eol
        rows.append({"kind": kind, "product": product, "label": label,
                     "release": release_name(kind, known, cycle, label, family), "cycle": cycle,
                     "eol_date": eol, "eol_financial_year": eol_fy, "extended_until": extended,
                     "due_date": due, "due_financial_year": financial_year(due) if due else None,
                     "lifecycle_states": sorted(states), "category": category,
                     "hardware_family": family, "organisations": orgs, "count": span(low, high),
                     "count_min": low, "count_max": high})  # fmt: skip
    rows.sort(key=lambda r: (r["due_financial_year"] or "9999", -r["count_min"], r["release"], r["category"],
                             r["eol_date"] or "", r["extended_until"] or ""))  # fmt: skip
    sums: dict[str | None, list[int]] = {}
    for r in rows:
        total = sums.setdefault(r["due_financial_year"], [0, 0, 0])
        total[0] += 1
        total[1] += r["count_min"]
        total[2] += r["count_max"]
    totals = [{"financial_year": fy, "rows": n, "count": span(low, high), "count_min": low, "count_max": high}
              for fy, (n, low, high) in sorted(sums.items(), key=lambda pair: pair[0] or "9999")]  # fmt: skip
    return Pooled(day, pool.files, min_organisations, min_devices, rows, totals)


def aggregate(paths: Iterable[Path], trusted: dict[str, bytes] | None, min_organisations: int, min_devices: int,
              day: date) -> Pooled:  # fmt: skip
    """Pool every file (one at a time) and publish; the first refusal stops it, nothing published."""
    check_thresholds(min_organisations, min_devices)
    pool = Pool(trusted)
    for path in paths:
        pool.add(path)
    if pool.files == 0:
        raise PostureError("no summary to pool", "give the summaries' JSON files")
    return publish(pool, min_organisations, min_devices, day)


# ---- outputs ---------------------------------------------------------------------------------------

CSV_COLUMNS = ("kind", "product", "label", "release", "cycle", "eol_date", "eol_financial_year", "extended_until",
               "due_date", "due_financial_year", "lifecycle_states", "category", "hardware_family", "organisations",
               "count", "count_min", "count_max")  # fmt: skip
NOUNS = {"servers": "servers", "end-user": "end-user devices", "network": "network devices",
         "storage": "storage devices", "ot-iot": "OT and IoT devices"}  # fmt: skip


NO_END = frozenset({"no-end-announced", "supported"})  # states of a release with no end date that is not unknown


def opportunities(pooled: Pooled) -> dict[str, Any]:
    """The page's content, every figure from published rows: rows by the financial year support ends (paid
    extended support where sold, else end of life), those already ended together, hardware families the
    same way, and the largest needs from this financial year on."""
    current = model.financial_year(pooled.pooled_on)
    page: dict[str, Any] = {"current": current, "top": []}
    for part in ("software", "hardware"):
        page[part] = {"past": [], "years": {}}
    for row in pooled.rows:
        announced = set(row["lifecycle_states"]) <= NO_END  # the vendor set no date, as opposed to: not known
        fy = row["due_financial_year"] or ("No end date announced" if announced else "Support dates not known")
        line = dict(row, noun=NOUNS.get(row["category"], f"{row['category']} devices"),
                    ends=("extended support ends" if row["extended_until"] else "support ends" if row["eol_date"]
                          else "no end date announced" if announced else "dates not known: ask the vendor"),
                    ends_on=row["due_date"] or "")  # fmt: skip
        part = page["hardware" if row["kind"] == "hardware" else "software"]
        if fy < current:
            part["past"].append(line)
        else:
            part["years"].setdefault(fy, []).append(line)
            if row["kind"] != "hardware" and row["due_date"]:  # a need is something that ends
                page["top"].append(line)
    for part in ("software", "hardware"):
        page[part]["past"].sort(key=lambda r: -r["count_min"])
    page["top"] = sorted(page["top"], key=lambda r: -r["count_min"])[:10]
    return page


def render_page(pooled: Pooled) -> str:
    from reports.html import environment

    return environment().get_template("pool.html.j2").render(p=pooled, o=opportunities(pooled))


def pooled_csv(pooled: Pooled) -> bytes:
    import io

    from scanner.model import write_csv

    buffer = io.StringIO()
    cells = ([" ".join(v) if isinstance(v, list) else v for v in (row[c] for c in CSV_COLUMNS)] for row in pooled.rows)
    write_csv(buffer, CSV_COLUMNS, cells)
    return buffer.getvalue().encode()


def check_out_dir(out: Path) -> None:
    """--out is a folder (made if missing), never a symbolic link: checked before any file is read."""
    if out.is_symlink():
        raise PostureError(f"{out} is a symbolic link", "give --out a real folder")
    if out.exists() and not out.is_dir():
        raise PostureError(f"{out} is not a folder", "give --out a folder (it is made if missing)")


def write_outputs(pooled: Pooled, out: Path) -> list[Path]:
    """pooled.csv, pooled.json and opportunities.html in `out`, each whole or not at all, never through a
    link (scanner.safefs); the folder is made with posture's mode and must not be a link itself."""
    import os

    from scanner.safefs import make_dirs, open_dir, write_atomic

    check_out_dir(out)
    try:
        make_dirs(out)
        os.close(open_dir(out))  # O_NOFOLLOW: a link swapped in after the check is refused here
    except OSError as exc:
        raise PostureError(f"cannot use {out} as the output folder: {exc.strerror or exc}",
                           "give --out a folder you can write to") from None  # fmt: skip
    written = []
    for name, content in (("pooled.csv", pooled_csv(pooled)),
                          ("pooled.json", (json.dumps(pooled.as_json(), indent=1, ensure_ascii=False) + "\n").encode()),
                          ("opportunities.html", render_page(pooled).encode())):  # fmt: skip
        write_atomic(out / name, content)
        written.append(out / name)
    return written


# ---- reading a pooled file (the procurement plan's --sector) ---------------------------------------

MAX_POOLED_BYTES = 64 * 2**20
_POOLED_TYPES: dict[str, tuple[type, ...]] = {
    "kind": (str,), "product": (str,), "release": (str,), "cycle": (str, type(None)), "category": (str,),
    "eol_financial_year": (str, type(None)), "organisations": (int,), "count_min": (int,), "count_max": (int,),
}  # fmt: skip


def load_pooled(path: Path) -> list[dict[str, Any]]:
    """The published rows of a pooled.json (bounded, strict: another schema is refused naming it)."""
    doc = parse_json(read_bounded(path, MAX_POOLED_BYTES, "pooled sector file"), path, "pooled.json")
    if not isinstance(doc, dict) or doc.get("schema") != POOLED_SCHEMA:
        shown = _shown(doc.get("schema")) if isinstance(doc, dict) else "none"
        raise PostureError(f"{path}: schema {shown} is not {POOLED_SCHEMA}",
                           "give the pooled.json that `posture share aggregate` writes")  # fmt: skip
    rows = doc.get("rows")
    if not isinstance(rows, list):
        raise PostureError(f"{path}: rows must be a list", "give the pooled.json that `posture share aggregate` writes")
    for n, row in enumerate(rows, 1):
        bad = (not isinstance(row, dict) or any(type(row.get(k)) not in types for k, types in _POOLED_TYPES.items())
               or row["organisations"] < 1 or not 1 <= row["count_min"] <= row["count_max"])  # fmt: skip
        if bad:
            raise PostureError(f"{path}: row {n}: not a pooled row", "give the pooled.json `posture share aggregate` "
                               "writes, unedited")  # fmt: skip
    return rows


# ---- the command -----------------------------------------------------------------------------------


@click.command("aggregate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path), required=True,
              help="Folder for pooled.csv, pooled.json and opportunities.html (made if missing).")
@click.option("--trusted", "trusted_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A file of trusted signing keys (posture-ed25519 lines); every summary must then be signed "
                   "by one of them (FILE.sig beside it). Repeatable.")
@click.option("--trust-store", is_flag=True,
              help="Also trust the keys of this machine's trust list (`posture keys list`); signatures required.")
@click.option("--min-organisations", type=int, default=5, show_default=True,
              help="Publish a row only when at least this many organisations have it "
                   f"(at least {FLOOR_ORGANISATIONS}).")
@click.option("--min-devices", type=int, default=10, show_default=True,
              help=f"Publish a row only when its range's lower end is at least this (at least {FLOOR_DEVICES}).")
def aggregate_command(files: tuple[Path, ...], out: Path, trusted_files: tuple[Path, ...], trust_store: bool,
                      min_organisations: int, min_devices: int) -> None:  # fmt: skip
    """Pool councils' summaries (`posture share summary`) into a table safe to publish and a page of
    joint-procurement opportunities. A row is published only when enough organisations and devices are in
    it; totals add only published rows, so no hidden row can be worked out. Any bad, unsigned (when keys
    are given) or duplicate file is refused and nothing is written.

    \b
    Examples:
      posture share aggregate summaries/*.json --out pooled/
      posture share aggregate summaries/*.json --out pooled/ \\
          --trusted councils.keys --min-organisations 7
    """
    check_thresholds(min_organisations, min_devices)
    check_out_dir(out)
    trusted = load_trusted(trusted_files, trust_store)
    given = set(files)
    paths = [p for p in files if not (p.name.endswith(".sig") and p.with_name(p.name[:-4]) in given)]
    pooled = aggregate(paths, trusted, min_organisations, min_devices, date.today())
    write_outputs(pooled, out)
    click.echo(f"pooled {pooled.organisations} summaries: {len(pooled.rows)} rows published "
               f"(at least {min_organisations} organisations and {min_devices} devices each); written: "
               f"{out / 'pooled.csv'}, {out / 'pooled.json'}, {out / 'opportunities.html'}")  # fmt: skip
