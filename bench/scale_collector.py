"""One site collector of the scale benchmark (`bench/run.py scale`): posture's own collector code, with
nmap replaced by synthetic XML.

Run with a home's environment (XDG_CONFIG_HOME holding the key `posture keys generate` made there), it
takes offers from `posture serve` with `posture.collector.Client` (signed requests), checks each with
`posture.wire.check_offer` against its scope, and uploads, for exactly the offered targets, the nmap XML
`bench.gen_nmap_xml.chunk_xml` writes, as a signed bundle (`scanner.bundles.make_bundle` of
`posture.wire.chunk_payload`). Nothing is ever sent to the targets: they are data.

    python bench/scale_collector.py SERVER_URL CA_FILE SITE SCOPE

It stops when a take finds nothing and the server's metrics show no job of the site left to do (a take
also finds nothing while the only jobs left wait for a lock another collector holds). It prints one JSON
line: the time of its first take, the time the server answered its last upload, its chunk count.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gen_nmap_xml import chunk_xml
from posture.collector import Client, CollectorSettings
from posture.queue import queue_name
from posture.wire import check_offer, chunk_payload
from scanner import __version__
from scanner.bundles import make_bundle

MAX_IDLE = 600  # seconds of finding nothing, with jobs still to do, before giving up (a stuck queue)


def jobs_left(client: Client, site: str) -> int:
    """Jobs of the site's queue still to do or running, from the server's Prometheus metrics."""
    text = client.http.get("/metrics").text
    pattern = re.compile(rf'^posture_queue_jobs{{queue="{re.escape(queue_name(site))}",status="(todo|doing)"}} (\d+)$',
                         re.M)  # fmt: skip
    return sum(int(m.group(2)) for m in pattern.finditer(text))


def main(server: str, ca: str, site: str, scope: str) -> None:
    client = Client(CollectorSettings(server=server, site=site, scope=(scope,), ca=Path(ca), timeout=300))
    first = last = None
    chunks, hosts, idle_since = 0, 0, None
    take = json.dumps({"version": __version__}).encode()
    while True:
        asked = time.time()
        status, content = client.post("/take", take)
        if status == 204:
            if jobs_left(client, site) == 0:
                break
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > MAX_IDLE:
                raise SystemExit(f"collector: nothing to take for {MAX_IDLE} s while jobs are left")
            time.sleep(0.05)
            continue
        if status != 200:
            raise SystemExit(f"collector: take refused ({status}): {content[:300]!r}")
        idle_since = None
        first = first or asked
        offer = check_offer(json.loads(content), [scope])
        xml = chunk_xml(offer.targets)
        status, content = client.post("/results", make_bundle(chunk_payload(offer, site, xml, None)))
        answer = json.loads(content) if status == 200 else {}
        if not answer.get("stored"):
            raise SystemExit(f"collector: run {offer.run} chunk {offer.seq} not stored ({status}): {content[:300]!r}")
        last = time.time()
        chunks += 1
        hosts += xml.count(b"<host ")
    client.close()
    print(json.dumps({"first": first, "last": last, "chunks": chunks, "hosts_up": hosts}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
