"""The SNMP source: many devices asked at once (`scanner.agents.snmp`), their answers made into rows.

Results go to the runner every few devices or two seconds, each batch with its per-device outcomes (ok,
partial, auth-failure, no-response, timeout, error), so a run stopped half-way keeps the devices it
finished and says so. Units are the same address chunks nmap uses; a unit is done when all its devices are.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from typing import Any

from scanner.agents.snmp import (
    HR_SW_TYPES,
    PUBLIC,
    SnmpCredential,
    SnmpOptions,
    SnmpResult,
    collect_many,
    device_text,
)
from scanner.model import MAX_EVIDENCE, bound
from scanner.sources import Batch, Outcome, Progress, Request, SourceError
from scanner.store import PreparedHost

COMMIT_EVERY = 25  # devices per transaction
MAX_EVIDENCE_ROWS = 200  # interfaces and addresses kept in an observation's evidence


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


class SnmpSource:
    name = "snmp"
    kind = "snmp-scan"
    noun = "devices"
    whole = False
    resume = "posture snmp --resume {scan_id}"

    def __init__(self, credentials: Sequence[SnmpCredential] | None = None) -> None:
        self._credentials = list(credentials) if credentials else None  # else read by name from the vault
        self._stop = threading.Event()

    def check(self, request: Request) -> str | None:
        """The credentials named exist in the vault (a missing one fails here, before anything is sent)."""
        self._credentials = self._credentials or _credentials(request.options.get("creds") or [])
        return None

    def units(self, request: Request) -> list[tuple[list[str], int]]:
        size = max(1, request.chunk_size)
        return [(request.addresses[i : i + size], len(request.addresses[i : i + size]))
                for i in range(0, len(request.addresses), size)]  # fmt: skip

    def describe(self, request: Request, unit: list[str]) -> list[str]:
        o = _options(request.options)
        return ["snmp", f"--port {o.port}", f"--timeout {o.timeout}", f"--retries {o.retries}",
                f"--creds {','.join(request.options.get('creds') or ['public'])}", *unit]  # fmt: skip

    def collect(
        self, request: Request, units: list[tuple[int, list[str], int]], progress: Progress
    ) -> Generator[Batch, None, None]:
        credentials = self._credentials or _credentials(request.options.get("creds") or [])
        unit_of = {address: seq for seq, targets, _ in units for address in targets}
        left = {seq: len(targets) for seq, targets, _ in units}
        results: queue.Queue[SnmpResult | BaseException | None] = queue.Queue()

        def work() -> None:
            try:
                collect_many(list(unit_of), credentials, _options(request.options), results.put, self._stop)
            except BaseException as exc:  # handed to the runner's thread, which raises it
                results.put(exc)
            finally:
                results.put(None)

        for empty in [seq for seq, n in left.items() if n == 0]:  # every device of it was saved before a resume
            yield Batch((), unit=empty)
        worker = threading.Thread(target=work, name="posture-snmp", daemon=True)
        worker.start()
        hosts: list[PreparedHost] = []
        names: list[list[str]] = []
        outcomes: list[Outcome] = []
        finished: list[int] = []
        last = time.monotonic()
        try:
            while True:
                item: object
                try:
                    item = results.get(timeout=0.25)
                except queue.Empty:
                    item = _IDLE
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, SnmpResult):
                    _outcome(item, hosts, names, outcomes)
                    seq = unit_of.get(item.address)
                    if seq is not None:
                        left[seq] -= 1
                        if left[seq] == 0:
                            finished.append(seq)
                    progress(len(outcomes))
                if outcomes and (len(outcomes) >= COMMIT_EVERY or finished or time.monotonic() - last > 2):
                    yield from _batches(hosts, names, outcomes, finished)
                    hosts, names, outcomes, finished = [], [], [], []
                    last = time.monotonic()
            yield from _batches(hosts, names, outcomes, finished)
        finally:
            self._stop.set()
            worker.join(timeout=30)

    def cancel(self) -> None:
        self._stop.set()

    def job_request(self, settings: dict[str, Any]) -> Request:
        raise SourceError("the snmp method takes the job's targets and creds; it has no table of its own")


_IDLE = object()  # no device finished in the last quarter second


def _credentials(names: Sequence[str]) -> list[SnmpCredential]:
    from scanner.vault import snmp_credential

    return [snmp_credential(name) for name in names] or [PUBLIC]


def _options(options: dict[str, Any]) -> SnmpOptions:
    keys = ("port", "timeout", "retries", "deadline", "concurrency")
    return SnmpOptions(**{k: options[k] for k in keys if options.get(k) is not None})


def _outcome(result: SnmpResult, hosts: list[PreparedHost], names: list[list[str]], outcomes: list[Outcome]) -> None:
    """A device's result as a sighting (when it answered) and its outcome row."""
    index = None
    if result.status in ("ok", "partial"):
        try:  # what a device said is hostile: if it cannot be made into rows, that device is an error
            prepared, sysnames = prepare_snmp(result)
            hosts.append(prepared)
            names.append(sysnames)
            index = len(hosts) - 1
        except Exception as exc:
            result.status, result.detail = "error", f"its answers could not be stored: {type(exc).__name__}"
    detail = result.detail or ("; ".join(result.cut_off) if result.status != "ok" else None)
    outcomes.append(Outcome(result.address, result.status, detail, result.credential, result.seconds,
                            result.requests, index))  # fmt: skip


def _batches(
    hosts: list[PreparedHost], names: list[list[str]], outcomes: list[Outcome], finished: list[int]
) -> Iterator[Batch]:
    """The devices so far as one batch (marking the first unit they finish), then one empty batch for each
    further unit finished at the same time."""
    if outcomes or finished:
        yield Batch(hosts, done=len(outcomes), unit=finished[0] if finished else None, outcomes=outcomes,
                    sysnames=names)  # fmt: skip
    for seq in finished[1:]:
        yield Batch((), unit=seq)
