"""posture's config file (TOML), read and checked in one place for `posture config check` and every
command that loads it (`posture run` above all), so a file the check passes never fails a later command.

Every key's type and shape is checked when the file is loaded; the first problem is refused in one line
naming FILE:LINE. Each stage owns its table: scanner checks [scan], [log] and [jobs.NAME]; a later stage
registers the check of its own table with `register_table` (rules: [rules]) when its commands load, so
the scanner never imports it. A table nobody registered is refused as unknown, as is a string holding a
control character (a NUL in a path would otherwise stop a scheduled run with a traceback).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scanner.errors import PostureError
from scanner.inputs import key_line, load_toml
from scanner.model import printable
from scanner.paths import default_config_path

MAX_CONFIG_BYTES = 1 << 20
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class ConfigError(ValueError):
    """A bad value in one table; `key` (a key of that table) places the error on its line."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


TableCheck = Callable[[dict[str, Any]], None]
_TABLES: dict[str, TableCheck] = {}
_TABLE_SOURCES: list[Callable[[], None]] = []


def register_table(name: str, check: TableCheck) -> None:
    """A later stage's check of its own top-level table; it raises `ConfigError` at the first problem."""
    _TABLES[name] = check


def register_table_source(load: Callable[[], None]) -> None:
    """How the later stages get loaded (the CLI loads them only when needed): asked before a table is
    called unknown, so `posture config check` knows [rules] or [report] whichever command runs."""
    _TABLE_SOURCES.append(load)


@dataclass(frozen=True)
class Config:
    data: dict[str, Any]
    text: str  # for line numbers in later errors (credential names are checked against the vault later)
    path: Path


def read_config(path: Path | None) -> Config:
    """The config file (given, or the default one), checked; a missing default file is an empty config."""
    chosen = path or default_config_path()
    if not chosen.exists():
        if path is not None:
            raise PostureError(f"no such config file: {chosen}", "check --config")
        return Config({}, "", chosen)
    data, text = load_toml(chosen, MAX_CONFIG_BYTES, "config file")
    check_config(data, text, str(chosen))
    return Config(data, text, chosen)


def load_config(path: Path | None) -> dict[str, Any]:
    """The checked config's data (see `read_config`)."""
    return read_config(path).data


def check_config(data: dict[str, Any], text: str, where: str) -> None:
    """Every table and key of a parsed config; the first problem raised as FILE:LINE: message."""
    from scanner.jobs import parse_jobs

    for keys, value in _strings(data):
        if _CONTROL.search(value):
            line = key_line(text, keys[:-1], keys[-1])
            shown = printable(".".join(keys), 80)
            raise PostureError(f"{where}:{line}: {shown} holds a control character", "fix the config file")
    own: dict[str, TableCheck | None] = {
        "scan": _check_scan, "log": _check_log, "files": _check_files, "directory": _check_directory, "jobs": None,
        "store": _check_store, "sites": _check_sites,
    }
    if any(name not in own and name not in _TABLES for name in data):
        for load in _TABLE_SOURCES:
            load()
    tables = {**own, **_TABLES}
    for name, table in data.items():
        if name not in tables:
            raise PostureError(f"{where}:{key_line(text, (name,))}: unknown table [{printable(name, 40)}]",
                               f"the config has {', '.join(f'[{t}]' for t in sorted(tables))}")  # fmt: skip
        if not isinstance(table, dict):
            raise PostureError(f"{where}:{key_line(text, (name,))}: {name} must be a table ([{name}])",
                               "see the README for its keys")  # fmt: skip
        check = tables[name]
        if check is None:
            continue
        try:
            check(table)
        except ConfigError as exc:
            raise PostureError(f"{where}:{key_line(text, (name,), exc.key)}: {exc}", "fix the config file") from None
    parse_jobs(data, text, where)  # errors name their own line; credentials are checked when jobs are used


