"""The fingerprint database: what a device says (a sysDescr, later banners and OS lines) as data, not code.

`rules/fingerprints/<field>/<vendor family>.toml` files hold `[[fingerprint]]` entries: a regex with named
groups, an optional `unless` veto, optional sysObjectID prefixes, and what a match yields (product,
vendor, family, version/cycle/model templates, category, confidence). Each entry carries real example
strings with the result they must give; loading runs them, so a fingerprint that stops recognising its
own example never ships (`posture fingerprints lint` shows every problem with its file:line).

Precedence is explicit: a field's files are read in name order, catch-alls (`zz-*.toml`) last, and
entries in file order; the first match wins. Matching never tries the whole database: every entry is
indexed by a literal word its pattern requires (derived from the pattern, or given as `keywords`) or by
the sysObjectID enterprise number it needs, so a string only meets the entries that could match it.

The text each field matches, as the source writes it (examples are copied from real output):
- `sysdescr`: SNMP sysDescr, with the sysObjectID beside it;
- `service`: nmap's VERSION column, `product version (extrainfo)` (`Apache httpd 2.2.15 ((CentOS))`,
  `OpenSSH 7.6p1 Ubuntu 4ubuntu0.3 (Ubuntu Linux; protocol 2.0)`);
- `osmatch`: an nmap `<osmatch name=...>` (`Microsoft Windows XP SP2 or SP3`);
- `software`: an installed program's name as listed (hrSWInstalledName, a Windows DisplayName);
- `http`: an HTTP Server header or page title (nmap's http-server-header, http-title);
- `mac`: the MAC address vendor (nmap's `<address addrtype="mac" vendor=...>`, the IEEE registry's name).

A fingerprint names one `kind` (os, firmware, software, hardware; by default its field's usual kind). A
string gets the first match of each kind (of software, of each product), so one banner can name a program
and the OS it shipped with; `cycles` lists "one of" several `product/cycle` when a version fits several.

Device strings are hostile: input is cut to 4 KiB, patterns are compiled ASCII-only, and a pattern that
repeats an unbounded repeat (`(a+)+`, catastrophic backtracking) is refused by the linter.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rules import redos
from scanner.compat import tomllib

ROOT = Path(__file__).parent / "fingerprints"
FIELDS = ("sysdescr", "service", "osmatch", "software", "http", "mac")  # evidence fields, one folder each
CATEGORIES = frozenset({"server", "network", "end-user", "printer", "ups-pdu", "camera", "storage", "bmc", "ot-iot",
                        "mobile", "virtualisation"})  # fmt: skip
CONFIDENCES = ("high", "medium", "low")
KINDS = ("os", "firmware", "software", "hardware")  # what a match names; each kind has its own first match
DEFAULT_KIND = {"sysdescr": "os", "service": "software", "osmatch": "os", "software": "software", "http": "software",
                "mac": "hardware"}  # fmt: skip
MAX_INPUT = 4096  # characters of a device string looked at; the rest is never matched
MAX_VALUE = 128  # longest version, cycle or model a template may produce

FILE_KEYS = {"field": True, "enterprise": False, "fingerprint": True}  # key -> required
ENTRY_KEYS = {"id": True, "pattern": True, "unless": False, "keywords": False, "object_id": False, "product": True,
              "vendor": True, "family": True, "version": False, "cycle": False, "cycles": False, "model": False,
              "category": True, "confidence": True, "kind": False, "example": True}  # fmt: skip
RESULT_FIELDS = ("product", "version", "cycle", "cycles", "model")  # what an example states and must get back exactly
EXAMPLE_KEYS = {"text": True, "object_id": False, "source": True, **{k: k == "product" for k in RESULT_FIELDS}}

_ID = re.compile(r"[a-z0-9]+(?:[.-][a-z0-9]+)*")
_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_TOKEN = re.compile(r"[a-z0-9]+")
_KEYWORD = re.compile(r"[a-z0-9]{2,}")
_OID = re.compile(r"\d{1,10}(?:\.\d{1,10}){1,127}")
_ENTERPRISES = "1.3.6.1.4.1."
_TEMPLATE_FIELD = re.compile(r"\{(\w+)\}")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
# Words too common in device strings to index by when a pattern offers a rarer one.
_COMMON = frozenset({"software", "version", "release", "running", "kernel", "switch", "system", "systems", "inc",
                     "networks", "network", "copyright", "ethernet", "card", "series", "device", "build"})  # fmt: skip
_PARSER: Any = importlib.import_module("re._parser")  # the regex parse tree, for the linter (no public API)


class FingerprintError(Exception):
    """A fingerprint file is wrong; `problems` are `file:line: message` lines, every one found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Fingerprint:
    id: str
    field: str
    pattern: re.Pattern[str]
    unless: re.Pattern[str] | None
    keywords: tuple[str, ...]  # any one of these words must be in the text (empty: indexed by object_id)
    object_ids: tuple[str, ...]  # the sysObjectID must start with one of these (empty: any or none)
    product: str
    vendor: str
    family: str
    version: str | None  # templates: `{group}` names a named group of `pattern`
    cycle: str | None
    cycles: tuple[str, ...]  # "one of" these `slug/cycle` templates (IIS 7.5: Windows 7 or Server 2008 R2)
    model: str | None
    category: str
    confidence: str
    kind: str
    where: str  # file:line of its `id`, for messages


