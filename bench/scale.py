"""`bench/run.py scale`: issue 18's benchmark, posture beyond one machine, on a PostgreSQL of its own.

1. Ingestion through the collectors' path. A site with 8 collector keys (8 homes, `posture keys generate`
   each), a job over N synthetic addresses from 10.0.0.0 (never sent anything: no nmap runs) queued with
   `posture run JOB --queue` in chunks of 256, `posture serve` as a real process (TLS on 127.111.0.1), and
   8 collector processes (bench/scale_collector.py: posture's own Client, offer check, payload and bundle)
   that upload synthetic nmap XML for exactly the offered targets: signed requests, bundle verification,
   XML parsing, one transaction per chunk. Timed from the first take to the last chunk stored; the server's
   peak memory is its VmHWM, read before it stops. The floor: the rows that ingestion wrote, dumped with
   `COPY ... TO`, then `COPY ... FROM` into the same tables of a fresh database in the state before the
   ingestion (same schema, same scans and chunks rows), by one psycopg process in one transaction.
2. `posture evaluate` on PostgreSQL: an inventory of N assets (bench/gen_inventory.py, moved with `posture
   migrate`), beside one plain SQL pass over the same tables (bench/run.py's FLOOR_SELECTS, streamed with
   a server-side cursor).

Nothing is asserted: the numbers are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.run import FLOOR_SELECTS, POSTURE, PYTHON, ROOT, Measure, measure, table
from scanner.lab import PostgresLab

PG_ADDRESS, SERVER = "127.111.0.2", "127.111.0.1"  # this benchmark's own loopback addresses
COLLECTORS = 8
CHUNK = 256
SITE = "bench"

# One psycopg process: the dumped rows copied into the same tables, in one transaction; prints its seconds
# (connected first, so the time is the COPYs' and the commit's, as the ingestion's window has no start-up).
COPY_FLOOR = """
import sys, time, psycopg
url, folder, tables = sys.argv[1], sys.argv[2], sys.argv[3:]
with psycopg.connect(url) as conn:
    started = time.perf_counter()
    for table in tables:
        with conn.cursor().copy(f"COPY {table} FROM STDIN (FORMAT binary)") as copy, \\
                open(f"{folder}/{table}.copy", "rb") as data:
            while chunk := data.read(1 << 20):
                copy.write(chunk)
    conn.commit()
    print(time.perf_counter() - started)
"""

# The plain SQL pass on PostgreSQL: every row evaluate reads, streamed by a server-side cursor.
PG_SQL_FLOOR = f"""
import sys, psycopg
n = 0
with psycopg.connect(sys.argv[1]) as conn:
    for sql in {FLOOR_SELECTS!r}:
        with conn.cursor(name="floor") as cur:
            cur.itersize = 5000
            cur.execute(sql)
            for row in cur:
                n += 1
