"""An SNMP scan: collect many devices, save them in batches, record each device's outcome.

Results are committed every few devices (and at the end), each batch in one transaction with the
per-device status rows, so a scan stopped half-way keeps the devices it finished and says so.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from scanner.agents.snmp import HR_SW_TYPES, SnmpCredential, SnmpOptions, SnmpResult, collect_many, device_text
from scanner.errors import Interrupted
from scanner.model import MAX_EVIDENCE, bound
from scanner.scan import ProgressReporter, signals_interrupt
from scanner.store import Ingest, PreparedHost, Store, utc_now

COMMIT_EVERY = 25  # devices per transaction
MAX_EVIDENCE_ROWS = 200  # interfaces and addresses kept in an observation's evidence


@dataclass
class SnmpSummary:
    scan_id: int
    total: int = 0
    done: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    new_assets: int = 0
    software: int = 0
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # address, status, detail

    @property
    def answered(self) -> int:
        """Devices that gave an inventory (ok or partial)."""
        return self.by_status.get("ok", 0) + self.by_status.get("partial", 0)


def _text(value: Any, limit: int = 512) -> tuple[str | None, str | None]:
    """(text, hex of the raw bytes when they were not UTF-8)."""
    if value is None:
        return None, None
    if not isinstance(value, bytes):
        return bound(str(value), limit), None
    text, utf8 = device_text(value, limit)
    return text, None if utf8 else value[: limit * 2].hex()


def _number(value: Any) -> int | None:
    """A device's number as stored: an int (already bounded to 64 bits by the decoder), else nothing."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _mac(value: Any) -> str | None:
    if not isinstance(value, bytes) or len(value) != 6 or value in (b"\0" * 6, b"\xff" * 6) or value[0] & 1:
        return None
    return ":".join(f"{b:02x}" for b in value)


def prepare_snmp(result: SnmpResult) -> tuple[PreparedHost, list[str]]:
    """A device's answers as inventory rows; returns the prepared sighting and its sysName (if any)."""
    system: dict[str, Any] = {}
    for key, value in result.system.items():
        text, raw = _text(value, MAX_EVIDENCE if key == "sysDescr" else 512)
        system[key] = text
        if raw:
            system[f"{key}_hex"] = raw
    interfaces = result.tables.get("interfaces", [])
    macs = list(dict.fromkeys(m for m in (_mac(i.get("mac")) for i in interfaces) if m))
    sysname = (system.get("sysName") or "").strip().lower()[:253]
    evidence = {
        "status": result.status,
        "credential": result.credential,
        "snmp_version": result.version,
        "default_community": result.default_community,
        "system": system,
        "interfaces": [
            {
                "descr": _text(i.get("descr"), 128)[0],
                "type": _number(i.get("type")),
                "speed": _number(i.get("speed")),
                "mac": _mac(i.get("mac")),
                "status": _number(i.get("status")),
            }
            for i in interfaces[:MAX_EVIDENCE_ROWS]
        ],
        "addresses": [_text(a.get("address"), 64)[0] for a in result.tables.get("addresses", [])[:MAX_EVIDENCE_ROWS]],
        "counts": {table: len(rows) for table, rows in result.tables.items()},
        "cut_off": result.cut_off,
    }
    software: list[tuple[Any, ...]] = []
    if system.get("sysDescr"):
        extra = json.dumps({"sysObjectID": system.get("sysObjectID")})
        software.append(
            (
                "os",
                system["sysDescr"],
                None,
                None,
                None,
                None,
                "[]",
                None,
                "sysDescr",
                extra,
                system.get("sysDescr_hex"),
            )
        )
    for row in result.tables.get("software", []):
        name, raw = _text(row.get("name"))
        if name:
            sw_type = row.get("type")
            details = {"type": HR_SW_TYPES.get(sw_type, sw_type) if isinstance(sw_type, int) else None,
                     "installed": _hr_date(row.get("date"))}  # fmt: skip
            software.append(("application", name, None, None, None, None, "[]", None, "hrSWInstalled",
                             json.dumps(details), raw))  # fmt: skip
    for row in result.tables.get("running", []):
        name, raw = _text(row.get("name"))
        if name:
            software.append(("process", name, None, None, None, None, "[]", None, "hrSWRun", None, raw))
    for row in result.tables.get("entities", []):
        facts = {k: _text(row.get(k))[0] for k in ("descr", "name", "model", "serial", "manufacturer",
                                                    "hardware_rev", "firmware_rev", "software_rev")}  # fmt: skip
        if not any(facts[k] for k in ("model", "serial", "hardware_rev", "firmware_rev", "software_rev")):
            continue  # ports, slots and sensors with nothing to identify
        software.append(("hardware", facts["descr"] or facts["name"] or "", facts["manufacturer"], facts["model"],
                         facts["software_rev"] or facts["firmware_rev"], None, "[]", None, "entPhysical",
                         json.dumps({**facts, "class": _number(row.get("class"))}), None))  # fmt: skip
    prepared: PreparedHost = ([result.address], macs, [], None, False, evidence, [], software)
    return prepared, [sysname] if sysname else []


