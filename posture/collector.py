"""`posture collector`: a site's scanner that never touches the central database.

It runs at a site behind its own firewall and connects outbound only, to `posture serve` over HTTPS: it asks
for its site's next chunk, checks the chunk against its own scope (its config's, whatever the server says),
runs nmap on it, and uploads the result as a signed bundle (optionally sealed to the server's X25519 key).
Every result goes into a local SQLite outbox first, in the same step that ends the nmap run, and leaves it
only once the server has answered for it; while the link is down the results wait there, and the collector
uploads them in order when it is back, before it takes more work. A bundle's bytes do not change once made,
so an upload repeated after a lost answer is a no-op at the server (content addressed).

Why no key on the command line: the collector signs with this machine's signing key (`posture keys
generate`, sealed at rest by the vault), and a key in argv would be in every `ps` listing. The server trusts
it for one site by its public line in `[sites.NAME] collectors`.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posture.wire import API, MAX_XML, Offer, check_offer, chunk_payload, signed_headers
from scanner import __version__
from scanner.errors import PostureError
from scanner.model import printable
from scanner.paths import state_dir
from scanner.runlog import say
from scanner.store import utc_now


@dataclass
class CollectorSettings:
    server: str
    site: str
    scope: tuple[str, ...]
    ca: Path | None = None
    encrypt_to: str | None = None  # the server's `posture-x25519 ...` line: results sealed to it
    outbox: Path | None = None
    poll: float = 30.0  # seconds between asks when there is nothing to do
    once: bool = False  # stop when the server has nothing and the outbox is empty
    patience: float = 300.0  # with `once`: seconds the server may stay unreachable before the collector stops
    max_chunks: int | None = None
    timeout: float = 60.0
    stop: threading.Event = field(default_factory=threading.Event)


class Unreachable(PostureError):
    """The server did not answer (the link is down, it is restarting): try again later, lose nothing."""


def outbox_path(settings: CollectorSettings) -> Path:
    return settings.outbox or state_dir() / "collector" / "outbox.db"


class Outbox:
    """Results not yet accepted by the server, oldest first, in an SQLite file of the collector's own (WAL,
    synchronous FULL: a result in it survives a power cut). Refused results move to `refused`, kept to be
    looked at, never uploaded again."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.db = sqlite3.connect(path, isolation_level=None)
        path.chmod(0o600)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, run INTEGER, seq INTEGER, "
                        "made TEXT NOT NULL, bundle BLOB NOT NULL)")  # fmt: skip
        self.db.execute("CREATE TABLE IF NOT EXISTS refused (id INTEGER PRIMARY KEY, run INTEGER, seq INTEGER, "
                        "made TEXT, refused TEXT, why TEXT, bundle BLOB)")  # fmt: skip

    def add(self, run: int, seq: int, bundle: bytes) -> None:
        self.db.execute("INSERT INTO outbox (run, seq, made, bundle) VALUES (?, ?, ?, ?)",
                        (run, seq, utc_now(), bundle))  # fmt: skip

    def pending(self) -> Iterator[tuple[int, int, int, bytes]]:
        """(id, run, seq, bundle), oldest first, one at a time (a bundle may be megabytes)."""
        last = 0
        while True:
            row = self.db.execute("SELECT id, run, seq, bundle FROM outbox WHERE id > ? ORDER BY id LIMIT 1",
                                  (last,)).fetchone()  # fmt: skip
            if row is None:
                return
            last = row[0]
            yield row

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def done(self, item: int) -> None:
        self.db.execute("DELETE FROM outbox WHERE id = ?", (item,))

    def refuse(self, item: int, why: str) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("INSERT INTO refused (run, seq, made, refused, why, bundle) SELECT run, seq, made, ?, ?, "
                            "bundle FROM outbox WHERE id = ?", (utc_now(), why, item))  # fmt: skip
            self.db.execute("DELETE FROM outbox WHERE id = ?", (item,))

    def close(self) -> None:
        self.db.close()


