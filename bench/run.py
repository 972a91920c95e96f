"""posture's benchmarks: each row beside its anchor, measured in the same run, with the ratio.

    .venv/bin/python bench/run.py            # both benchmarks
    .venv/bin/python bench/run.py import     # nmap XML import: 20,000 hosts, 100,000 open ports
    .venv/bin/python bench/run.py scan       # posture scan vs plain nmap on the lab daemons
    .venv/bin/python bench/run.py snmp       # SNMP inventory walk of 200 agents vs snmpbulkwalk fan-out
    .venv/bin/python bench/run.py evaluate   # rules over 100,000 assets / 2,000,000 software rows vs one SQL pass
    .venv/bin/python bench/run.py bundles    # 200 agent bundles of 2,000 packages; agent collect vs dpkg-query
    .venv/bin/python bench/run.py identify [N]  # N device strings (1,000,000) through the fingerprint database
    .venv/bin/python bench/run.py catalogue  # the lifecycle catalogue's load vs json.load of the same files
    .venv/bin/python bench/run.py ad [N|--quick] # import of N (50,000) AD computer objects vs ldapsearch
    .venv/bin/python bench/run.py report     # the HTML report of 10,000 assets vs a bare Jinja2 template; Chromium
    .venv/bin/python bench/run.py startup    # posture --version, assets --help, findings vs `python -c pass`
    .venv/bin/python bench/run.py share      # share aggregate of 400 summaries x 500 rows vs a plain group-by
    .venv/bin/python bench/run.py scale [--hosts N] [--assets N]  # PostgreSQL: 8 collectors' uploads vs COPY;
                                             # evaluate of 500,000 assets vs one SQL pass (scale --help)

Every measurement is a separate process, timed from outside, its peak memory read from the kernel
(wait4's ru_maxrss), so Python start-up is counted alike for every row. Nothing here is a test: the
numbers are printed, not asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gen_nmap_xml import write as write_xml  # noqa: E402
from scanner.agents.nmap import find_nmap, nmap_args  # noqa: E402
from scanner.lab import Lab, SambaDC, SnmpdLab  # noqa: E402

PYTHON = sys.executable
POSTURE = str(Path(sys.executable).parent / "posture")


@dataclass
class Measure:
    seconds: float
    peak_mib: float


def measure(argv: list[str], repeat: int = 3, setup: object = None) -> Measure:
    """Median wall time and highest peak RSS over `repeat` runs of a command."""
    times, peaks = [], []
    for _ in range(repeat):
        if callable(setup):
            setup()
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        times.append(time.perf_counter() - started)
        peaks.append(usage.ru_maxrss / 1024)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise SystemExit(f"benchmark command failed ({code}): {' '.join(argv)}\n{err}")
        if proc.stderr:
            proc.stderr.close()
    return Measure(statistics.median(times), max(peaks))


def table(title: str, rows: list[tuple[str, Measure]], anchor: str, notes: list[str],
          rate: tuple[str, int] | None = None) -> None:  # fmt: skip
    """Print the rows beside the anchor; `rate` (unit, count) adds each row's count per second."""
    base = dict(rows)[anchor]
    print(f"\n{title}")
    unit = f"{rate[0]}/s" if rate else ""
    print(f"{'':2}{'what':52} {'seconds':>8} {unit:>10} {'peak MiB':>9} {'time vs anchor':>15}" if rate else
          f"{'':2}{'what':52} {'seconds':>8} {'peak MiB':>9} {'time vs anchor':>15}")  # fmt: skip
    for name, m in rows:
        mark = "*" if name == anchor else " "
        per_second = f" {rate[1] / m.seconds:10,.0f}" if rate else ""
        print(f"{mark:2}{name:52} {m.seconds:8.2f}{per_second} {m.peak_mib:9.1f} {m.seconds / base.seconds:14.2f}x")
    print("  * anchor")
    for note in notes:
        print(f"  {note}")