def _hr_date(value: Any) -> str | None:
    """hrSWInstalledDate is a DateAndTime octet string: year (2 bytes), month, day, hour, minute."""
    if not isinstance(value, bytes) or len(value) < 6:
        return None
    year = int.from_bytes(value[:2], "big")
    if year == 0:
        return None
    return f"{year:04d}-{value[2]:02d}-{value[3]:02d}T{value[4]:02d}:{value[5]:02d}"


def run_snmp_scan(
    store: Store,
    addresses: Sequence[str],
    credentials: Sequence[SnmpCredential],
    options: SnmpOptions,
    reporter: ProgressReporter,
    targets: Sequence[str] = (),
) -> SnmpSummary:
    """Collect every address and save what each device said; the scan row says how it ended."""
    scan_id = store.start_scan(
        "snmp-scan",
        "snmp",
        targets=list(targets) or list(addresses),
        options={"credentials": [c.name for c in credentials], "port": options.port, "timeout": options.timeout,
                 "retries": options.retries, "deadline": options.deadline, "concurrency": options.concurrency},
        hosts_total=len(addresses),
    )  # fmt: skip
    summary = SnmpSummary(scan_id, total=len(addresses))
    pending: list[tuple[SnmpResult, tuple[PreparedHost, list[str]] | None]] = []
    reporter.start(len(addresses), 1, 0)

    def commit() -> None:
        if not pending:
            return
        with store.transaction() as conn, Ingest(conn, scan_id, "snmp", fallback_time=utc_now()) as ingest:
            rows = []
            for result, ready in pending:
                asset_id = None
                if ready is not None:
                    ingest.add_prepared(*ready)
                    asset_id = ingest.last_asset_id
                rows.append((scan_id, result.address, "snmp", result.status, bound(result.detail, 512),
                             result.credential, round(result.seconds, 3), result.requests, asset_id))  # fmt: skip
            ingest.flush()
            conn.executemany("INSERT INTO scan_targets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            conn.execute(
                "UPDATE scans SET hosts_done = hosts_done + ?, hosts_up = hosts_up + ? WHERE id = ?",
                (len(pending), sum(ready is not None for _, ready in pending), scan_id),
            )
        summary.new_assets += ingest.stats.new_assets
        summary.software += ingest.stats.software
        pending.clear()

    last_commit = time.monotonic()

    def on_result(result: SnmpResult) -> None:
        nonlocal last_commit
        ready = None
        if result.status in ("ok", "partial"):
            try:  # what a device said is hostile: if it cannot be made into rows, that device is an error
                ready = prepare_snmp(result)
            except Exception as exc:
                result.status, result.detail = "error", f"its answers could not be stored: {type(exc).__name__}"
        pending.append((result, ready))
        summary.done += 1
        summary.by_status[result.status] = summary.by_status.get(result.status, 0) + 1
        if result.status not in ("ok",):
            summary.problems.append((result.address, result.status, result.detail or "; ".join(result.cut_off)))
        if len(pending) >= COMMIT_EVERY or time.monotonic() - last_commit > 2:
            commit()
            last_commit = time.monotonic()
            reporter.chunk_done(summary.done, summary.total, summary.done, summary.answered)
        reporter.update(summary.done)

    try:
        with signals_interrupt():
            collect_many(addresses, credentials, options, on_result)
            commit()
    except KeyboardInterrupt:
        reporter.finish()
        commit()  # devices that finished before the signal are whole: keep them
        store.finish_scan(scan_id, "interrupted", "stopped by a signal; devices already saved are kept")
        raise Interrupted(f"SNMP scan {scan_id} interrupted after {summary.done} of {summary.total} devices") from None
    except BaseException as exc:  # a bug or a failing disk: the scan row says so, never stays 'running'
        reporter.finish()
        with suppress(Exception):
            store.finish_scan(scan_id, "failed", f"{type(exc).__name__}: {str(exc)[:200]}")
        raise
    reporter.finish()
    store.finish_scan(scan_id, "complete")
    return summary