print(n)
"""


def _peak_of(argv: list[str]) -> tuple[str, float]:
    """Run a child to its end: its stdout and its peak memory in MiB (wait4's ru_maxrss)."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            raise SystemExit(f"benchmark command failed ({code}): {' '.join(argv[:3])}\n{err.read().decode()[-2000:]}")
    return out.decode(), usage.ru_maxrss / 1024


def admin(pg: PostgresLab, *statements: str) -> None:
    """Statements on the server's maintenance database (CREATE/DROP DATABASE cannot run in a transaction)."""
    with pg.connect(autocommit=True, dbname="postgres") as conn:
        for sql in statements:
            conn.execute(sql)


def db_url(pg: PostgresLab, name: str) -> str:
    return pg.url.rsplit("/", 1)[0] + "/" + name


def posture(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([POSTURE, *args], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"posture {' '.join(args[:6])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def counts(pg: PostgresLab, name: str) -> dict[str, int]:
    """Row counts of the inventory's own tables (the queue library's are left out)."""
    with pg.connect(dbname=name) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND "
                                             "tablename NOT LIKE 'procrastinate%' ORDER BY 1")]  # fmt: skip
        return {t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables}  # type: ignore[index]


def dependency_order(pg: PostgresLab, name: str, tables: list[str]) -> list[str]:
    """`tables`, each after those it references (foreign keys), so a COPY into them in turn is accepted."""
    with pg.connect(dbname=name) as conn:
        refs = conn.execute("SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c "
                            "WHERE c.contype = 'f'").fetchall()  # fmt: skip
    needs = {t: {r for s, r in refs if s == t and r != t and r in tables} for t in tables}
    ordered: list[str] = []
    while len(ordered) < len(tables):
        ready = [t for t in tables if t not in ordered and needs[t] <= set(ordered)]
        if not ready:
            raise SystemExit(f"the written tables reference each other in a cycle: {sorted(needs)}")
        ordered += ready
    return ordered


def make_homes(tmp: Path) -> tuple[list[dict[str, str]], list[str]]:
    """COLLECTORS machines of their own (config, state, data folders), each with a signing key: their
    environments and their public lines for `[sites.bench] collectors`."""
    envs, lines = [], []
    for n in range(COLLECTORS):
        base = tmp / f"collector-{n}"
        env = {**os.environ, "XDG_CONFIG_HOME": str(base / "config"), "XDG_STATE_HOME": str(base / "state"),
               "XDG_DATA_HOME": str(base / "data")}  # fmt: skip
        posture("keys", "generate", env=env)
        line = (base / "config" / "posture" / "keys" / "signing.pub").read_text(encoding="utf-8").split()
        envs.append(env)
        lines.append(" ".join([*line[:2], f"bench-collector-{n}"]))
    return envs, lines


def targets_of(hosts: int) -> tuple[str, str]:
    """(the job's one target: `hosts` addresses from 10.0.0.0 as a range, the site's scope: the smallest
    network from 10.0.0.0 that covers them, a /14 for the issue's 200,000)."""
    import ipaddress

    first = ipaddress.ip_address("10.0.0.0")
    prefix = 32 - max(8, (hosts - 1).bit_length())
    return f"{first}-{first + hosts - 1}", f"{first}/{prefix}"


@contextlib.contextmanager
def serving(url: str, config: Path, tmp: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """`posture serve` over TLS on SERVER (its certificate made here), until the block ends: (the process,
    its URL, the CA file). Its log goes to tmp/serve.log."""
    import ssl
    import urllib.request

    from scanner.lab import free_port
    from tests.scanner.sites_lab import make_tls

    (tmp / "tls").mkdir()
    ca, cert, key = make_tls(tmp / "tls", [SERVER])
    port = free_port(SERVER)
    with (tmp / "serve.log").open("wb") as log:
        process = subprocess.Popen([POSTURE, "--db", url, "--config", str(config), "serve", "--listen",
                                    f"{SERVER}:{port}", "--tls-cert", str(cert), "--tls-key", str(key)],
                                   stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    base = f"https://{SERVER}:{port}"
    try:
        context = ssl.create_default_context(cafile=str(ca))
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise SystemExit("posture serve exited: " + (tmp / "serve.log").read_text(errors="replace")[-2000:])
            with contextlib.suppress(OSError), urllib.request.urlopen(  # noqa: S310 - the benchmark's own server
                base + "/healthz", context=context, timeout=5
            ) as answer:
                if answer.status == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("posture serve did not answer /healthz within 60 s")
            time.sleep(0.2)
        yield process, base, ca
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def peak_mib(pid: int) -> float:
    """A running process's peak resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def bench_ingest(pg: PostgresLab, hosts: int, tmp: Path) -> None:
    target, scope = targets_of(hosts)
    envs, lines = make_homes(tmp)
    config = tmp / "central.toml"
    config.write_text(f'[sites.{SITE}]\nscope = ["{scope}"]\nmax_rate = 100000\ncap = {COLLECTORS}\n'
                      f"collectors = {json.dumps(lines)}\n\n"
                      f'[jobs.{SITE}]\ntargets = ["{target}"]\ndns = false\nsite = "{SITE}"\n',
                      encoding="utf-8")  # fmt: skip
    url = db_url(pg, "ingest")
    admin(pg, "CREATE DATABASE ingest TEMPLATE template0 LOCALE 'C' ENCODING 'UTF8'")
    posture("--db", url, "--config", str(config), "queue", "init")
    started = time.perf_counter()
    posture("--db", url, "--config", str(config), "run", SITE, "--queue", "--chunk-size", str(CHUNK))
    enqueued = time.perf_counter() - started
    admin(pg, "CREATE DATABASE before_ingest TEMPLATE ingest")  # the floor's starting state
    before = counts(pg, "ingest")

    with serving(url, config, tmp) as (server, base, ca):
        collectors = [subprocess.Popen([PYTHON, str(ROOT / "bench" / "scale_collector.py"), base, str(ca), SITE,
                                        scope], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                      for env in envs]  # fmt: skip
        results = []
        for proc in collectors:
            out, err = proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"a collector failed ({proc.returncode}): {err[-2000:]}")
            results.append(json.loads(out.splitlines()[-1]))
        server_peak = peak_mib(server.pid)
    worked = [r for r in results if r["chunks"]]
    window = max(r["last"] for r in worked) - min(r["first"] for r in worked)
    chunks, up = sum(r["chunks"] for r in results), sum(r["hosts_up"] for r in results)
    after = counts(pg, "ingest")
    with pg.connect(dbname="ingest") as conn:
        done, total = conn.execute("SELECT count(*) FILTER (WHERE status = 'done'), count(*) FROM scan_chunks"
                                   ).fetchone()  # type: ignore[misc]  # fmt: skip
    if done != total or chunks != total:
        raise SystemExit(f"{done} of {total} chunks stored, {chunks} uploads: the run did not complete")
    written = [t for t in after if after[t] > before[t]]
    grown = [t for t in written if before[t]]
    if grown:
        raise SystemExit(f"tables that had rows before the ingestion grew: {grown} (the floor cannot tell them)")
    ordered = dependency_order(pg, "ingest", written)
    dump = tmp / "rows"
    dump.mkdir()
    with pg.connect(dbname="ingest") as conn:
        for t in ordered:
            with conn.cursor().copy(f"COPY {t} TO STDOUT (FORMAT binary)") as copy, \
                    (dump / f"{t}.copy").open("wb") as sink:  # fmt: skip
                for data in copy:
                    sink.write(data)
    size = sum(p.stat().st_size for p in dump.iterdir()) / 2**20

    floor_times, floor_peak = [], 0.0
    for _ in range(3):
        admin(pg, "DROP DATABASE IF EXISTS floor", "CREATE DATABASE floor TEMPLATE before_ingest")
        out, peak = _peak_of([PYTHON, "-c", COPY_FLOOR, db_url(pg, "floor"), str(dump), *ordered])
        floor_times.append(float(out.split()[-1]))
        floor_peak = max(floor_peak, peak)
    floor = Measure(statistics.median(floor_times), floor_peak)
    if counts(pg, "floor") != after:
        raise SystemExit("the floor's tables do not hold the ingestion's rows")
    anchor = "plain COPY of the same rows, one transaction (floor)"
    rows = sum(after[t] for t in written)
    table(
        f"scale, ingestion through the collectors' path: {hosts:,} addresses in {total} chunks of {CHUNK}, "
        f"{up:,} hosts up; {COLLECTORS} collectors",
        [(anchor, floor),
         (f"posture serve <- {COLLECTORS} collectors (TLS, signed bundles)", Measure(window, server_peak))],
        anchor,
        [f"hosts/s counts every address of the job (a chunk's result lists the {up / hosts:.0%} that answer)",
         f"rows written: {rows:,} in {len(written)} tables ({', '.join(ordered)}); dumped: {size:.0f} MiB",
         "posture: from the first take to the last chunk stored; peak = posture serve's VmHWM; the collectors,",
         "  PostgreSQL and the server share this machine's cores. floor: median of 3, its process's peak",
         f"enqueueing the run (posture run --queue) took {enqueued:.1f} s, before the window",
         "target: ingestion within 5x of COPY"],
        rate=("hosts", hosts),
    )  # fmt: skip


def bench_pg_evaluate(pg: PostgresLab, assets: int, tmp: Path) -> None:
    source = tmp / "source.db"
    subprocess.run([PYTHON, str(ROOT / "bench" / "gen_inventory.py"), str(source), str(assets)], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    url = db_url(pg, "inventory")
    admin(pg, "CREATE DATABASE inventory TEMPLATE template0 LOCALE 'C' ENCODING 'UTF8'")
    started = time.perf_counter()
    posture("migrate", "--from", str(source), "--to", url)
    migrated = time.perf_counter() - started
    admin(pg, "CREATE DATABASE migrated TEMPLATE inventory")

    def fresh() -> None:
        admin(pg, "DROP DATABASE inventory", "CREATE DATABASE inventory TEMPLATE migrated")

    floor = measure([PYTHON, "-c", PG_SQL_FLOOR, url])
    first = measure([POSTURE, "--db", url, "evaluate"], setup=fresh)
    steady = measure([POSTURE, "--db", url, "evaluate"], repeat=1)  # the day the first run stored: nothing new
    with pg.connect(dbname="inventory") as conn:
        findings = int(conn.execute("SELECT count(*) FROM findings").fetchone()[0])  # type: ignore[index]
    anchor = "one plain SQL pass over the same tables (floor)"
    table(
        f"scale, evaluate on PostgreSQL: {assets:,} assets, {assets * 20:,} software rows, every built-in rule",
        [(anchor, floor), ("posture evaluate, first run (every finding new)", first),
         ("posture evaluate again, nothing changed", steady)],
        anchor,
        [f"floor and first run: median of 3; the first run starts each time from the migrated inventory and "
         f"writes {findings:,} findings",
         "the floor streams every row evaluate reads (server-side cursor, 5,000 rows a fetch) and does nothing "
         "with them",
         f"posture migrate moved the generated inventory into PostgreSQL in {migrated:.1f} s, before the table",
         "target: evaluate within 3x of the SQL pass"],
        rate=("assets", assets),
    )  # fmt: skip


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="bench/run.py scale",
        description="Issue 18's benchmark on a PostgreSQL of its own: 8 site collectors uploading synthetic "
                    "results through posture serve beside a plain COPY of the same rows, and posture evaluate "
                    "on PostgreSQL beside one plain SQL pass. Nothing is sent to the synthetic addresses.",
    )  # fmt: skip
    parser.add_argument("--hosts", type=int, default=200_000, help="addresses of the queued job (default 200,000)")
    parser.add_argument("--assets", type=int, default=500_000, help="assets of the evaluated inventory "
                        "(default 500,000)")  # fmt: skip
    parser.add_argument("--only", choices=("ingest", "evaluate"), help="one of the two tables")
    args = parser.parse_args(argv)
    if args.hosts < 1 or args.assets < 1:
        parser.error("--hosts and --assets are at least 1")
    with PostgresLab(PG_ADDRESS) as pg, tempfile.TemporaryDirectory(prefix="posture-bench-scale-") as tmp:
        os.environ.update(pg.env)  # every child (posture, the floors) authenticates from the lab's passfile
        if args.only in (None, "ingest"):
            (Path(tmp) / "ingest").mkdir()
            bench_ingest(pg, args.hosts, Path(tmp) / "ingest")
        if args.only in (None, "evaluate"):
            (Path(tmp) / "evaluate").mkdir()
            bench_pg_evaluate(pg, args.assets, Path(tmp) / "evaluate")