def bench_import() -> None:
    with tempfile.TemporaryDirectory(prefix="posture-bench-") as tmp:
        xml = Path(tmp) / "big.xml"
        ports = write_xml(xml)
        size_mib = xml.stat().st_size / 2**20
        db = Path(tmp) / "inventory.db"

        def fresh_db() -> None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)

        floor = (
            "import sys, xml.etree.ElementTree as ET\n"
            "n = 0\nroot = None\n"
            "for ev, el in ET.iterparse(sys.argv[1], events=('start', 'end')):\n"
            "    if root is None: root = el\n"
            "    if ev == 'end' and el.tag == 'port': n += 1\n"
            "    if ev == 'end' and el.tag == 'host': root.clear()\n"
        )
        ours = (
            "import sys\nfrom scanner.nmap_xml import NmapXmlReader\n"
            "sum(1 for _ in NmapXmlReader(open(sys.argv[1], 'rb')))"
        )
        pynmap = "import sys, nmap\nnmap.PortScanner().analyse_nmap_xml_scan(open(sys.argv[1]).read())"
        rows = [
            ("ElementTree iterparse with clearing (floor)", measure([PYTHON, "-c", floor, str(xml)])),
            ("posture's reader alone (defusedxml, no store)", measure([PYTHON, "-c", ours, str(xml)])),
            ("python-nmap analyse_nmap_xml_scan", measure([PYTHON, "-c", pynmap, str(xml)])),
            (
                "posture import nmap (parse + store in SQLite)",
                measure([POSTURE, "--db", str(db), "import", "nmap", str(xml)], setup=fresh_db),
            ),
        ]
        bigger = Path(tmp) / "bigger.xml"
        write_xml(bigger, hosts=60_000)
        rows.append(
            (
                "posture import nmap, a 3x file (60,000 hosts)",
                measure([POSTURE, "--db", str(db), "import", "nmap", str(bigger)], repeat=1, setup=fresh_db),
            )
        )
        table(
            f"nmap XML import: 20,000 hosts, {ports:,} open ports, {size_mib:.0f} MiB (median of 3)",
            rows,
            "ElementTree iterparse with clearing (floor)",
            [
                "targets: posture import at most 3x the floor, peak memory under 100 MB whatever the file's size",
                "(the last row is not comparable in time: it reads three times as much; it shows memory stays flat)",
            ],
        )


BENCH_SMB = "127.102.9.1"  # a real smbd (SMB1, nmbd) beside the lab, so the SMB scripts have a server to ask


def bench_scan() -> None:
    """posture scan beside plain nmap with the same options on the same targets: without scripts, then with
    posture's default scripts (nmap's safe SMB, NTLM, SQL Server, NetBIOS and certificate scripts) against the
    lab daemons and a real Samba."""
    from tests.scanner.smb_servers import samba

    with (Lab() as lab, tempfile.TemporaryDirectory(prefix="posture-bench-") as tmp,
          samba(Path(tmp) / "samba", BENCH_SMB, "NT1", netbios=True, netbios_name="BENCHSMB")):  # fmt: skip
        db = Path(tmp) / "inventory.db"
        rows = []
        for label, options, flags, targets in (
            ("defaults, no scripts", {"scripts": False}, ["--no-scripts"], lab.targets),
            ("connect scan, no scripts", {"privileged": False, "os_detection": False, "scripts": False},
             ["--unprivileged", "--no-scripts"], lab.targets),
            ("defaults with the default scripts", {}, [], [*lab.targets, BENCH_SMB]),
        ):  # fmt: skip
            ports = f"{lab.ports_spec},139,445"
            options = {**options, "ports": ports, "dns": False}
            nmap_cmd = [find_nmap(), *nmap_args(options), "-oX", str(Path(tmp) / "plain.xml"), *targets]
            posture_cmd = [POSTURE, "--db", str(db), "scan", *targets, "--ports", ports, "--no-dns", *flags]
            rows.append((f"plain nmap, {label}", measure(nmap_cmd)))
            rows.append((f"posture scan, {label}", measure(posture_cmd)))
        print(f"\nposture scan vs plain nmap, same options and targets: {len(lab.targets)} lab daemons "
              f"(+ smbd on {BENCH_SMB} for the scripts row), median of 3")  # fmt: skip
        print(f"{'':2}{'what':52} {'seconds':>8} {'peak MiB':>9} {'ratio':>8}")
        for i in range(0, len(rows), 2):
            (an, a), (pn, p) = rows[i], rows[i + 1]
            print(f"* {an:52} {a.seconds:8.2f} {a.peak_mib:9.1f}")
            print(f"  {pn:52} {p.seconds:8.2f} {p.peak_mib:9.1f} {p.seconds / a.seconds:7.2f}x")
        print("  * anchor for the row below it; target: ratio at most 1.1")
        print(f"  scripts: {' '.join(nmap_args({})[nmap_args({}).index('--script'):][:2])}")


# The subtrees both sides read: posture walks the columns it keeps of these tables, net-snmp the tables whole.
SNMP_SUBTREES = ["1.3.6.1.2.1.1", "1.3.6.1.2.1.2.2", "1.3.6.1.2.1.4.20", "1.3.6.1.2.1.25.6.3",
                 "1.3.6.1.2.1.25.4.2.1.2", "1.3.6.1.2.1.47.1.1.1"]  # fmt: skip