@dataclass(frozen=True)
class Fingerprinted:
    """A match: what the fingerprint yields, its templates filled in from the text."""

    id: str
    product: str
    vendor: str
    family: str
    version: str | None
    cycle: str | None
    cycles: tuple[str, ...]
    model: str | None
    category: str
    confidence: str
    kind: str


@dataclass(frozen=True)
class Database:
    fingerprints: tuple[Fingerprint, ...]  # in precedence order, every field
    index: dict[str, dict[str, tuple[int, ...]]]  # field -> word or "oid:<enterprise>" -> positions
    enterprises: dict[int, str]  # sysObjectID enterprise number -> vendor

    def match(self, field: str, text: str | bytes, object_id: str | None = None) -> Fingerprinted | None:
        """The first fingerprint of `field` (in precedence order) that the text and sysObjectID fit."""
        return next(self._matches(field, text, object_id), None)

    def match_all(self, field: str, text: str | bytes, object_id: str | None = None) -> list[Fingerprinted]:
        """The first match of each kind (of software, each product), in precedence order: one banner can name
        a program, what it bundles and the OS it shipped with (`Microsoft IIS httpd 7.5`: IIS 7.5, and
        Windows 7 or Server 2008 R2; `Apache httpd 2.2.3 ((CentOS) PHP/5.1.6 ...)`: Apache, PHP, CentOS)."""
        found: dict[tuple[str, str], Fingerprinted] = {}
        for hit in self._matches(field, text, object_id):
            found.setdefault(_slot(hit.kind, hit.product), hit)
        return list(found.values())

    def _matches(self, field: str, text: str | bytes, object_id: str | None) -> Iterator[Fingerprinted]:
        text = _bounded(text)
        oid = object_id_of(object_id)
        index = self.index.get(field, {})
        words = set(_TOKEN.findall(text.lower() if text.isascii() else text.translate(_ASCII_LOWER)))
        if oid is not None and (number := enterprise_of(oid)) is not None:
            words.add(f"oid:{number}")
        positions = sorted({p for w in words if (hits := index.get(w)) for p in hits})
        for position in positions:
            fp = self.fingerprints[position]
            if fp.object_ids and not (oid and any(oid == p or oid.startswith(p + ".") for p in fp.object_ids)):
                continue
            m = fp.pattern.search(text)
            if m is None or (fp.unless is not None and fp.unless.search(text)):
                continue
            cycles = tuple(c for c in (_fill(t, m) for t in fp.cycles) if c)
            yield Fingerprinted(fp.id, fp.product, fp.vendor, fp.family, _fill(fp.version, m), _fill(fp.cycle, m),
                                cycles, _fill(fp.model, m), fp.category, fp.confidence, fp.kind)  # fmt: skip

    def vendor_of(self, object_id: str | None) -> str | None:
        """The vendor a sysObjectID's enterprise number names, when a fingerprint file knows it."""
        oid = object_id_of(object_id)
        number = enterprise_of(oid) if oid else None
        return self.enterprises.get(number) if number is not None else None


def _slot(kind: str, product: str) -> tuple[str, str]:
    """What one match fills: a host has one OS, firmware and hardware, and any number of programs."""
    return (kind, product if kind == "software" else "")


def _bounded(text: str | bytes) -> str:
    """The part of a device string that is matched: 4 KiB, invalid UTF-8 replaced, never an error."""
    if isinstance(text, bytes):
        return text[:MAX_INPUT].decode("utf-8", "replace")
    return text[:MAX_INPUT]


