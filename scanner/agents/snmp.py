"""The SNMP discovery agent (pysnmp 7, asyncio): system group, interfaces, addresses, installed and running
software, and the physical inventory of many devices at once.

Why it is written this way (see shared FIELD-NOTES): one `SnmpEngine` for the whole run (a new engine costs
~53 ms of CPU); concurrency bounded by a semaphore (past ~100 requests in flight the client's receive buffer
overflows and replies are lost); our own walk loop instead of `bulk_walk_cmd`, which resends forever on a
timeout and can leave the subtree, so every walk here stops at the subtree's end, at a row cap, at a
non-increasing OID, or at the device's deadline, and says which. Values stay bytes until `device_text`
decodes them: devices answer in whatever code page they were set up with.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from scanner.agents.snmp_wire import ERROR_NAMES, GET, GETBULK, GETNEXT, WireClient, WireError, check_int, cut_string
from scanner.model import MAX_FIELD, bound

SYSTEM = {
    "sysDescr": "1.3.6.1.2.1.1.1.0",
    "sysObjectID": "1.3.6.1.2.1.1.2.0",
    "sysUpTime": "1.3.6.1.2.1.1.3.0",
    "sysContact": "1.3.6.1.2.1.1.4.0",
    "sysName": "1.3.6.1.2.1.1.5.0",
    "sysLocation": "1.3.6.1.2.1.1.6.0",
}
# Tables as (name, {column: OID}); IF-MIB, HOST-RESOURCES-MIB and ENTITY-MIB are not precompiled in
# pysnmp, so the OIDs are numeric.
TABLES: dict[str, dict[str, str]] = {
    "interfaces": {
        "descr": "1.3.6.1.2.1.2.2.1.2",
        "type": "1.3.6.1.2.1.2.2.1.3",
        "speed": "1.3.6.1.2.1.2.2.1.5",
        "mac": "1.3.6.1.2.1.2.2.1.6",
        "status": "1.3.6.1.2.1.2.2.1.8",
    },
    "addresses": {"address": "1.3.6.1.2.1.4.20.1.1"},
    "software": {
        "name": "1.3.6.1.2.1.25.6.3.1.2",
        "type": "1.3.6.1.2.1.25.6.3.1.4",
        "date": "1.3.6.1.2.1.25.6.3.1.5",
    },
    "running": {"name": "1.3.6.1.2.1.25.4.2.1.2"},
    "entities": {
        "descr": "1.3.6.1.2.1.47.1.1.1.1.2",
        "class": "1.3.6.1.2.1.47.1.1.1.1.5",
        "name": "1.3.6.1.2.1.47.1.1.1.1.7",
        "hardware_rev": "1.3.6.1.2.1.47.1.1.1.1.8",
        "firmware_rev": "1.3.6.1.2.1.47.1.1.1.1.9",
        "software_rev": "1.3.6.1.2.1.47.1.1.1.1.10",
        "serial": "1.3.6.1.2.1.47.1.1.1.1.11",
        "manufacturer": "1.3.6.1.2.1.47.1.1.1.1.12",
        "model": "1.3.6.1.2.1.47.1.1.1.1.13",
    },
}
MAX_ROWS = {"interfaces": 2000, "addresses": 2000, "software": 5000, "running": 1000, "entities": 2000}
HR_SW_TYPES = {1: "unknown", 2: "operatingSystem", 3: "deviceDriver", 4: "application"}


@dataclass(frozen=True)
class SnmpCredential:
    """What a device is asked with. The secret fields never reach a repr, a log line or an exception."""

    name: str
    version: str  # "1", "2c" or "3"
    community: str | None = field(default=None, repr=False)
    user: str | None = None
    auth_protocol: str | None = None  # SHA, SHA224, SHA256, SHA384, SHA512, MD5
    auth_key: str | None = field(default=None, repr=False)
    priv_protocol: str | None = None  # AES, AES192, AES256, DES
    priv_key: str | None = field(default=None, repr=False)
    context: str = ""


# Communities devices ship with; a device answering one is recorded (the flag, never the community).
DEFAULT_COMMUNITIES = frozenset({"public", "private", "community", "snmp", "cisco", "admin", "manager"})
PUBLIC = SnmpCredential(name="public (default)", version="2c", community="public")


@dataclass
class SnmpOptions:
    port: int = 161
    timeout: float = 2.0
    retries: int = 1
    deadline: float = 60.0  # per device, all requests included
    concurrency: int = 64
    max_repetitions: int = 25
    running: bool = True  # hrSWRunName: cheap on most devices, capped anyway


@dataclass
class SnmpResult:
    """What one device said. `status`: ok, partial, auth-failure, no-response, timeout or error."""

    address: str
    status: str = "no-response"
    detail: str | None = None
    credential: str | None = None
    version: str | None = None
    system: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    cut_off: list[str] = field(default_factory=list)
    seconds: float = 0.0
    requests: int = 0
    default_community: bool = False  # the device answered a factory-default community (a finding)


class _AuthFailure(Exception):
    pass


class _NoResponse(Exception):
    pass


def device_text(value: bytes, limit: int = MAX_FIELD) -> tuple[str, bool]:
    """Best-effort text of a device string: UTF-8 when it is, else Windows-1252 (what old Windows sends).

    Returns (text, was_utf8); callers keep the raw bytes (as hex) beside text that was not UTF-8, so a
    GBK or Shift-JIS string can still be decoded properly later.
    """
    try:
        return bound(value.decode("utf-8"), limit) or "", True
    except UnicodeDecodeError:
        return bound(value.decode("cp1252", errors="replace"), limit) or "", False


def _oid(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def _value(value: Any) -> Any:
    """pysnmp value -> bytes (strings, MACs), int (numbers), str (OIDs), None (no such object/instance)."""
    kind = value.__class__.__name__
    if kind in ("NoSuchObject", "NoSuchInstance", "EndOfMibView", "Null"):
        return None
    if kind in ("OctetString", "Opaque", "Bits"):
        return cut_string(bytes(value))
    if kind == "ObjectIdentifier" or kind == "ObjectName":
        return ".".join(str(p) for p in value)
    if kind == "IpAddress":
        return ".".join(str(b) for b in bytes(value)[:16])
    try:
        return check_int(int(value))
    except (TypeError, ValueError):
        return bound(str(value), MAX_FIELD)


def _describe(exc: BaseException) -> str:
    """An exception as a detail line. Only posture's own messages are quoted: pysnmp's and pyasn1's may
    carry the key they could not use (pyasn1 quotes the string it failed to encode)."""
    if isinstance(exc, WireError | RuntimeError | _AuthFailure | _NoResponse):
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return type(exc).__name__


@dataclass(frozen=True)
class _WireAuth:
    """v1/v2c go through `snmp_wire`; the community stays out of any repr."""

    version: int
    community: bytes = field(repr=False)


class SnmpCollector:
    """Collects many devices with bounded concurrency: v1/v2c on one shared UDP socket (`snmp_wire`), v3 on
    one shared pysnmp engine. Create with `await SnmpCollector.create(...)` inside the event loop."""

    def __init__(self, options: SnmpOptions, wire: WireClient) -> None:
        from pysnmp.hlapi.v3arch import asyncio as hl

        self.hl = hl
        self.options = options
        self.engine = hl.SnmpEngine()
        self.wire = wire
        self.semaphore = asyncio.Semaphore(options.concurrency)

    @classmethod
    async def create(cls, options: SnmpOptions) -> SnmpCollector:
        return cls(options, await WireClient.open())

    def close(self) -> None:
        self.wire.close()
        self.engine.close_dispatcher()

    def _auth(self, cred: SnmpCredential) -> Any:
        hl = self.hl
        if cred.version in ("1", "2c"):
            return _WireAuth(0 if cred.version == "1" else 1, (cred.community or "").encode())
        auth = {
            None: hl.usmNoAuthProtocol, "MD5": hl.usmHMACMD5AuthProtocol, "SHA": hl.usmHMACSHAAuthProtocol,
            "SHA224": hl.usmHMAC128SHA224AuthProtocol, "SHA256": hl.usmHMAC192SHA256AuthProtocol,
            "SHA384": hl.usmHMAC256SHA384AuthProtocol, "SHA512": hl.usmHMAC384SHA512AuthProtocol,
        }[cred.auth_protocol]  # fmt: skip
        priv = {
            None: hl.usmNoPrivProtocol, "DES": hl.usmDESPrivProtocol, "AES": hl.usmAesCfb128Protocol,
            "AES192": hl.usmAesCfb192Protocol, "AES256": hl.usmAesCfb256Protocol,
        }[cred.priv_protocol]  # fmt: skip
        return hl.UsmUserData(cred.user or "", cred.auth_key, cred.priv_key, authProtocol=auth, privProtocol=priv)

    async def _request(self, kind: str, target: Any, auth: Any, context: Any, oids: Sequence[str],
                       result: SnmpResult, repetitions: int = 0) -> list[tuple[tuple[int, ...], Any]]:  # fmt: skip
        """One request; GETBULK asks for `repetitions` rows of every column (about 25 values a reply)."""
        result.requests += 1
        if isinstance(auth, _WireAuth):
            async with self.semaphore:
                reply = await self.wire.request(
                    (result.address, self.options.port), auth.version, auth.community,
                    {"get": GET, "next": GETNEXT, "bulk": GETBULK}[kind], [_oid(o) for o in oids],
                    self.options.timeout, self.options.retries, repetitions,
                )  # fmt: skip
            if reply is None:
                raise _NoResponse("no response before the timeout")
            status, index, binds = reply
            if status == 2:  # noSuchName: SNMPv1's end of the MIB
                return []
            if status:
                raise RuntimeError(f"agent error {ERROR_NAMES.get(status, status)} at varbind {index}")
            return binds
        hl = self.hl
        objects = [hl.ObjectType(hl.ObjectIdentity(o)) for o in oids]
        async with self.semaphore:
            if kind == "get":
                reply = await hl.get_cmd(self.engine, auth, target, context, *objects, lookupMib=False)
            elif kind == "next":
                reply = await hl.next_cmd(self.engine, auth, target, context, *objects, lookupMib=False)
            else:
                reply = await hl.bulk_cmd(self.engine, auth, target, context, 0, repetitions, *objects, lookupMib=False)
        error_indication, error_status, error_index, var_binds = reply
        if error_indication:
            name = type(error_indication).__name__
            if name in ("WrongDigest", "UnknownUserName", "AuthenticationFailure", "DecryptionError",
                        "UnsupportedSecurityLevel", "UnknownSecurityName"):  # fmt: skip
                raise _AuthFailure(f"{name}: the device refused the credential")
            if "timeout" in str(error_indication).lower():
                raise _NoResponse("no response before the timeout")
            raise RuntimeError(str(error_indication)[:200])
        if error_status and str(error_status) == "noSuchName":  # SNMPv1's end of the MIB
            return []
        if error_status:
            raise RuntimeError(f"agent error {error_status} at varbind {error_index}")
        return [(tuple(oid), _value(value)) for oid, value in var_binds]

    async def _walk(self, target: Any, auth: Any, context: Any, table: str, columns: dict[str, str],
                    bulk: bool, deadline: float, result: SnmpResult) -> list[dict[str, Any]]:  # fmt: skip
        """Walk several columns of one table side by side; rows are keyed by the index after the column."""
        roots = {name: _oid(oid) for name, oid in columns.items()}
        last = dict(roots)
        active = list(columns)
        rows: dict[tuple[int, ...], dict[str, Any]] = {}
        limit = MAX_ROWS[table]
        while active:
            if time.monotonic() > deadline:
                result.cut_off.append(f"{table}: device deadline reached")
                break
            request_oids = [".".join(map(str, last[c])) for c in active]
            replies = await self._request(
                "bulk" if bulk else "next", target, auth, context, request_oids, result,
                repetitions=max(5, self.options.max_repetitions // len(active)),
            )  # fmt: skip
            if not replies:
                break
            finished: set[str] = set()
            for i, (oid, value) in enumerate(replies):
                column = active[i % len(active)]
                if column in finished:
                    continue
                root = roots[column]
                if value is None or oid[: len(root)] != root:
                    finished.add(column)  # left the subtree: this column is done
                    continue
                if oid <= last[column]:
                    result.cut_off.append(f"{table}.{column}: non-increasing OID {'.'.join(map(str, oid))}")
                    finished.add(column)
                    continue
                last[column] = oid
                rows.setdefault(oid[len(root) :], {})[column] = value
                if len(rows) > limit:
                    result.cut_off.append(f"{table}: more than {limit} rows")
                    return [{"index": ".".join(map(str, k)), **v} for k, v in list(rows.items())[:limit]]
            active = [c for c in active if c not in finished]
        return [{"index": ".".join(map(str, k)), **v} for k, v in rows.items()]

    async def collect(self, address: str, credentials: Sequence[SnmpCredential]) -> SnmpResult:
        """Ask one device with each credential in turn until one works; never raises."""
        result = SnmpResult(address)
        started = time.monotonic()
        deadline = started + self.options.deadline
        try:
            target = await self.hl.UdpTransportTarget.create(
                (address, self.options.port), timeout=self.options.timeout, retries=self.options.retries
            )
            await asyncio.wait_for(self._collect(target, address, credentials, deadline, result), self.options.deadline)
        except TimeoutError:
            result.status, result.detail = "timeout", f"device deadline of {self.options.deadline:.0f}s reached"
        except Exception as exc:  # one device's trouble never stops the others
            result.status, result.detail = "error", _describe(exc)
        result.seconds = time.monotonic() - started
        return result

    async def _collect(self, target: Any, address: str, credentials: Sequence[SnmpCredential], deadline: float,
                       result: SnmpResult) -> None:  # fmt: skip
        context: Any = None
        auth: Any = None
        refused: list[str] = []
        failed: list[str] = []  # credentials that raised an error here: the next one is still tried
        alive: bool | None = None  # does an SNMPv3 probe get an answer? asked once, only if needed
        for cred in credentials:
            try:
                auth = self._auth(cred)
                context = self.hl.ContextData(contextName=cred.context.encode())
                values = await self._request("get", target, auth, context, list(SYSTEM.values()), result)
            except _AuthFailure:
                refused.append(cred.name)
                continue
            except _NoResponse:
                if cred.version in ("1", "2c"):
                    if alive is None:
                        alive = await self._answers_v3(target)
                    if alive:
                        refused.append(cred.name)  # the agent is there: it ignored the community
                continue
            except Exception as exc:  # e.g. a key pysnmp cannot encode, or a reply that is not SNMP
                failed.append(f"{cred.name}: {_describe(exc)}")
                continue
            result.credential, result.version = cred.name, cred.version
            result.default_community = cred.version != "3" and (cred.community or "") in DEFAULT_COMMUNITIES
            result.system = {name: value for name, (_, value) in zip(SYSTEM, values, strict=False)}
            break
        else:
            if failed:
                result.status = "error"
                result.detail = bound("; ".join(failed + [f"refused: {', '.join(refused)}"] * bool(refused)), 512)
            elif refused:
                result.status = "auth-failure"
                result.detail = f"the device answers but refused: {', '.join(refused)}"
            else:
                result.status, result.detail = "no-response", f"no answer on udp/{self.options.port}"
            return
        bulk = result.version != "1"
        for table, columns in TABLES.items():
            if table == "running" and not self.options.running:
                continue
            try:
                result.tables[table] = await self._walk(target, auth, context, table, columns, bulk, deadline, result)
            except _NoResponse:
                result.cut_off.append(f"{table}: no response")
        result.status = "partial" if result.cut_off else "ok"
        if result.cut_off:
            result.detail = bound("; ".join(result.cut_off), 512)

    async def _answers_v3(self, target: Any) -> bool:
        """An SNMPv3 discovery probe: an agent that reports back is alive, so silence was a refused community."""
        probe = self.hl.UsmUserData("posture-probe")
        try:
            async with self.semaphore:
                reply = await self.hl.get_cmd(
                    self.engine, probe, target, self.hl.ContextData(),
                    self.hl.ObjectType(self.hl.ObjectIdentity(SYSTEM["sysDescr"])), lookupMib=False,
                )  # fmt: skip
        except Exception:  # any failure of the probe means "could not tell"
            return False
        indication = reply[0]
        return bool(indication) and "timeout" not in str(indication).lower()


def collect_many(
    addresses: Sequence[str],
    credentials: Sequence[SnmpCredential],
    options: SnmpOptions,
    on_result: Callable[[SnmpResult], None],
    stop: threading.Event | None = None,
) -> None:
    """Collect every address, calling `on_result` (in this thread) as each device finishes; `stop`, set
    from another thread, ends the run within a quarter second (devices in flight are dropped)."""

    async def run() -> None:
        collector = await SnmpCollector.create(options)
        tasks = [asyncio.ensure_future(collector.collect(a, credentials)) for a in addresses]

        async def watch() -> None:
            while stop is not None and not stop.is_set():
                await asyncio.sleep(0.25)
            for task in tasks:
                task.cancel()

        watcher = asyncio.ensure_future(watch()) if stop is not None else None
        try:
            for finished in asyncio.as_completed(tasks):
                try:
                    result = await finished
                except asyncio.CancelledError:
                    return
                on_result(result)
        finally:
            for task in tasks:
                task.cancel()
            if watcher is not None:
                watcher.cancel()
            collector.close()

    asyncio.run(run())