def bench_snmp(agents: int = 200, parallel: int = 64) -> None:
    addresses = [f"127.0.9.{i}" for i in range(1, agents + 1)]
    with SnmpdLab(addresses, "public", "bench", "bench-auth-key", "bench-priv-key"), \
            tempfile.TemporaryDirectory(prefix="posture-bench-") as tmp:  # fmt: skip
        db = Path(tmp) / "inventory.db"
        walker = Path(tmp) / "walk.sh"  # one agent, every subtree in turn; the address is $1 (never a name)
        walker.write_text(
            "set -e\n" + "".join(f"snmpbulkwalk -v2c -c public -m '' -Cr25 -t 2 -r 1 \"udp:$1:161\" {o} >/dev/null\n"
                                  for o in SNMP_SUBTREES)
        )  # fmt: skip
        listing = Path(tmp) / "agents.txt"
        listing.write_text("\n".join(addresses) + "\n")
        anchor = ["sh", "-c", f"xargs -P {parallel} -n 1 sh {walker} < {listing}"]

        def fresh_db() -> None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)

        posture = [POSTURE, "--db", str(db), "snmp", f"127.0.9.1-{agents}", "--snmp-concurrency", str(parallel)]
        a = measure(anchor)
        p = measure(posture, setup=fresh_db)
        rows = query_rows(db)
        print(f"\nSNMP inventory walk of {agents} agents (real snmpd; system, interfaces, addresses, "
              f"hrSWInstalled, hrSWRun, entPhysical), {parallel} in flight (median of 3)")  # fmt: skip
        print(f"{'':2}{'what':52} {'seconds':>8} {'devices/s':>10} {'peak MiB':>9} {'vs anchor':>10}")
        print(f"* {'net-snmp snmpbulkwalk, xargs -P ' + str(parallel):52} {a.seconds:8.2f} {agents / a.seconds:10.1f} "
              f"{a.peak_mib:9.1f}")  # fmt: skip
        print(f"  {'posture snmp':52} {p.seconds:8.2f} {agents / p.seconds:10.1f} {p.peak_mib:9.1f} "
              f"{a.seconds / p.seconds:9.2f}x")  # fmt: skip
        print(f"  * anchor; posture stored {rows[0]} devices ok and {rows[1]:,} software rows")
        print("  targets: posture at least as fast as the fan-out (never below half of it), peak memory under 300 MB")


# The floor: one plain SQL pass that reads every row evaluation reads (assets, their addresses, every
# software row, every open service, each observation's evidence) and does nothing with them.
FLOOR_SELECTS = ("SELECT id, name, first_seen, last_seen, in_register, owner FROM assets",
                 "SELECT asset_id, kind, value FROM asset_identifiers",
                 "SELECT asset_id, source, evidence FROM observations",
                 "SELECT asset_id, port, protocol, name, product, version, extra_info, cpes FROM services",
                 "SELECT asset_id, kind, name, cpe, cpes, method, extra FROM software")  # fmt: skip
SQL_READS = f"""
n = 0
for sql in {FLOOR_SELECTS!r}:
    for row in conn.execute(sql):
        n += 1
"""
SQL_FLOOR = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
""" + SQL_READS + """print(n)
"""


# A second yardstick: the SQL evaluate cannot avoid, without its Python. The same plain pass over the tables,
# then, in one transaction, the findings the posture run wrote (taken from its result) written with posture's
# own UPSERT, the rest marked fixed and the events recorded, as evaluate's writer does. It reads every row and
# writes 1.5 million; the first floor writes nothing.
SQL_WRITE_FLOOR = """
import sqlite3, sys
sys.path.insert(0, sys.argv[4])
from rules.findings import UPSERT_VALUES, upsert
db, rows_db, evaluation = sys.argv[1], sys.argv[2], int(sys.argv[3])
conn = sqlite3.connect(db, isolation_level=None)
for pragma in ("journal_mode = WAL", "synchronous = NORMAL", "cache_size = -8000", "foreign_keys = OFF"):
    conn.execute("PRAGMA " + pragma)
""" + SQL_READS + """conn.execute("ATTACH ? AS r", (rows_db,))
day = conn.execute("SELECT day FROM r.evaluations WHERE id = ?", (evaluation,)).fetchone()[0]
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO evaluations (id, started_at, day) VALUES (?, 'x', ?)", (evaluation, day))
conn.execute("INSERT OR IGNORE INTO finding_details SELECT * FROM r.finding_details")
rows = conn.execute("SELECT id, rule_id, asset_id, subject, details_id FROM r.findings WHERE evaluation_id = ? "
                    "AND status != 'fixed' ORDER BY id", (evaluation,)).fetchall()
conn.executemany(upsert(UPSERT_VALUES, day, evaluation), rows)
conn.execute("UPDATE findings SET status = 'fixed', fixed_at = ?, evaluation_id = ? "
             "WHERE status != 'fixed' AND evaluation_id != ?", (day, evaluation, evaluation))
conn.execute("INSERT INTO finding_events (evaluation_id, finding_id, event) SELECT evaluation_id, id, status "
             "FROM findings WHERE evaluation_id = ? AND status IN ('new', 'reopened', 'fixed')", (evaluation,))