def object_id_of(value: str | None) -> str | None:
    """A sysObjectID in dotted form (a leading dot dropped), or None for anything that is not an OID."""
    if not value or len(value) > 1400:
        return None
    value = value.strip().removeprefix(".")
    return value if _OID.fullmatch(value) else None


def enterprise_of(oid: str) -> int | None:
    """The private enterprise number of an OID under 1.3.6.1.4.1, else None."""
    if not oid.startswith(_ENTERPRISES):
        return None
    return int(oid[len(_ENTERPRISES) :].split(".", 1)[0])


def _fill(template: str | None, m: re.Match[str]) -> str | None:
    """A template with its `{group}`s filled; None when a group it names did not take part in the match."""
    if template is None or "{" not in template:
        return template
    values = {name: m.group(name) for name in _template_names(template)}
    if any(v is None for v in values.values()):
        return None
    filled = _TEMPLATE_FIELD.sub(lambda f: values[f.group(1)].strip(), template).strip()
    return filled[:MAX_VALUE] or None


@functools.cache
def _template_names(template: str) -> tuple[str, ...]:
    return tuple(_TEMPLATE_FIELD.findall(template))


# --- the linter: the regex parse tree ---------------------------------------------------------------

_SAFE_EDGES = {"AT_BEGINNING", "AT_BEGINNING_STRING", "AT_BOUNDARY", "AT_END", "AT_END_STRING"}


def _is_space(av: Any) -> bool:
    return [(str(o), str(a)) for o, a in av] == [("CATEGORY", "CATEGORY_SPACE")]


def required_words(pattern: str) -> list[str]:
    """Words (`[a-z0-9]+`, lower-cased) that any text the pattern matches holds as whole words: runs of
    literal letters and digits in the pattern's mandatory part with a non-alphanumeric literal, `\\s`,
    `^`, `$` or `\\b` on both sides. Empty when the pattern states none (alternatives, classes only)."""
    seq: list[str | None] = []  # a literal character, "" for a safe edge, None for anything else

    def flatten(sub: Any) -> None:
        for op, av in sub:
            name = str(op)
            if name == "LITERAL":
                seq.append(chr(av))
            elif (name == "AT" and str(av) in _SAFE_EDGES) or (name == "IN" and _is_space(av)):
                seq.append("")
            elif name == "SUBPATTERN":
                flatten(av[3])
            else:
                seq.append(None)

    flatten(_PARSER.parse(pattern))
    words, current, left_safe = [], "", False
    for item in [*seq, None]:
        if item is not None and item and item.isascii() and item.isalnum():
            current += item.lower()
            continue
        if current and left_safe and item is not None:
            words.append(current)
        current, left_safe = "", item is not None
    return words


# --- loading ---------------------------------------------------------------------------------------


def _line_of(lines: list[str], pattern: str, start: int = 0) -> int:
    """The 1-based number of the first line from `start` that matches, else the start line."""
    rx = re.compile(pattern)
    return next((i + 1 for i in range(start, len(lines)) if rx.match(lines[i])), start + 1)


def _compile(value: Any, what: str, where: str, problems: list[str]) -> re.Pattern[str] | None:
    if not isinstance(value, str) or not value:
        problems.append(f"{where}: {what} must be a non-empty string")
        return None
    refused = redos.problem(value)  # the rule packs' check: one notion of a pattern that can run away
    if refused:
        problems.append(f"{where}: {what}: {refused}")
        return None
    return re.compile(value, re.ASCII)


def _text(entry: dict[str, Any], key: str, where: str, problems: list[str], required: bool = False) -> str | None:
    value = entry.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{where}: {key} must be a non-empty string")
        return None
    return value


def _unknown_keys(table: dict[str, Any], allowed: dict[str, bool], what: str, where: str,
                  problems: list[str]) -> None:  # fmt: skip
    problems.extend(f"{where}: unknown key {k!r} in {what}" for k in table if k not in allowed)
    problems.extend(f"{where}: {what} lacks {k!r}" for k, needed in allowed.items() if needed and k not in table)