def _strings(data: dict[str, Any]) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every string value with the keys leading to it (list items under their list's key), in file order;
    iterative, as the data may be nested as deep as tomllib allowed."""
    stack: list[tuple[tuple[str, ...], Any]] = [((), data)]
    while stack:
        keys, value = stack.pop()
        if isinstance(value, str):
            yield keys, value
        elif isinstance(value, dict):
            stack.extend(reversed([((*keys, str(k)), v) for k, v in value.items()]))
        elif isinstance(value, list):
            stack.extend(reversed([(keys, v) for v in value]))


def _check_scan(table: dict[str, Any]) -> None:
    from scanner.targets import parse_target

    unknown = sorted(set(table) - {"scope"})
    if unknown:
        raise ConfigError(f"[scan] unknown key {unknown[0][:40]!r} ([scan] has scope)", unknown[0])
    scope = table.get("scope", [])
    if not isinstance(scope, list) or not all(isinstance(s, str) for s in scope):
        raise ConfigError('[scan] scope must be a list of networks, e.g. scope = ["10.20.0.0/16"]', "scope")
    try:  # the form only: a hostname in the scope is resolved when a scan uses it, not on every load
        for part in (p for spec in scope for p in spec.split(",") if p.strip()):
            parse_target(part, resolve=False)
    except PostureError as exc:
        raise ConfigError(f"[scan] scope: {exc.message}", "scope") from None


def _check_sites(table: dict[str, Any]) -> None:
    """[sites.NAME]: a site the queue scans (`posture run JOB --queue`, README "Many sites"): its scope (the
    only networks its chunks may touch), max_rate (packets per second for the whole site) and cap (chunks
    at once at the site; the rate is split across them)."""
    from scanner.jobs import parse_site

    for name, site in table.items():
        try:
            parse_site(name, site)
        except PostureError as exc:
            raise ConfigError(f"[sites.{printable(name, 40)}] {exc.message}", name) from None


MAX_OU_MAPPINGS = 1000


def _check_directory(table: dict[str, Any]) -> None:
    """[directory]: stale_days (whole days), and ou_sites / ou_services: OU distinguished name -> the site or
    business service of the computers under it (`posture import ad`), e.g.
    ou_sites = { "OU=Annex,DC=corp,DC=example" = "Annex" }."""
    unknown = sorted(set(table) - {"stale_days", "ou_sites", "ou_services"})
    if unknown:
        raise ConfigError(f"[directory] unknown key {unknown[0][:40]!r} ([directory] has stale_days, ou_sites, "
                          "ou_services)", unknown[0])  # fmt: skip
    check_directory_values(table)


def check_directory_values(table: dict[str, Any]) -> None:
    """stale_days, ou_sites and ou_services where given: of [directory], or of a job's [jobs.NAME.ad]."""
    days = table.get("stale_days", 180)
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 36_500:
        raise ConfigError("[directory] stale_days must be a whole number of days from 1 to 36500", "stale_days")
    for key in ("ou_sites", "ou_services"):
        mapping = table.get(key, {})
        if not isinstance(mapping, dict) or len(mapping) > MAX_OU_MAPPINGS:
            raise ConfigError(f'[directory] {key} must be a table of OU -> name, e.g. {key} = '
                              '{ "OU=Annex,DC=corp,DC=example" = "Annex" }', key)  # fmt: skip
        for dn, name in mapping.items():
            if not re.match(r"^(?:OU|CN|DC)=[^=]{1,200}(?:,\s?(?:OU|CN|DC)=[^=]{1,200}){0,30}$", dn, re.IGNORECASE) \
                    or len(dn) > 1024:  # fmt: skip
                raise ConfigError(f"[directory] {key}: {printable(dn, 60)!r} is not an OU's distinguished name "
                                  "(OU=...,DC=...)", key)  # fmt: skip
            if not isinstance(name, str) or not 0 < len(name) <= 128:
                raise ConfigError(f"[directory] {key}: the name for {printable(dn, 60)!r} must be text "
                                  "(1 to 128 characters)", key)  # fmt: skip


def _check_log(table: dict[str, Any]) -> None:
    if set(table) - {"file"} or not isinstance(table.get("file", ""), str):
        raise ConfigError('[log] takes one key, file (a path), e.g. file = "/var/log/posture.log"',
                          next(iter(sorted(set(table) - {"file"})), "file"))  # fmt: skip


def _check_store(table: dict[str, Any]) -> None:
    """[store] url: the inventory on PostgreSQL (when --db and POSTURE_DB are not given)."""
    from scanner.db import URL_SCHEMES

    url = table.get("url", "")
    if set(table) - {"url"} or not isinstance(url, str) or (url and not url.startswith(URL_SCHEMES)):
        raise ConfigError('[store] takes one key, url (a postgresql:// URL, its password in PGPASSFILE), e.g. '
                          'url = "postgresql://posture@db.example/posture"',
                          next(iter(sorted(set(table) - {"url"})), "url"))  # fmt: skip


def _check_files(table: dict[str, Any]) -> None:
    """[files] group: the group that may read what posture writes (0640 files, 0750 folders)."""
    from scanner.safefs import group_id

    if set(table) - {"group"} or not isinstance(table.get("group", ""), str):
        raise ConfigError('[files] takes one key, group (share what posture writes with it), e.g. group = "posture"',
                          next(iter(sorted(set(table) - {"group"})), "group"))  # fmt: skip
    if table.get("group"):
        try:
            group_id(table["group"])
        except PostureError as exc:
            raise ConfigError(exc.message, "group") from None