conn.execute("COMMIT")
print(len(rows))
"""


def bench_evaluate(assets: int = 100_000) -> None:
    with tempfile.TemporaryDirectory(prefix="posture-bench-") as tmp:
        source = Path(tmp) / "source.db"
        # Written by a child process: a big parent would be counted in every child's peak memory (fork).
        subprocess.run([PYTHON, str(ROOT / "bench" / "gen_inventory.py"), str(source), str(assets)], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        rows = assets * 20
        db = Path(tmp) / "inventory.db"

        def copy_to_db(state: Path) -> Callable[[], None]:
            def setup() -> None:
                for suffix in ("-wal", "-shm"):
                    Path(f"{db}{suffix}").unlink(missing_ok=True)
                shutil.copyfile(state, db)

            return setup

        fresh_db = copy_to_db(source)

        first = measure([POSTURE, "--db", str(db), "evaluate"], setup=fresh_db)
        fresh_db()
        subprocess.run([POSTURE, "--db", str(db), "evaluate"], check=True, capture_output=True)
        after_first = Path(tmp) / "after-first.db"  # the first run's findings, for the writing yardstick
        shutil.copyfile(db, after_first)
        # 70 days on, each time from the first run's state: every finding found again (new becomes open),
        # and those past their SLA get findings of their own.
        later = (date.today() + timedelta(days=70)).isoformat()
        again = measure([POSTURE, "--db", str(db), "evaluate", "--on", later], setup=copy_to_db(after_first))
        # The day after that, again and again: nothing changed, and nothing is written (a daily run over a
        # steady estate).
        after_that = (date.today() + timedelta(days=71)).isoformat()
        subprocess.run([POSTURE, "--db", str(db), "evaluate", "--on", after_that], check=True, capture_output=True)
        steady = measure([POSTURE, "--db", str(db), "evaluate", "--on", after_that])
        floor = measure([PYTHON, "-c", SQL_FLOOR, str(db)])
        write_floor = measure([PYTHON, "-c", SQL_WRITE_FLOOR, str(db), str(after_first), "1", str(ROOT)],
                              setup=fresh_db)  # fmt: skip
        table(
            f"evaluate: {assets:,} assets, {rows:,} software rows, every built-in rule (median of 3)",
            [
                ("one plain SQL pass over the same tables (floor)", floor),
                ("the same pass, then the first run's findings written", write_floor),
                ("posture evaluate, first run (every finding new)", first),
                ("posture evaluate, 70 days later (all open, SLA findings)", again),
                ("posture evaluate, the day after (nothing changed)", steady),
            ],
            "one plain SQL pass over the same tables (floor)",
            ["targets: at most 3x the floor and under 30 s; peak memory under 1 GB",
             f"posture's first run is {first.seconds / write_floor.seconds:.2f}x the floor that also writes its "
             "findings (posture's UPSERT, fixed and events, one transaction, no Python per row)",
             "posture's runs write ~1.5 million findings (the first floor writes nothing)"],
        )  # fmt: skip


def bench_bundles(hosts: int = 200, packages: int = 2_000) -> None:
    """Host agents: collecting on this machine, and importing a site's worth of signed bundles."""
    with tempfile.TemporaryDirectory(prefix="posture-bench-") as tmp:
        env_before = dict(os.environ)
        os.environ.update({"XDG_CONFIG_HOME": f"{tmp}/config", "XDG_STATE_HOME": f"{tmp}/state"})
        try:
            from scanner.bundles import generate_keys, make_bundle, trust, write_bundle
            from scanner.hostagent import collect

            trust(generate_keys()["signing"], "bench")
            template = collect()
            files = []
            for n in range(hosts):
                address = ["ipv4", f"10.9.{n // 250}.{n % 250 + 1}"]  # data only: nothing is sent there
                host = {"machine_id": f"{n:032x}", "hostnames": [f"host-{n}"], "addresses": [address], "macs": []}
                pkgs = [{"manager": "dpkg", "name": f"pkg-{i}", "version": f"1.{i % 7}-{n % 3}"}
                        for i in range(packages)]  # fmt: skip
                path = Path(tmp) / f"host-{n}.bundle"
                write_bundle(path, make_bundle({**template, "bundle_id": f"{n:032x}", "host": host, "packages": pkgs}))
                files.append(str(path))
            db = Path(tmp) / "inventory.db"

            def fresh_db() -> None:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{db}{suffix}").unlink(missing_ok=True)

            floor = (  # verify, unpack, and insert each bundle's packages in one transaction: nothing else
                "import sys, json, gzip, base64, sqlite3\n"
                "from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey\n"
                "from scanner.bundles import trusted_keys, _signed_message\n"
                "keys = trusted_keys()\n"
                "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
                "db.execute('PRAGMA journal_mode = WAL'); db.execute('PRAGMA synchronous = NORMAL')\n"
                "db.execute('CREATE TABLE software (id INTEGER PRIMARY KEY, observation_id INTEGER, kind TEXT, "
                "name TEXT, version TEXT, method TEXT)')\n"
                "db.execute('CREATE INDEX software_observation ON software(observation_id)')\n"
                "for n, f in enumerate(sys.argv[2:]):\n"
                "    e = json.loads(open(f, 'rb').read())\n"
                "    packed = base64.b64decode(e['payload'])\n"
                "    Ed25519PublicKey.from_public_bytes(base64.b64decode(keys[e['key_id']]['public']))"
                ".verify(base64.b64decode(e['signature']), _signed_message(e['key_id'], packed))\n"
                "    p = json.loads(gzip.decompress(packed))\n"
                "    db.execute('BEGIN')\n"
                "    db.executemany('INSERT INTO software (observation_id, kind, name, version, method) "
                "VALUES (?, ?, ?, ?, ?)', [(n, 'application', k['name'], k['version'], k['manager']) "
                "for k in p['packages']])\n"
                "    db.execute('COMMIT')\n"
            )
            rows = [
                ("verify + unpack + insert the packages (floor)",
                 measure([PYTHON, "-c", floor, str(db), *files], setup=fresh_db)),
                ("posture import bundle (verify, check, store)",
                 measure([POSTURE, "--db", str(db), "import", "bundle", *files], setup=fresh_db)),
            ]  # fmt: skip
            table(f"bundle import: {hosts} hosts x {packages:,} packages (median of 3)", rows,
                  "verify + unpack + insert the packages (floor)",
                  ["target: at most 3x the floor; peak memory flat (one bundle in memory at a time)",
                   "posture also verifies each file twice (before anything is written, and as it writes),",
                   "matches the asset, writes the observation, services, identifiers, replay record"])  # fmt: skip
            out = Path(tmp) / "this.bundle"
            dpkg = ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n"]
            rows = [
                ("dpkg-query -W alone (anchor)", measure(dpkg)),
                ("posture agent collect (all readers, signed)",
                 measure([POSTURE, "agent", "collect", "--out", str(out)])),
            ]  # fmt: skip
            table(f"agent collect on this machine ({len(template['packages'])} packages, median of 3)", rows,
                  "dpkg-query -W alone (anchor)",
                  ["most of the difference is Python's and click's start-up"])  # fmt: skip
        finally:
            os.environ.clear()
            os.environ.update(env_before)