def _read_entry(entry: dict[str, Any], field: str, where: str, problems: list[str]) -> Fingerprint | None:
    before = len(problems)
    _unknown_keys(entry, ENTRY_KEYS, "fingerprint", where, problems)
    fid = _text(entry, "id", where, problems, True) or ""
    if fid and not _ID.fullmatch(fid):
        problems.append(f"{where}: id {fid!r} must be lower-case words joined by . or -")
    pattern = _compile(entry.get("pattern"), "pattern", where, problems)
    unless = _compile(entry["unless"], "unless", where, problems) if "unless" in entry else None
    keywords = entry.get("keywords", [])
    if not isinstance(keywords, list) or not all(isinstance(k, str) and _KEYWORD.fullmatch(k) for k in keywords):
        problems.append(f"{where}: keywords must be a list of lower-case words ([a-z0-9], 2 or more)")
        keywords = []
    object_ids = entry.get("object_id", [])
    if not isinstance(object_ids, list) or not all(
        isinstance(o, str) and _OID.fullmatch(o) and enterprise_of(o) is not None for o in object_ids
    ):
        problems.append(f"{where}: object_id must be a list of OIDs under 1.3.6.1.4.1 (enterprises)")
        object_ids = []
    product = _text(entry, "product", where, problems, True) or ""
    if product and not _SLUG.fullmatch(product):
        problems.append(f"{where}: product {product!r} must be a slug (lower-case words joined by -)")
    category = entry.get("category")
    if category not in CATEGORIES:
        problems.append(f"{where}: category {category!r} is not one of {', '.join(sorted(CATEGORIES))}")
    if entry.get("confidence") not in CONFIDENCES:
        problems.append(f"{where}: confidence must be one of {', '.join(CONFIDENCES)}")
    templates = {k: _text(entry, k, where, problems) for k in ("version", "cycle", "model")}
    kind = entry.get("kind", DEFAULT_KIND[field])
    if kind not in KINDS:
        problems.append(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    cycles = entry.get("cycles", [])
    if not isinstance(cycles, list) or not all(isinstance(c, str) and "/" in c for c in cycles):
        problems.append(f'{where}: cycles must be a list of "product/cycle" strings (one of them)')
        cycles = []
    elif cycles and templates["cycle"]:
        problems.append(f"{where}: give cycle or cycles, not both")
    if pattern is not None:
        for key, template in [*templates.items(), *(("cycles", c) for c in cycles)]:
            names = _TEMPLATE_FIELD.findall(template or "")
            if "{" in _TEMPLATE_FIELD.sub("", template or "") or "}" in _TEMPLATE_FIELD.sub("", template or ""):
                problems.append(f"{where}: {key} template has a stray brace")
            problems.extend(f"{where}: {key} names group {n!r}, which the pattern lacks"
                            for n in names if n not in pattern.groupindex)  # fmt: skip
        if not keywords and not object_ids and not required_words(pattern.pattern):
            problems.append(f"{where}: no literal word in the pattern to index it by: give keywords or object_id")
    if len(problems) > before or pattern is None:
        return None
    return Fingerprint(fid, field, pattern, unless, tuple(keywords), tuple(object_ids), product,
                       str(entry["vendor"]), str(entry["family"]), templates["version"], templates["cycle"],
                       tuple(cycles), templates["model"], str(category), str(entry["confidence"]), str(kind),
                       where)  # fmt: skip


def _files(root: Path) -> list[Path]:
    """Every fingerprint file in precedence order: fields in order, then by name, catch-alls (zz-) last."""
    found = []
    for field in FIELDS:
        folder = root / field
        if folder.is_dir():
            found += sorted(folder.glob("*.toml"), key=lambda p: (p.name.startswith("zz-"), p.name))
    return found


def _check_example(db: Database, fp: Fingerprint, example: Any, where: str, problems: list[str]) -> None:
    if not isinstance(example, dict):
        problems.append(f"{where}: example must be a table")
        return
    _unknown_keys(example, EXAMPLE_KEYS, "example", where, problems)
    text = example.get("text")
    if not isinstance(text, str) or not isinstance(example.get("source"), str) or not example.get("source"):
        if "text" in example and "source" in example:
            problems.append(f"{where}: example text and source must be strings (source: where the text came from)")
        return
    slot = _slot(fp.kind, fp.product)
    got = next((m for m in db.match_all(fp.field, text, example.get("object_id")) if _slot(m.kind, m.product) == slot),
               None)  # fmt: skip
    if got is None or got.id != fp.id:
        problems.append(f"{where}: example is matched by {got.id if got else 'nothing'}, not {fp.id}")
        return
    for key in RESULT_FIELDS:
        value = getattr(got, key)
        value = (list(value) or None) if isinstance(value, tuple) else value
        if value != example.get(key):
            problems.append(f"{where}: example gives {key} {value!r}, expected {example.get(key)!r}")


def load(root: Path = ROOT, examples_run: bool = True) -> Database:
    """Reads and lints every file under `root`, and runs every example (unless `examples_run` is False: the
    shipped database's examples run in its tests and `posture fingerprints lint`, not at every start);
    FingerprintError lists all problems."""
    problems: list[str] = []
    entries: list[Fingerprint] = []
    enterprises: dict[int, str] = {}
    examples: list[tuple[Fingerprint, Any, str]] = []
    seen: dict[str, str] = {}
    for path in _files(root):
        name = str(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
        try:
            raw = path.read_text(encoding="utf-8")
            data = tomllib.loads(raw)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            problems.append(f"{name}:1: cannot read: {exc}")
            continue
        lines = raw.splitlines()
        _unknown_keys(data, FILE_KEYS, "file", f"{name}:1", problems)
        if data.get("field") != path.parent.name:
            at = _line_of(lines, r"field\s*=")
            problems.append(f"{name}:{at}: field must be {path.parent.name!r}, its folder")
        table = data.get("enterprise", {})
        for number, vendor in table.items() if isinstance(table, dict) else []:
            if not number.isdigit() or not isinstance(vendor, str):
                at = _line_of(lines, r"\[enterprise\]")
                problems.append(f'{name}:{at}: enterprise is number = "vendor"')
            else:
                enterprises[int(number)] = vendor
        found = data.get("fingerprint", [])
        line = 0
        for entry in found if isinstance(found, list) else []:
            fid = entry.get("id") if isinstance(entry, dict) else None
            line = _line_of(lines, rf"\s*id\s*=\s*[\"']{re.escape(str(fid))}[\"']", line) if fid else line + 1
            where = f"{name}:{line}"
            if not isinstance(entry, dict):
                continue
            if isinstance(fid, str) and fid in seen:
                problems.append(f"{where}: duplicate id {fid!r} (first at {seen[fid]})")
            seen.setdefault(str(fid), where)
            fp = _read_entry(entry, path.parent.name, where, problems)
            example_line = line - 1
            listed = entry.get("example", [])
            if fp is not None and (not isinstance(listed, list) or not listed):
                problems.append(f"{where}: a fingerprint needs at least one [[fingerprint.example]]")
            for example in listed if isinstance(listed, list) else []:
                example_line = _line_of(lines, r"\s*text\s*=", example_line + 1)
                if fp is not None:
                    examples.append((fp, example, f"{name}:{example_line}"))
            if fp is not None:
                entries.append(fp)
    db = _index(entries, enterprises)
    for fp, example, where in examples if examples_run else []:
        _check_example(db, fp, example, where, problems)
    if problems:
        raise FingerprintError(problems)
    return db


def _index(entries: list[Fingerprint], enterprises: dict[int, str]) -> Database:
    """Each entry under its sysObjectID enterprises, its keywords, or the rarest word its pattern requires."""
    words = {i: required_words(fp.pattern.pattern) for i, fp in enumerate(entries)}
    frequency: dict[str, int] = {}
    for found in words.values():
        for w in set(found):
            frequency[w] = frequency.get(w, 0) + 1
    index: dict[str, dict[str, list[int]]] = {}
    for i, fp in enumerate(entries):
        if fp.object_ids:
            keys = sorted({f"oid:{enterprise_of(o)}" for o in fp.object_ids})
        elif fp.keywords:
            keys = list(fp.keywords)
        else:
            keys = [min(words[i], key=lambda w: (w in _COMMON, frequency[w], -len(w)))]
        for key in keys:
            index.setdefault(fp.field, {}).setdefault(key, []).append(i)
    frozen = {field: {k: tuple(v) for k, v in keyed.items()} for field, keyed in index.items()}
    return Database(tuple(entries), frozen, enterprises)


@functools.cache
def database() -> Database:
    """The shipped database, loaded and linted once per process (its examples run in the tests and the lint,
    which every change passes: running 1,300 examples at each start would cost a second and a half)."""
    return load(ROOT, examples_run=False)


def match(field: str, text: str | bytes, object_id: str | None = None) -> Fingerprinted | None:
    """The shipped database's first match for a device string (see Database.match)."""
    return database().match(field, text, object_id)


def match_all(field: str, text: str | bytes, object_id: str | None = None) -> list[Fingerprinted]:
    """The shipped database's first match of each kind (see Database.match_all)."""
    return database().match_all(field, text, object_id)
