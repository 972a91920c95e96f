"""`posture serve`: the central server's HTTPS API for site collectors (Starlette on uvicorn).

A site behind its own firewall runs `posture collector` (posture/collector.py), which never touches the
database: it connects out to this server, asks for its site's next chunk, runs nmap, and uploads the result
as a signed bundle. The server is the collectors' stand-in on the queue (posture/queue.py): each collector
is a row of procrastinate's `procrastinate_workers`, heartbeated on each of its requests, so a chunk whose
collector went quiet (its link cut, its machine off) is given back by the same sweep that serves the
workers, and retried. The chunks are taken and finished with procrastinate's own SQL (`procrastinate.sql`),
on the server's own connection: the same rows and locks a worker uses, no queue of posture's own.

Endpoints (`posture.wire` says what is signed and checked):
- `POST /api/v1/take`: the next chunk of the collector's site (JSON), or 204 when there is none.
- `POST /api/v1/heartbeat`: the collector is alive and still running its chunks.
- `POST /api/v1/results`: a result bundle. Stored once per chunk, in one transaction with its
  `queue_ingests` and `collector_uploads` rows and the queue job's end; a bundle uploaded again (same bytes)
  is a no-op, and a second result for a chunk already stored is kept out.
- `GET /healthz` (the database answers), `GET /metrics` (Prometheus text format: queue depth per site and
  status, collectors' last requests, uploads by outcome), the latter only to `metrics_from` addresses.

Behind the usual reverse proxy it may listen on plain HTTP, on a loopback address only. Its config's
`[sites.NAME] collectors` say which keys may act for which site; it is read at start (restart to reload).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import ipaddress
import json
import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from posture.queue import MAX_ATTEMPTS, RETRY_WAIT, Refused, central, fail_chunk, finish_if_last_chunk, queue_name
from posture.wire import API, MAX_UPLOAD, Nonces, Refusal, check_chunk_payload, check_request
from scanner.compat import UTC
from scanner.db import Database, Target
from scanner.errors import PostureError
from scanner.jobs import Site, all_sites
from scanner.model import bound, printable
from scanner.runlog import say
from scanner.store import Store, utc_now

MAX_SMALL_BODY = 64 * 1024  # a take or heartbeat request's JSON
SEEN_EVERY = 2.0  # seconds: a collector's last_seen and heartbeat are written at most this often
MAX_SKIPPED = 64  # jobs a take looks through (stored already, refused) before it says there is nothing


@dataclass
class ServeSettings:
    listen: str = "0.0.0.0:8443"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    plain_http: bool = False  # behind a reverse proxy on the same machine: loopback only
    stalled_after: float = 90.0  # seconds without a collector's request before its chunks go back to the queue
    metrics_from: tuple[str, ...] = ("127.0.0.0/8", "::1/128")


class _Stores:
    """Open stores kept between requests, at most `size` at once (a request waits for one): a PostgreSQL
    connection costs ~14 ms to open, several times a chunk's whole write. Connections are in autocommit
    (posture's own BEGIN), so one handed back holds no transaction; one whose request failed other than
    by a refusal is closed, not kept."""

    def __init__(self, url: str, size: int = 8) -> None:
        self.url, self.free, self.slots = url, queue.LifoQueue[Store](), threading.BoundedSemaphore(size)

    @contextlib.contextmanager
    def get(self) -> Iterator[Store]:
        with self.slots:
            try:
                store = self.free.get_nowait()
            except queue.Empty:
                store = Store.open(self.url)
            try:
                yield store
            except PostureError:  # a refusal: its transaction, if any, was rolled back
                self.free.put(store)
                raise
            except BaseException:
                store.close()
                raise
            self.free.put(store)

    def close(self) -> None:
        while not self.free.empty():
            self.free.get_nowait().close()


@dataclass
class _State:
    url: str
    sites: dict[str, Site]
    settings: ServeSettings
    nonces: Nonces = field(default_factory=Nonces)
    counts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stores: _Stores = field(init=False)
    recent: dict[str, tuple[float, str, str, int]] = field(default_factory=dict)  # key -> (when, address,
    # version, worker) of its last `_seen` write

    def __post_init__(self) -> None:
        self.stores = _Stores(self.url)

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1


def collector_sites(config: dict[str, Any]) -> dict[str, Site]:
    """The config's sites that have collectors; a PostureError names a bad one."""
    return {name: site for name, site in all_sites(config).items() if site.collectors}


def _address(request: Request) -> str:
    return bound(request.client.host if request.client else "unknown", 64) or "unknown"


async def _body(request: Request, limit: int) -> bytes:
    """The request's body, refused (413) past `limit` bytes without reading more."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Refusal(413, f"the body is larger than {limit} bytes")
    parts, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise Refusal(413, f"the body is larger than {limit} bytes")
        parts.append(part)
    return b"".join(parts)


def _authenticate(state: _State, request: Request, body: bytes) -> tuple[Site, str, str]:
    site = state.sites.get(request.headers.get("x-posture-site", ""))
    if site is None:
        raise Refusal(403, "no such site with collectors here")
    kid, name = check_request(request.headers, request.method, request.url.path, body, site.collectors,
                              state.nonces, time.time())  # fmt: skip
    return site, kid, name


def _seen(state: _State, site: Site, kid: str, name: str, address: str, version: str) -> int:
    """The collector's row brought up to date (last seen, address, version) and its procrastinate worker
    heartbeated (registered first if it has none, or the one it had was pruned as stalled): its id. At
    most once every SEEN_EVERY seconds for the same collector and address: a busy collector's requests
    come several a second, and its lease is counted in tens of seconds."""
    now = time.monotonic()
    with state.lock:
        recent = state.recent.get(kid)
    if recent is not None and now - recent[0] < SEEN_EVERY and recent[1:3] == (address, version or recent[2]):
        return recent[3]
    worker = _write_seen(state, site, kid, name, address, version)
    with state.lock:
        state.recent[kid] = (now, address, version or (recent[2] if recent else ""), worker)
    return worker


def _write_seen(state: _State, site: Site, kid: str, name: str, address: str, version: str) -> int:
    from procrastinate import sql

    with state.stores.get() as store, store.transaction() as conn:
        conn.execute(
            "INSERT INTO collectors (key_id, site, name, first_seen, last_seen, address, version) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key_id) DO UPDATE SET site = excluded.site, "
            "name = excluded.name, last_seen = excluded.last_seen, address = excluded.address, "
            "version = coalesce(nullif(excluded.version, ''), collectors.version)",
            (kid, site.name, name, utc_now(), utc_now(), address, bound(version, 64)),
        )
        row = conn.execute("SELECT w.id FROM collectors c JOIN procrastinate_workers w ON w.id = c.worker_id "
                           "WHERE c.key_id = ?", (kid,)).fetchone()  # fmt: skip
        if row is None:
            worker = conn.raw.execute(sql.queries["register_worker"]).fetchone()[0]
            conn.execute("UPDATE collectors SET worker_id = ? WHERE key_id = ?", (worker, kid))
            return int(worker)
        conn.raw.execute(sql.queries["update_heartbeat"], {"worker_id": row[0]})
        return int(row[0])


def _finish_job(conn: Database, job: int, status: str, worker: int | None = None) -> None:
    """procrastinate's end of a job that is running (for `worker`, when given); nothing otherwise."""

    row = conn.execute("SELECT status, worker_id FROM procrastinate_jobs WHERE id = ?", (job,)).fetchone()
    if row is not None and row[0] == "doing" and (worker is None or row[1] == worker):
        # procrastinate's `finish_job` query, with the types spelt out: posture's connection sends a bool as
        # an integer (the store's one dialect for both engines)
        conn.execute("SELECT procrastinate_finish_job_v1(?::bigint, ?::procrastinate_job_status, false)",
                     (job, status))  # fmt: skip


def _retry_job(conn: Database, job: int, wait: float) -> None:
    """procrastinate's retry of a running job: back to `todo` in `wait` seconds, its attempts counted."""
    retry_at = datetime.now(UTC) + timedelta(seconds=wait)
    conn.execute("SELECT procrastinate_retry_job_v2(?::bigint, ?::timestamptz, NULL::integer, NULL::varchar, "
                 "NULL::varchar)", (job, retry_at.isoformat()))  # fmt: skip


def _take(state: _State, site: Site, kid: str, worker: int) -> dict[str, Any] | None:
    """The site's next chunk for this collector, as an offer; None when there is nothing to do. A job whose
    chunk is stored already is ended as done; one out of attempts or out of scope, as failed."""
    from procrastinate import sql

    with state.stores.get() as store:
        with store.transaction() as conn:  # a collector runs one chunk at a time: one it held is abandoned
            for (held,) in conn.execute("SELECT id FROM procrastinate_jobs WHERE worker_id = ? AND status = 'doing'",
                                        (worker,)).fetchall():  # fmt: skip
                _retry_job(conn, held, 0)
                say(f"serve: site {site.name}: job {held} given back (its collector asks for new work)")
        for _ in range(MAX_SKIPPED):
            with store.transaction() as conn:
                job = conn.raw.execute(sql.queries["fetch_job"], {"queues": [queue_name(site.name)],
                                                                  "worker_id": worker}).fetchone()  # fmt: skip
            if job is None or job[0] is None:
                return None
            job_id, task, args, attempts, priority = job[0], job[2], job[6], job[9], job[3]
            offer = None
            try:
                if task != "scan_chunk":
                    raise Refused(f"job {job_id} is a {bound(str(task), 40)}, not a chunk")
                offer = _offer(store, site, job_id, attempts, args)
            except Exception as exc:
                if not isinstance(exc, Refused):  # not the job's fault (the database): back for another try
                    with store.transaction() as conn:
                        _retry_job(conn, job_id, RETRY_WAIT)
                    raise
                say(f"serve: site {site.name}: job {job_id} refused: {exc.message}")
                if task == "scan_chunk":
                    fail_chunk(store, _run_of(args), int(args["seq"]), priority)
                with store.transaction() as conn:
                    _finish_job(conn, job_id, "failed")
                continue
            if offer is None:  # stored by an earlier attempt (its collector's link was down a while)
                with store.transaction() as conn:
                    _finish_job(conn, job_id, "succeeded")
                continue
            store.conn.execute("UPDATE collectors SET chunks_taken = chunks_taken + 1 WHERE key_id = ?", (kid,))
            return offer
    return None


def _run_of(args: dict[str, Any]) -> dict[str, Any]:
    return {k: args[k] for k in ("scan_id", "job", "started", "evaluation_before")}


def _offer(store: Store, site: Site, job: int, attempts: int, args: dict[str, Any]) -> dict[str, Any] | None:
    from posture.queue import scope_check
    from scanner.scan import stored_request

    scan_id, seq = int(args["scan_id"]), int(args["seq"])
    if attempts >= MAX_ATTEMPTS:
        raise Refused(f"run {scan_id} chunk {seq}: out of attempts ({MAX_ATTEMPTS})")
    row = store.scan_row(scan_id)
    chunk = store.conn.execute("SELECT targets, status FROM scan_chunks WHERE scan_id = ? AND seq = ?",
                               (scan_id, seq)).fetchone()  # fmt: skip
    if row is None or chunk is None:
        raise Refused(f"run {scan_id} chunk {seq} is not in the inventory (pruned?)")
    if chunk[1] != "pending":
        return None
    targets, run_scope = json.loads(chunk[0]), json.loads(row["scope"] or "[]")
    scope_check(targets, [("the run's scope", run_scope), (f"site {site.name}'s scope", list(site.scope))])
    request = stored_request(store, scan_id, parallel=1)
    options = dict(request.options)
    options["max_rate"] = min(int(options.get("max_rate") or site.chunk_rate), site.chunk_rate)
    return {"job": job, "attempt": attempts, "run": scan_id, "seq": seq, "targets": targets, "options": options,
            "scopes": {"run": run_scope, "site": list(site.scope)}}  # fmt: skip


@dataclass
class Ingested:
    stored: bool
    why: str


def _ingest(state: _State, site: Site, kid: str, name: str, worker: int, body: bytes) -> Ingested:
    """One uploaded result: verified (the uploading collector's own signature, its site's chunk), then
    stored once, or its failure counted against the chunk."""
    import base64

    from scanner.bundles import BundleRejected, verify_bundle

    digest = hashlib.sha256(body).hexdigest()
    label = Path(f"upload {digest[:12]} from {name}")
    trusted = {kid: {"name": name, "public": base64.b64encode(site.collectors[kid][1]).decode()}}
    try:
        payload = verify_bundle(body, label, trusted, check_chunk_payload).payload
    except BundleRejected as exc:
        raise Refusal(422, str(exc)) from None
    if payload["site"] != site.name:
        raise Refusal(422, f"{label}: a result for site {bound(payload['site'], 40)!r}, uploaded for {site.name}")
    scan_id, seq, job = payload["run"], payload["seq"], payload["job"]
    with state.stores.get() as store:
        if store.conn.execute("SELECT 1 FROM collector_uploads WHERE digest = ?", (digest,)).fetchone():
            return Ingested(False, "uploaded before: nothing to do")
        found = store.conn.execute(
            "SELECT j.args::text, j.priority, j.attempts, c.targets, c.host_count FROM procrastinate_jobs j "
            "JOIN scan_chunks c "
            "ON c.scan_id = ? AND c.seq = ? WHERE j.id = ? AND j.queue_name = ? AND j.task_name = 'scan_chunk' "
            "AND (j.args->>'scan_id')::bigint = ? AND (j.args->>'seq')::bigint = ?",
            (scan_id, seq, job, queue_name(site.name), scan_id, seq),
        ).fetchone()
        if found is None:
            raise Refusal(422, f"{label}: run {scan_id} chunk {seq} (job {job}) is not a chunk of site {site.name}")
        args, priority, attempts, targets = json.loads(found[0]), found[1], found[2], json.loads(found[3])
        count = int(found[4])
        if payload["targets"] != targets:
            raise Refusal(422, f"{label}: its targets are not those of run {scan_id} chunk {seq}")
        if payload["error"] is not None:
            return _failed(store, args, priority, attempts, payload, digest, kid, worker)
        batch = _batch(payload, targets, count, label)
        return _store(store, args, priority, payload, batch, digest, kid, name, worker)


def _record(conn: Database, digest: str, kid: str, payload: dict[str, Any], stored: bool) -> None:
    conn.execute("INSERT INTO collector_uploads VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING",
                 (digest, kid, payload["run"], payload["seq"], payload["attempt"], utc_now(), stored))  # fmt: skip


def _failed(store: Store, args: dict[str, Any], priority: int, attempts: int, payload: dict[str, Any],
            digest: str, kid: str, worker: int) -> Ingested:  # fmt: skip
    """The chunk was not scanned at the site (nmap failed, or the collector refused it): it is tried again
    (after RETRY_WAIT), or fails for good past MAX_ATTEMPTS."""
    error = printable(payload["error"], 300)
    say(f"serve: run {payload['run']} chunk {payload['seq']} failed at site {payload['site']}: {error}")
    if attempts + 1 >= MAX_ATTEMPTS:
        fail_chunk(store, _run_of(args), payload["seq"], priority)
        with store.transaction() as conn:
            _record(conn, digest, kid, payload, False)
            _finish_job(conn, payload["job"], "failed", worker)
        return Ingested(False, f"not scanned: {error}; out of attempts, the chunk failed")
    with store.transaction() as conn:
        _record(conn, digest, kid, payload, False)
        state = conn.execute("SELECT status, worker_id FROM procrastinate_jobs WHERE id = ?",
                             (payload["job"],)).fetchone()  # fmt: skip
        if state is not None and state[0] == "doing" and state[1] == worker:
            _retry_job(conn, payload["job"], RETRY_WAIT)
    return Ingested(False, f"not scanned: {error}; the chunk will be tried again")


def _batch(payload: dict[str, Any], targets: list[str], count: int, label: Path) -> Any:
    """The result's hosts, read from nmap's XML as `posture import` reads it; a host outside the chunk's
    targets (a collector reporting what it was not asked) refuses the whole result."""
    from scanner.nmap_xml import NmapXmlReader
    from scanner.sources import Batch
    from scanner.store import prepare_host
    from scanner.targets import parse_networks

    try:
        xml = payload["nmap_xml"].encode("latin-1")
    except UnicodeEncodeError:
        raise Refusal(422, f"{label}: nmap's output is not the bytes nmap wrote") from None
    networks = parse_networks(targets, "the chunk's targets")
    reader = NmapXmlReader(io.BytesIO(xml), name=str(label))
    try:
        hosts = list(reader)
    except PostureError as exc:
        raise Refusal(422, f"{label}: {exc.message}") from None
    for host in hosts:
        for ip in host.ips:
            if not any(ipaddress.ip_address(ip) in net for net in networks):
                raise Refusal(422, f"{label}: host {bound(ip, 64)} is not among the chunk's targets")
    if reader.run.exit_status not in (None, "success"):
        raise Refusal(422, f"{label}: nmap failed ({printable(reader.run.error or reader.run.exit_status, 200)})")
    return Batch([prepare_host(h) for h in hosts], done=count, unit=payload["seq"], tool_version=reader.run.version)


def _store(store: Store, args: dict[str, Any], priority: int, payload: dict[str, Any], batch: Any, digest: str,
           kid: str, name: str, worker: int) -> Ingested:  # fmt: skip
    from scanner.scan import store_unit, stored_request

    scan_id, seq = payload["run"], payload["seq"]
    hostnames = stored_request(store, scan_id, parallel=1).hostnames

    def claim(conn: Database) -> bool:
        stored = conn.execute("INSERT INTO queue_ingests VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING "
                              "RETURNING seq", (scan_id, seq, payload["job"], payload["attempt"],
                                                bound(f"{name} ({kid})", 120), utc_now())).fetchone()  # fmt: skip
        _record(conn, digest, kid, payload, stored is not None)
        _finish_job(conn, payload["job"], "succeeded", worker)
        return stored is not None

    def then(conn: Database) -> None:
        finish_if_last_chunk(conn, _run_of(args), priority)
        conn.execute("UPDATE collectors SET bundles_stored = bundles_stored + 1 WHERE key_id = ?", (kid,))

    summary = store_unit(store, "nmap", scan_id, batch, hostnames, claim, then)
    if summary is None:
        return Ingested(False, f"run {scan_id} chunk {seq} was stored already by another attempt")
    return Ingested(True, f"run {scan_id} chunk {seq}: {summary.hosts_up} hosts up, {summary.services} services")


# ---- the app ---------------------------------------------------------------------------------------


Endpoint = Callable[[Request], Awaitable[Response]]


def _refusing(state: _State, what: str, handler: Endpoint) -> Endpoint:
    """A refusal is a JSON `{"error": ...}` with its status, logged in one line; anything unexpected a 500
    with no detail (the log has its first line)."""

    async def endpoint(request: Request) -> Response:
        try:
            response = await handler(request)
        except Refusal as exc:
            state.count(f"{what}:refused")
            say(f"serve: {what} from {_address(request)} refused ({exc.status}): {printable(exc.message, 300)}")
            return JSONResponse({"error": printable(exc.message, 300)}, status_code=exc.status)
        except Exception as exc:
            state.count(f"{what}:error")
            say(f"serve: {what} failed: {type(exc).__name__}: {printable(str(exc), 300)}", 40)
            return JSONResponse({"error": "internal error (see the server's log)"}, status_code=500)
        state.count(f"{what}:{response.status_code}")
        return response

    return endpoint


def build_app(url: str, config: dict[str, Any], settings: ServeSettings) -> Starlette:
    """The API for `url`'s queue, trusting the collectors `config`'s sites list."""
    from posture.queue import app as queue_app
    from posture.queue import sweep

    state = _State(url, collector_sites(config), settings)

    async def take(request: Request) -> Response:
        body = await _body(request, MAX_SMALL_BODY)
        site, kid, name = _authenticate(state, request, body)
        version = _json(body).get("version", "")
        worker = await run_in_threadpool(_seen, state, site, kid, name, _address(request), str(version))
        offer = await run_in_threadpool(_take, state, site, kid, worker)
        if offer is None:
            return Response(status_code=204)
        offer["lease"] = settings.stalled_after
        say(f"serve: run {offer['run']} chunk {offer['seq']} to {printable(name, 64)} (site {site.name})")
        return JSONResponse(offer)

    async def heartbeat(request: Request) -> Response:
        body = await _body(request, MAX_SMALL_BODY)
        site, kid, name = _authenticate(state, request, body)
        await run_in_threadpool(_seen, state, site, kid, name, _address(request), str(_json(body).get("version", "")))
        return JSONResponse({"ok": True})

    async def results(request: Request) -> Response:
        body = await _body(request, MAX_UPLOAD)
        site, kid, name = _authenticate(state, request, body)
        worker = await run_in_threadpool(_seen, state, site, kid, name, _address(request), "")
        outcome = await run_in_threadpool(_ingest, state, site, kid, name, worker, body)
        state.count("uploads:stored" if outcome.stored else "uploads:kept-out")
        say(f"serve: result from {printable(name, 64)} (site {site.name}): {outcome.why}")
        return JSONResponse({"stored": outcome.stored, "why": outcome.why})

    async def healthz(request: Request) -> Response:
        try:
            await run_in_threadpool(_ping, url)
        except Exception:
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    async def metrics(request: Request) -> Response:
        if not _allowed(_address(request), settings.metrics_from):
            raise Refusal(403, "metrics are served to the addresses in [serve] metrics_from only")
        text = await run_in_threadpool(metrics_text, url, state)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def sweeping() -> None:
        import asyncio

        while True:
            await asyncio.sleep(max(1.0, settings.stalled_after / 3))
            try:
                await sweep(settings.stalled_after)
            except Exception as exc:  # the database away a moment: the next round tries again
                say(f"serve: sweep failed: {type(exc).__name__}", 30)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        import asyncio

        import procrastinate

        connector = procrastinate.PsycopgConnector(conninfo=url, min_size=1, max_size=2,
                                                   kwargs={"application_name": "posture serve"})  # fmt: skip
        with queue_app.replace_connector(connector):
            async with queue_app.open_async():
                task = asyncio.create_task(sweeping())
                try:
                    yield
                finally:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    state.stores.close()

    routes = [
        Route(f"{API}/take", _refusing(state, "take", take), methods=["POST"]),
        Route(f"{API}/heartbeat", _refusing(state, "heartbeat", heartbeat), methods=["POST"]),
        Route(f"{API}/results", _refusing(state, "results", results), methods=["POST"]),
        Route("/healthz", _refusing(state, "healthz", healthz), methods=["GET"]),
        Route("/metrics", _refusing(state, "metrics", metrics), methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"{}")
    except (ValueError, RecursionError):
        raise Refusal(400, "the body is not JSON") from None
    if not isinstance(value, dict):
        raise Refusal(400, "the body is not a JSON object")
    return value


def _ping(url: str) -> None:
    with Store.open(url, readonly=True) as store:
        store.conn.execute("SELECT 1").fetchone()


def _allowed(address: str, networks: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(n, strict=False) for n in networks)


def _label(value: object) -> str:
    """A Prometheus label value: backslash, double quote and newline escaped, and bounded."""
    text = printable(str(value), 120)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_text(url: str, state: _State) -> str:
    """The Prometheus text exposition: queue jobs by site and status, each collector's seconds since its
    last request, and this server's requests and uploads by outcome since it started."""
    lines = ["# HELP posture_queue_jobs Queue jobs by queue and status.", "# TYPE posture_queue_jobs gauge"]
    with Store.open(url, readonly=True) as store:
        for queue, status, n in store.conn.execute(
            "SELECT queue_name, status, count(*) FROM procrastinate_jobs GROUP BY 1, 2 ORDER BY 1, 2"
        ):
            lines.append(f'posture_queue_jobs{{queue="{_label(queue)}",status="{_label(status)}"}} {int(n)}')
        lines += ["# HELP posture_collector_last_seen_seconds Seconds since the collector's last accepted request.",
                  "# TYPE posture_collector_last_seen_seconds gauge"]  # fmt: skip
        now = datetime.now(UTC)
        for site, name, kid, last in store.conn.execute(
            "SELECT site, name, key_id, last_seen FROM collectors ORDER BY site, name"
        ):
            age = (now - datetime.fromisoformat(str(last).replace("Z", "+00:00"))).total_seconds()
            lines.append(f'posture_collector_last_seen_seconds{{site="{_label(site)}",collector="{_label(name)}",'
                         f'key="{_label(kid)}"}} {age:.0f}')  # fmt: skip
    lines += ["# HELP posture_serve_requests_total Requests by endpoint and outcome since the server started.",
              "# TYPE posture_serve_requests_total counter"]  # fmt: skip
    with state.lock:
        counts = sorted(state.counts.items())
    for key, n in counts:
        what, outcome = key.split(":", 1)
        lines.append(f'posture_serve_requests_total{{endpoint="{_label(what)}",outcome="{_label(outcome)}"}} {n}')
    return "\n".join(lines) + "\n"


def serve(db: Target, config: dict[str, Any], settings: ServeSettings) -> None:
    """Run the API until stopped (SIGTERM, SIGINT): checked first, each problem one PostureError."""
    import uvicorn

    from posture.queue import need_queue

    url = central(db)
    host, _, port = settings.listen.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PostureError(f"--listen {settings.listen[:60]!r} is not ADDRESS:PORT", "e.g. --listen 0.0.0.0:8443")
    if settings.plain_http:
        if not ipaddress.ip_address(host).is_loopback:
            raise PostureError("plain HTTP only on a loopback address (behind a reverse proxy on this machine)",
                               "give --tls-cert and --tls-key, or --listen 127.0.0.1:PORT")  # fmt: skip
    elif settings.tls_cert is None or settings.tls_key is None:
        raise PostureError("posture serve needs a TLS certificate and key", "give --tls-cert and --tls-key "
                           "(or [serve] tls_cert, tls_key), or --plain-http behind a reverse proxy")  # fmt: skip
    else:
        for path in (settings.tls_cert, settings.tls_key):
            if not path.is_file():
                raise PostureError(f"no such file: {path}", "give the PEM files of the server's certificate")
    sites = collector_sites(config)
    if not sites:
        say("serve: no site lists collectors yet ([sites.NAME] collectors = [...]): every request is refused", 30)
    with Store.open(url) as store:
        need_queue(store)
    say(f"serve: listening on {settings.listen} ({'plain HTTP' if settings.plain_http else 'TLS'}), "
        f"{sum(len(s.collectors) for s in sites.values())} collector(s) at {len(sites)} site(s)")
    uvicorn.run(build_app(url, config, settings), host=host, port=int(port), log_config=None, access_log=False,
                ssl_certfile=None if settings.plain_http else str(settings.tls_cert),
                ssl_keyfile=None if settings.plain_http else str(settings.tls_key),
                server_header=False, date_header=False, timeout_graceful_shutdown=10)  # fmt: skip