# Both children read the same strings: one JSON list of [text, sysObjectID] per line.
FINGERPRINT_RUN = """
import json, re, sys
sys.path.insert(0, sys.argv[3])
rows = [json.loads(line) for line in open(sys.argv[2], encoding="utf-8")]
if sys.argv[1] == "floor":
    pattern = re.compile(r"Version (\\S+)")
    found = sum(1 for _, text, _ in rows if pattern.search(text[:4096]))
else:
    from rules.fingerprints import database
    db = database()
    found = sum(1 for field, text, oid in rows if db.match_all(field, text, oid))
print(found)
"""


def bench_identify(strings: int = 1_000_000) -> None:
    """The whole fingerprint database over real-shaped device strings (its own examples of every field:
    sysDescr, nmap service lines, osmatch names, MAC vendors; cycled), each string getting every kind it
    names (`match_all`), beside one precompiled regex over the same strings: the floor any matcher pays
    to look at each string once."""
    import json

    from scanner.compat import tomllib

    examples = []
    for path in sorted((ROOT / "rules" / "fingerprints").glob("*/*.toml")):
        for fp in tomllib.loads(path.read_text(encoding="utf-8"))["fingerprint"]:
            examples += [(path.parent.name, e["text"], e.get("object_id")) for e in fp["example"]]
    with tempfile.TemporaryDirectory(prefix="posture-bench-") as tmp:
        data = Path(tmp) / "strings.jsonl"
        with data.open("w", encoding="utf-8") as out:
            for i in range(strings):
                out.write(json.dumps(examples[i % len(examples)]) + "\n")
        run = [PYTHON, "-c", FINGERPRINT_RUN]
        table(
            f"identify: {strings:,} device strings ({len(examples)} real examples of every field, cycled), median of 3",
            [
                ("one precompiled regex over every string (floor)", measure([*run, "floor", str(data), str(ROOT)])),
                ("the whole fingerprint database (every kind)", measure([*run, "database", str(data), str(ROOT)])),
            ],
            "one precompiled regex over every string (floor)",
            ["both rows read the same strings from a file; start-up (and loading the database with its "
             "examples checked) is counted alike"],
        )  # fmt: skip


def query_rows(db: Path) -> tuple[int, int]:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        ok = conn.execute("SELECT count(*) FROM scan_targets WHERE status = 'ok'").fetchone()[0]
        software = conn.execute("SELECT count(*) FROM software").fetchone()[0]
        return ok, software
    finally:
        conn.close()