class Client:
    """Signed requests to the server (`posture.wire`); every network failure is an Unreachable."""

    def __init__(self, settings: CollectorSettings) -> None:
        import httpx

        if not settings.server.startswith("https://"):
            raise PostureError("the server is given as https://HOST:PORT/", "collectors speak to it over TLS only")
        context = ssl.create_default_context(cafile=str(settings.ca) if settings.ca else None)
        self.site = settings.site
        self.http = httpx.Client(base_url=settings.server.rstrip("/"), verify=context, timeout=settings.timeout,
                                 headers={"user-agent": f"posture-collector/{__version__}"})  # fmt: skip

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        import httpx

        full = API + path
        headers = signed_headers("POST", full, self.site, body)
        try:
            response = self.http.post(full, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise Unreachable(f"the server did not answer ({type(exc).__name__})") from None
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise Unreachable(f"the server answered {response.status_code}")
        return response.status_code, response.content[:65536]

    def close(self) -> None:
        self.http.close()


def _answer(content: bytes, key: str) -> str:
    """One field of the server's JSON answer, printable and bounded (or the answer itself, if not JSON)."""
    try:
        return printable(str(json.loads(content).get(key, "")), 300)
    except (ValueError, AttributeError):
        return printable(content.decode("utf-8", "replace"), 300)


def _error(content: bytes) -> str:
    return _answer(content, "error")


def flush(client: Client, outbox: Outbox) -> int:
    """Upload what the outbox holds, oldest first; the number accepted. Raises Unreachable at the first
    upload the server does not answer (the rest wait, in order). A refused result (its bundle will never
    be accepted as it is) moves aside with the reason, so one bad result never blocks the others; a refused
    collector (its key, its clock) stops with every result kept."""
    sent = 0
    for item, run, seq, bundle in outbox.pending():
        status, content = client.post("/results", bundle)
        if status == 200:
            outbox.done(item)
            sent += 1
            say(f"collector: run {run} chunk {seq} uploaded: {_answer(content, 'why')}")
        elif status in (413, 422):  # the bundle itself: it will never be accepted as it is
            why = _error(content)
            outbox.refuse(item, f"{status}: {why}")
            say(f"collector: run {run} chunk {seq} refused by the server ({status}): {why}", 30)
        else:  # who is asking (the key, the clock, the site): the results stay for when that is mended
            raise PostureError(f"the server refused this collector ({status}): {_error(content)}",
                               f"{outbox.count()} result(s) kept in the outbox; check the key line in the server's "
                               "[sites.NAME] collectors, and both clocks")  # fmt: skip
    return sent


class _Heartbeat:
    """While nmap runs: a signed heartbeat every third of the lease, so the server keeps the chunk ours.
    A missed one (the link down) is only logged: the chunk's result waits in the outbox either way."""

    def __init__(self, client: Client, lease: float) -> None:
        self.client, self.every, self.stopped = client, max(0.5, lease / 3), threading.Event()
        self.thread = threading.Thread(target=self._beat, name="posture-heartbeat", daemon=True)

    def _beat(self) -> None:
        body = json.dumps({"version": __version__}).encode()
        while not self.stopped.wait(self.every):
            try:
                self.client.post("/heartbeat", body)
            except Unreachable:
                continue

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.thread.join()


def scan(offer: Offer, agent: Any, client: Client) -> tuple[bytes | None, str | None]:
    """nmap on the offer's targets: its XML (bounded), or its error."""
    from scanner.sources.nmap import scan_workdir

    with scan_workdir() as workdir, _Heartbeat(client, offer.lease):
        try:
            chunk = agent.run_chunk(offer.targets, offer.options, workdir, lambda _: None)
        except PostureError as exc:
            return None, exc.message
        try:
            with chunk.xml_path.open("rb") as fh:
                xml = fh.read(MAX_XML + 1)
        finally:
            chunk.xml_path.unlink(missing_ok=True)
    if len(xml) > MAX_XML:
        return None, f"nmap's output is larger than {MAX_XML // 2**20} MiB"
    return xml, None


def run_collector(settings: CollectorSettings) -> int:
    """Take, scan and upload chunks until stopped (SIGTERM, SIGINT), or with `once` until the server has
    nothing for this site and the outbox is empty; the number of chunks scanned."""
    from scanner.agents.nmap import NmapAgent, find_nmap
    from scanner.bundles import own_public_keys, parse_public_line
    from scanner.targets import parse_networks

    find_nmap()
    if not settings.scope:
        raise PostureError("the collector has no scope", 'give --scope, or [collector] scope = ["10.30.0.0/16"]')
    parse_networks(settings.scope, "the collector's scope")
    if "signing" not in own_public_keys():
        raise PostureError("this machine has no signing key", "make one with `posture keys generate`, and list its "
                           "line in the server's [sites.NAME] collectors")  # fmt: skip
    if settings.encrypt_to:
        parse_public_line(settings.encrypt_to, "posture-x25519")
    agent = NmapAgent()
    scanned, unreachable_since = 0, None
    outbox = Outbox(outbox_path(settings))
    with closing(Client(settings)) as client, closing(outbox), _stopping(settings, agent):
        say(f"collector: site {settings.site}, server {printable(settings.server, 200)}, "
            f"{outbox.count()} result(s) waiting in the outbox")  # fmt: skip
        while not settings.stop.is_set():
            try:
                flush(client, outbox)
                unreachable_since = None
                if settings.max_chunks is not None and scanned >= settings.max_chunks:
                    break
                status, content = client.post("/take", json.dumps({"version": __version__}).encode())
            except Unreachable as exc:
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                waiting = outbox.count()
                say(f"collector: {exc.message}; {waiting} result(s) kept in the outbox", 30)
                if settings.once and now - unreachable_since > settings.patience:
                    raise PostureError(f"the server stayed unreachable for {settings.patience:.0f} s; "
                                       f"{waiting} result(s) kept in the outbox", "run the collector again") from None
                settings.stop.wait(min(settings.poll, 5.0) if settings.once else settings.poll)
                continue
            if status == 204:
                if settings.once:
                    break
                settings.stop.wait(settings.poll)
                continue
            if status != 200:
                raise PostureError(f"the server refused this collector ({status}): {_error(content)}",
                                   "check that its key line is in the server's [sites.NAME] collectors")  # fmt: skip
            scanned += _work(json.loads(content), settings, agent, client, outbox)
    return scanned


def _work(raw: Any, settings: CollectorSettings, agent: Any, client: Client, outbox: Outbox) -> int:
    """One offer: checked, scanned, its result put in the outbox (then flushed by the loop). An offer this
    collector refuses (a target outside its scope) is answered with an error result, so the server counts
    the attempt and the chunk fails rather than circling."""
    from scanner.bundles import make_bundle

    try:
        offer = check_offer(raw, list(settings.scope))
    except PostureError as exc:
        if not isinstance(raw, dict) or not all(isinstance(raw.get(k), int) for k in ("job", "attempt", "run", "seq")):
            say(f"collector: a malformed offer ignored: {exc.message}", 30)
            return 0
        say(f"collector: run {raw['run']} chunk {raw['seq']} refused: {exc.message}", 30)
        given = raw.get("targets")
        targets = [t for t in given if isinstance(t, str)][:4096] if isinstance(given, list) else []
        offer = Offer(raw["job"], raw["attempt"], raw["run"], raw["seq"], targets, {}, 60.0)
        outbox.add(offer.run, offer.seq, make_bundle(chunk_payload(offer, settings.site, None, f"refused by the "
                   f"collector: {exc.message}"), settings.encrypt_to))  # fmt: skip
        return 0
    say(f"collector: run {offer.run} chunk {offer.seq}: nmap on {len(offer.targets)} target(s)")
    xml, error = scan(offer, agent, client)
    if settings.stop.is_set():  # stopped mid-chunk: nothing kept; the server gives the chunk out again
        return 0
    outbox.add(offer.run, offer.seq, make_bundle(chunk_payload(offer, settings.site, xml, error), settings.encrypt_to))
    return 1


@contextmanager
def _stopping(settings: CollectorSettings, agent: Any) -> Iterator[None]:
    """SIGTERM and SIGINT stop the collector: a running nmap is stopped (its chunk is given out again by the
    server once its lease runs out); what is in the outbox stays for the next start."""
    from scanner.scan import on_signals

    def stop(signum: int, _: Any) -> None:
        settings.stop.set()
        agent.cancel()
        say(f"collector: stopping ({signal.Signals(signum).name})")

    with on_signals((signal.SIGTERM, signal.SIGINT), stop):
        yield
