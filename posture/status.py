"""`posture status`: what the operator of a central server looks at first (issue 18 item 5).

Each site of the config (scope, rate budget, cap, how many collectors it trusts) with its queue depth, each
collector (trusted by the config, seen by the server, or both: when it last made a signed request, from where,
what it took and stored; STALE when that is longer ago than `--stale` minutes, "never" when a trusted key has
not been seen), and the queue jobs that failed for good.

Every string read from the database is hostile: collectors' names, versions and addresses came over the
network from collectors, and queue names and job arguments could have been written by anyone with the
database's password. Each goes through `printable` (no terminal escapes, no line breaks) and is bounded, in
the JSON as on screen.

The status needs no queue: on an SQLite inventory, or on a PostgreSQL one where `posture queue init` has not
run, it says so in one line and still shows the config's sites (a status check on a fresh server is not an
error). It never opens an SQLite file (a mistyped --db makes nothing), and only reads the PostgreSQL one.

The JSON (`--format json`) is one object, documented in README "Many sites":
  {"generated": ISO, "stale_minutes": N, "queue": "ready" | "sqlite" | "not initialised", "note": str | null,
   "sites": [{"site", "in_config", "scope", "max_rate", "cap", "collectors_trusted",
              "todo", "running", "done", "failed"}],        (the four counts null without a queue)
   "collectors": [{"site", "name", "key_id", "trusted", "first_seen", "last_seen", "age_seconds", "stale",
                   "address", "version", "chunks_taken", "bundles_stored"}],   (last_seen null: never seen)
   "failed_jobs": [{"id", "site", "task", "run", "chunk", "attempts"}]}
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from scanner.compat import UTC
from scanner.db import Target, is_url
from scanner.jobs import Site, all_sites
from scanner.model import printable

TEXT_LIMIT = 200  # any one string from the database, in the JSON
FAILED_SHOWN = 50  # failed jobs in the table (the JSON has them all)
COLLECTORS_READ = 10_000  # rows of `collectors` read: a bound, far above any real estate


def _text(value: object, limit: int = TEXT_LIMIT) -> str | None:
    return None if value is None else printable(value, limit)


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _when(value: object) -> datetime | None:
    """A stored `utc_now()` time, or None when the column holds something else."""
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def read_status(config: dict[str, Any], db: Target, stale_minutes: int, now: datetime | None = None) -> dict[str, Any]:
    """The status object (the module docstring's shape) from the config's sites and, when there is one, the
    central inventory's queue and collectors."""
    now = now or datetime.now(UTC)
    sites = all_sites(config)
    queue, note, rows, depth, failed = _read_queue(db)
    return {
        "generated": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "stale_minutes": stale_minutes,
        "queue": queue,
        "note": note,
        "sites": _sites(sites, depth if queue == "ready" else None),
        "collectors": _collectors(sites, rows, now, timedelta(minutes=stale_minutes)),
        "failed_jobs": [_failed(job) for job in failed],
    }


def _failed(job: dict[str, Any]) -> dict[str, Any]:
    """A failed queue job (`queue_status`'s row): its run and chunk from its arguments, when they are numbers."""
    args = job.get("args")
    args = args if isinstance(args, dict) else {}
    return {"id": _count(job.get("id")), "site": _text(job.get("site"), 64), "task": _text(job.get("task"), 64),
            "run": _count(args.get("scan_id")), "chunk": _count(args.get("seq")),
            "attempts": _count(job.get("attempts"))}  # fmt: skip


def _read_queue(db: Target) -> tuple[str, str | None, list[tuple[Any, ...]], dict[str, Any], list[dict[str, Any]]]:
    """(queue state, its one-line note, the `collectors` rows, depth by site, failed jobs)."""
    if not is_url(db):
        return "sqlite", "no queue: the inventory is SQLite (a queue needs the central PostgreSQL one)", [], {}, []
    from posture.queue import has_queue, queue_status
    from scanner.db import connect

    conn = connect(db, readonly=True)
    try:
        if not has_queue(conn):
            return "not initialised", f"no queue yet (run `posture queue init` once): {conn.name}", [], {}, []
        rows = [tuple(r) for r in conn.execute(
            "SELECT key_id, site, name, first_seen, last_seen, address, version, chunks_taken, bundles_stored "
            "FROM collectors ORDER BY site, name, key_id LIMIT ?", (COLLECTORS_READ,))]  # fmt: skip
    finally:
        conn.close()
    status = queue_status(db)
    return "ready", None, rows, status["sites"], status["failed"]


def _sites(sites: dict[str, Site], depth: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The config's sites, then any site the queue holds jobs for that the config no longer has."""
    out = []
    for name in [*sites, *sorted(set(depth or {}) - set(sites))]:
        site = sites.get(name)
        counts = (depth or {}).get(name, {})
        out.append({
            "site": _text(name, 64), "in_config": site is not None,
            "scope": list(site.scope) if site else None, "max_rate": site.max_rate if site else None,
            "cap": site.cap if site else None, "collectors_trusted": len(site.collectors) if site else None,
            **{key: None if depth is None else _count(counts.get(state, 0)) or 0
               for key, state in (("todo", "todo"), ("running", "doing"), ("done", "succeeded"),
                                  ("failed", "failed"))},
        })  # fmt: skip
    return out


def _collectors(sites: dict[str, Site], rows: list[tuple[Any, ...]], now: datetime,
                stale: timedelta) -> list[dict[str, Any]]:  # fmt: skip
    """Every collector the server has seen, and every key the config trusts that it has not."""
    trusted = {key: (site.name, name) for site in sites.values() for key, (name, _) in site.collectors.items()}
    out = []
    seen = set()
    for key_id, site, name, first_seen, last_seen, address, version, chunks, bundles in rows:
        seen.add(key_id)
        when = _when(last_seen)
        age = None if when is None else max(0, int((now - when).total_seconds()))
        out.append({
            "site": _text(site, 64), "name": _text(name, 64), "key_id": _text(key_id, 64),
            "trusted": trusted.get(key_id, ("",))[0] == site, "first_seen": _text(first_seen, 40),
            "last_seen": _text(last_seen, 40), "age_seconds": age,
            "stale": age is not None and age > stale.total_seconds(), "address": _text(address, 64),
            "version": _text(version, 64), "chunks_taken": _count(chunks), "bundles_stored": _count(bundles),
        })  # fmt: skip
    for key_id, (site, name) in sorted(trusted.items(), key=lambda kv: (kv[1], kv[0])):
        if key_id not in seen:
            out.append({"site": site, "name": _text(name, 64), "key_id": key_id, "trusted": True, "first_seen": None,
                        "last_seen": None, "age_seconds": None, "stale": False, "address": None, "version": None,
                        "chunks_taken": 0, "bundles_stored": 0})  # fmt: skip
    return sorted(out, key=lambda c: (str(c["site"]), str(c["name"]), str(c["key_id"])))


def age_text(seconds: int | None) -> str:
    """An age as people say it ("2 min ago"), or "never"."""
    if seconds is None:
        return "never"
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= 2 * size or (unit == "min" and seconds >= size):
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _cell(value: object, width: int) -> str:
    """A cell cut to `width` (the strings are printable already)."""
    text = "-" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _fit(line: str, width: int = 80) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


def status_lines(status: dict[str, Any]) -> list[str]:
    """The table, each line at most 80 columns."""
    lines = [status["note"], ""] if status["note"] else []
    lines += [f"{'SITE':<16} {'SCOPE':<20} {'RATE':>6} {'CAP':>3} {'KEYS':>4} {'TO DO':>6} {'RUNNING':>7} "
              f"{'FAILED':>6}"]  # fmt: skip
    for site in status["sites"]:
        scope = site["scope"] or []
        shown = (scope[0] + (f" +{len(scope) - 1}" if len(scope) > 1 else "")) if scope else "(not in config)"
        lines.append(f"{_cell(site['site'], 16):<16} {_cell(shown, 20):<20} {_cell(site['max_rate'], 6):>6} "
                     f"{_cell(site['cap'], 3):>3} {_cell(site['collectors_trusted'], 4):>4} "
                     f"{_cell(site['todo'], 6):>6} {_cell(site['running'], 7):>7} {_cell(site['failed'], 6):>6}")
    if not status["sites"]:
        lines.append("no [sites.NAME] in the config file")
    if status["collectors"]:
        lines += ["", f"{'COLLECTOR':<20} {'SITE':<16} {'LAST SEEN':<12} {'STATE':<9} {'CHUNKS':>8} {'BUNDLES':>8}"]
    for c in status["collectors"]:
        state = "untrusted" if not c["trusted"] else "STALE" if c["stale"] else "never" if c["last_seen"] is None \
            else "ok"  # fmt: skip
        age = age_text(c["age_seconds"]) if c["last_seen"] is None or c["age_seconds"] is not None else "?"
        lines.append(f"{_cell(c['name'], 20):<20} {_cell(c['site'], 16):<16} {age:<12} {state:<9} "
                     f"{_cell(c['chunks_taken'], 8):>8} {_cell(c['bundles_stored'], 8):>8}")  # fmt: skip
        seen = f"seen {c['last_seen']} from {c['address'] or '-'}" if c["last_seen"] else "not seen yet"
        lines.append(_fit(f"  key {c['key_id']}, {seen}"))
    failed = status["failed_jobs"]
    if failed:
        lines += ["", f"{'FAILED JOB':>10} {'SITE':<16} {'TASK':<16} {'RUN':>8} {'CHUNK':>6} {'ATTEMPTS':>8}"]
    for job in failed[:FAILED_SHOWN]:
        lines.append(f"{_cell(job['id'], 10):>10} {_cell(job['site'], 16):<16} {_cell(job['task'], 16):<16} "
                     f"{_cell(job['run'], 8):>8} {_cell(job['chunk'], 6):>6} {_cell(job['attempts'], 8):>8}")
    if len(failed) > FAILED_SHOWN:
        lines.append(f"... and {len(failed) - FAILED_SHOWN} more failed job(s) (--format json lists them all)")
    return [_fit(line) for line in lines]