CATALOGUE_FLOOR = """
import json, sys
from pathlib import Path
for folder in sys.argv[1:]:
    for path in sorted(Path(folder).glob("*.json")):
        json.load(open(path, encoding="utf-8"))
"""
CATALOGUE_LOAD = ("import sys; sys.path.insert(0, sys.argv[1])\n"
                  "from rules.catalogue import load_catalogue\nload_catalogue()")


def bench_catalogue() -> None:
    """Loading the whole catalogue (464 endoflife.date products and the sourced tables, every field checked)
    beside reading the same JSON files with json.load and nothing else."""
    data = ROOT / "rules" / "data"
    floor = measure([PYTHON, "-c", CATALOGUE_FLOOR, str(data / "eol"), str(data / "lifecycle")], repeat=5)
    load = measure([PYTHON, "-c", CATALOGUE_LOAD, str(ROOT)], repeat=5)
    empty = measure([PYTHON, "-c", "pass"], repeat=5)
    table(
        "catalogue: every product and table, loaded and checked (median of 5)",
        [("json.load of the same files (floor)", floor), ("posture's catalogue load (rules.catalogue)", load),
         ("python start-up alone (in both rows)", empty)],
        "json.load of the same files (floor)",
        ["each row is a fresh process: Python start-up is counted alike"],
    )  # fmt: skip


REPORT_FLOOR = """
import json, sqlite3, sys
from jinja2 import Environment
conn = sqlite3.connect(sys.argv[1])
assets = conn.execute("SELECT a.id, a.name, a.owner, (SELECT value FROM asset_identifiers i WHERE i.asset_id = a.id "
                      "LIMIT 1) FROM assets a").fetchall()
findings = conn.execute("SELECT f.id, f.rule_id, r.title, r.severity, f.asset_id, f.status, d.json FROM findings f "
                        "JOIN finding_rules r ON r.id = f.rule_id JOIN finding_details d ON d.id = f.details_id "
                        "WHERE f.status != 'fixed'").fetchall()
rows = [(f[0], f[1], f[2], f[3], f[4], f[5], json.loads(f[6]).get("evidence")) for f in findings]
template = Environment(autoescape=True).from_string(
    "<html><body><table>{% for a in assets %}<tr><td>{{ a[0] }}</td><td>{{ a[3] }}</td><td>{{ a[1] }}</td>"
    "<td>{{ a[2] }}</td></tr>{% endfor %}</table><table>{% for f in rows %}<tr><td>{{ f[0] }}</td><td>{{ f[1] }}"
    "</td><td>{{ f[2] }}</td><td>{{ f[3] }}</td><td>{{ f[4] }}</td><td>{{ f[5] }}</td><td>{{ f[6] }}</td></tr>"
    "{% endfor %}</table></body></html>")
with open(sys.argv[2], "w", encoding="utf-8") as out:
    out.write(template.render(assets=assets, rows=rows))
"""


def bench_report(assets: int = 10_000) -> None:
    """`posture report` on 10,000 assets with about 60,000 open findings, beside rendering the same rows
    (every asset, every open finding with its evidence) through a bare Jinja2 template; the HTML's size and
    Chromium's time to load it (headless, --dump-dom, timed from outside)."""
    with tempfile.TemporaryDirectory(prefix="posture-bench-") as tmp:
        db = Path(tmp) / "inventory.db"
        subprocess.run([PYTHON, str(ROOT / "bench" / "gen_inventory.py"), str(db), str(assets), "1"], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        subprocess.run([POSTURE, "--db", str(db), "evaluate"], check=True, capture_output=True)
        open_findings = sqlite_count(db, "SELECT count(*) FROM findings WHERE status != 'fixed'")
        html, bare = Path(tmp) / "report.html", Path(tmp) / "bare.html"
        floor = measure([PYTHON, "-c", REPORT_FLOOR, str(db), str(bare)])
        posture = measure([POSTURE, "--db", str(db), "report", "--html", str(html)])
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        rows = [("bare Jinja2 template, the same rows (floor)", floor), ("posture report --html", posture)]
        if chromium:
            profile = Path(tmp) / "chromium"
            browser = [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                       "--dump-dom"]  # fmt: skip
            rows.append(("chromium --headless --dump-dom of posture's report", measure([*browser, html.as_uri()])))
            rows.append(("chromium start-up alone (about:blank)",
                         measure([*browser, "about:blank"])))  # fmt: skip
        table(
            f"report: {assets:,} assets, {open_findings:,} open findings (median of 3)",
            rows,
            "bare Jinja2 template, the same rows (floor)",
            [f"HTML: posture {html.stat().st_size / 2**20:.1f} MiB, "
             f"bare template {bare.stat().st_size / 2**20:.1f} MiB",
             "targets: posture under 5 s and 15 MB; Chromium's load under 3 s (less its start-up)"],
        )  # fmt: skip


# Real-shaped computer objects for the AD benchmark: operatingSystem / operatingSystemVersion pairs from
# tests/scanner/test_directory.py (each sourced there).
AD_SYSTEMS = [("Windows 10 Pro", "10.0 (19045)"), ("Windows 11 Enterprise", "10.0 (26100)"),
              ("Windows Server 2019 Datacenter", "10.0 (17763)"), ("Windows Server 2012 R2 Standard", "6.3 (9600)"),
              ("Windows Server 2008 R2 Standard", "6.1 (7601)"), ("Windows XP Professional", "5.1 (2600)")]  # fmt: skip
AD_ATTRIBUTES = ["name", "dNSHostName", "operatingSystem", "operatingSystemVersion", "operatingSystemServicePack",
                 "lastLogonTimestamp", "pwdLastSet", "whenCreated", "userAccountControl", "managedBy", "description"]


def bench_startup(assets: int = 100) -> None:
    """What a person waits for before a command does anything: start-up, beside the interpreter's own."""
    with tempfile.TemporaryDirectory(prefix="posture-bench-") as tmp:
        db = Path(tmp) / "inventory.db"
        subprocess.run([PYTHON, str(ROOT / "bench" / "gen_inventory.py"), str(db), str(assets)], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        subprocess.run([POSTURE, "--db", str(db), "evaluate"], check=True, capture_output=True)
        floor = "python -c pass (floor)"
        table(
            "start-up: commands that print and leave (median of 10)",
            [
                (floor, measure([PYTHON, "-c", "pass"], repeat=10)),
                ("posture --version", measure([POSTURE, "--version"], repeat=10)),
                ("posture assets --help", measure([POSTURE, "assets", "--help"], repeat=10)),
                (f"posture findings ({assets} assets, evaluated)", measure([POSTURE, "--db", str(db), "findings"],
                                                                           repeat=10)),
            ],
            floor,
            ["target: posture --version under 0.25 s (the later stages, rules/ and reports/, load only for "
             "their own commands)",
             f"findings prints every open finding of {assets} generated assets (~1,500 rows): most of its time is "
             "rich laying out the table, not start-up"],
        )  # fmt: skip


def _ad_ldif(path: Path, objects: int) -> None:
    """An OU of `objects` computer objects, as Windows leaves them after joining and logging on."""
    logon = 134_000_000_000_000_000  # a FILETIME in 2025
    with path.open("w") as out:
        for n in range(objects):
            ou = f"OU=Site{n // 1000:03d},{SambaDC.BASE_DN}"  # an OU per 1,000, as estates split them
            if n % 1000 == 0:
                out.write(f"dn: {ou}\nobjectClass: organizationalUnit\n\n")
            os_name, version = AD_SYSTEMS[n % len(AD_SYSTEMS)]
            out.write(f"dn: CN=PC{n:06d},{ou}\nobjectClass: computer\n"
                      f"sAMAccountName: PC{n:06d}$\nuserAccountControl: 4096\n"
                      f"dNSHostName: pc{n:06d}.posture.test\noperatingSystem: {os_name}\n"
                      f"operatingSystemVersion: {version}\nlastLogonTimestamp: {logon + n}\n\n")  # fmt: skip


def bench_ad(objects: int = 50_000) -> None:
    """posture import ad of `objects` computer objects from a real Samba AD DC (LDAPS, paged), beside
    ldapsearch reading the same attributes with paging into /dev/null: the floor any LDAP client has."""
    with tempfile.TemporaryDirectory(prefix="posture-bench-") as tmp, SambaDC("127.101.1.1") as dc:
        work = Path(tmp)
        ldif = work / "computers.ldif"
        _ad_ldif(ldif, objects)
        dc.stop_server()
        started = time.perf_counter()
        dc.add_ldif_offline(ldif)
        added = time.perf_counter() - started
        dc.start()
        secret = work / "password"
        secret.write_text(dc.password)  # ldapsearch -y reads it exactly, no newline
        env = {**os.environ, "LDAPTLS_CACERT": str(dc.ca_file), "XDG_CONFIG_HOME": str(work / "config"),
               "POSTURE_VAULT": str(work / "config" / "credentials.json")}  # fmt: skip
        subprocess.run([POSTURE, "creds", "add", "ldap", "bench", "--stdin"], input=f"{dc.ADMIN}\n{dc.password}\n",
                       text=True, env=env, check=True, capture_output=True)  # fmt: skip
        os.environ.update(env)  # measure() runs its commands with this environment
        url = f"ldaps://{dc.address}"
        floor_cmd = ["sh", "-c", 'exec ldapsearch -LLL -H "$0" -x -D "$1" -y "$2" -b "$3" -E pr=1000/noprompt '
                     '"(objectCategory=computer)" "$@" >/dev/null', url, dc.ADMIN, str(secret), dc.BASE_DN,
                     *AD_ATTRIBUTES]  # fmt: skip
        floor = measure(floor_cmd)
        db = work / "inventory.db"
        posture = measure([POSTURE, "--db", str(db), "import", "ad", url, "--creds", "bench", "--ca-file",
                           str(dc.ca_file)], setup=lambda: db.unlink(missing_ok=True))  # fmt: skip
        found = sqlite_count(db, "SELECT count(*) FROM observations WHERE source = 'ad'")
    table(
        f"ad: {objects:,} computer objects from a Samba AD DC over LDAPS, paged (median of 3)",
        [("ldapsearch -E pr=1000, same attributes (floor)", floor),
         ("posture import ad (pages of 500)", posture)],
        "ldapsearch -E pr=1000, same attributes (floor)",
        [f"posture saved {found:,} objects (the DC's own computer object included) into a fresh inventory each run",
         f"the objects were added to the stopped DC's sam.ldb with Samba's bindings in {added:.0f} s",
         "posture's row includes Python start-up, the vault, identification-ready rows and SQLite writes"],
    )  # fmt: skip


SHARE_FLOOR = """
import json, sys
cells = {}
for name in sys.argv[1:]:
    with open(name, encoding="utf-8") as f:
        for r in json.load(f)["rows"]:
            key = (r["kind"], r["product"], r["cycle"], r["category"], r["hardware_family"], r["eol_date"],
                   r["eol_financial_year"], r["extended_until"])
            cell = cells.get(key)
            if cell is None:
                cells[key] = [r["count_min"], r["count_max"], 1]
            else:
                cell[0] += r["count_min"]; cell[1] += r["count_max"]; cell[2] += 1
print(sum(1 for c in cells.values() if c[2] >= 5 and c[0] >= 10))
"""


def bench_share(councils: int = 400, rows: int = 500) -> None:
    """`posture share aggregate` over 400 council summaries (about the number of UK councils) of 500 rows,
    beside a plain Python group-by of the same rows (json.load and dict sums: the floor). Target: under 3x
    the floor and under 10 s."""
    from bench.gen_share import write_councils

    with tempfile.TemporaryDirectory(prefix="posture-bench-share-") as tmp:
        started = time.perf_counter()
        paths = [str(p) for p in write_councils(Path(tmp) / "in", councils, rows, seed=17, size=2 * rows)]
        made = time.perf_counter() - started
        size = sum(Path(p).stat().st_size for p in paths)
        floor = measure([PYTHON, "-c", SHARE_FLOOR, *paths])
        pooled = measure([POSTURE, "share", "aggregate", *paths, "--out", str(Path(tmp) / "out")])
        cells = len(json.loads((Path(tmp) / "out" / "pooled.json").read_text(encoding="utf-8"))["rows"])
        table(
            f"share aggregate: {councils} summaries x {rows} rows ({size / 2**20:.0f} MiB of JSON; median of 3)",
            [("plain Python group-by: json.load + dict sums (floor)", floor),
             ("posture share aggregate (checks, pools, 3 files)", pooled)],
            "plain Python group-by: json.load + dict sums (floor)",
            [f"{cells} rows published; summaries generated in {made:.1f} s (bench/gen_share.py, seed 17)",
             "target: under 3x the floor and under 10 s"],
        )  # fmt: skip


def sqlite_count(db: Path, sql: str) -> int:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    if which not in ("all", "import", "scan", "snmp", "evaluate", "bundles", "identify", "catalogue", "ad", "report",
                     "startup", "share", "scale"):
        raise SystemExit("usage: bench/run.py [all|import|scan|snmp|evaluate|bundles|identify [N]|catalogue|"
                         "ad [N|--quick]|report|startup|share|scale [--hosts N] [--assets N]]")
    if which == "scale":  # PostgreSQL at the sizes: on its own, not part of `all`
        from bench.scale import main

        main(sys.argv[2:])
    if which in ("all", "startup"):
        bench_startup()
    if which in ("all", "import"):
        bench_import()
    if which in ("all", "scan"):
        bench_scan()
    if which in ("all", "snmp"):
        bench_snmp()
    if which in ("all", "evaluate"):
        bench_evaluate()
    if which in ("all", "bundles"):
        bench_bundles()
    if which in ("all", "identify"):
        bench_identify(int(sys.argv[2]) if which == "identify" and len(sys.argv) > 2 else 1_000_000)
    if which in ("all", "catalogue"):
        bench_catalogue()
    if which in ("all", "report"):
        bench_report()
    if which in ("all", "share"):
        bench_share()
    if which in ("all", "ad"):
        size = sys.argv[2] if which == "ad" and len(sys.argv) > 2 else "50000"
        bench_ad(2_000 if size == "--quick" else int(size))
