"""`posture prune`: old scans go, the asset history stays; a dry run changes nothing."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import assets_json, db_fingerprint, execute, query, run_posture
from tests.rules.estate import NGINX, SSH_DEBIAN, Host, write_estate


def test_prune_keeps_history(store_db: Path | str, tmp_path: Path) -> None:
    db = store_db
    web = Host("10.7.0.11", "00:11:22:00:07:11", [SSH_DEBIAN, NGINX])
    gone_early = Host("10.7.0.12", "00:11:22:00:07:12", [SSH_DEBIAN])
    for n in range(4):
        hosts = [web, gone_early] if n == 0 else [web]
        xml = write_estate(tmp_path / f"scan{n}.xml", hosts, when=1_790_000_000 + n * 86_400)
        assert run_posture("import", "nmap", str(xml), db=db).returncode == 0
    register = tmp_path / "register.csv"
    register.write_text(f"IP address,Owner\n{web.ip},Web team\n", encoding="utf-8")
    assert run_posture("import", "assets", str(register), db=db).returncode == 0
    before = {a["addresses"][0]: a for a in assets_json(db)}

    fingerprint = db_fingerprint(db)
    dry = run_posture("prune", "--keep", "2", "--dry-run", db=db)
    assert dry.returncode == 0 and "would delete 2 scans: 1 2" in dry.stdout
    assert db_fingerprint(db) == fingerprint

    done = run_posture("prune", "--keep", "2", db=db)
    assert done.returncode == 0 and "deleted 2 scans: 1 2" in done.stdout
    assert query(db, "SELECT id FROM scans ORDER BY id") == [(3,), (4,), (5,)]  # the register import stays
    assert query(db, "SELECT count(*) FROM observations WHERE scan_id IN (1, 2)") == [(0,)]
    assert query(db, "SELECT count(*) FROM services WHERE scan_id IN (1, 2)") == [(0,)]
    after = {a["addresses"][0]: a for a in assets_json(db)}
    assert after.keys() == before.keys()  # the host seen only in scan 1 is still known
    for address in before:
        assert after[address]["first_seen"] == before[address]["first_seen"]
        assert after[address]["last_seen"] == before[address]["last_seen"]
    assert after[web.ip]["owner"] == "Web team"
    # Age the remaining imports by 40 days (time cannot pass in a test): --older-than deletes the older
    # one, and the newest scan of a kind is never deleted, however old.
    execute(db, "UPDATE scans SET started_at = '2020-01-01T00:00:00Z' WHERE kind != 'asset-register'")
    assert run_posture("prune", "--older-than", "30", db=db).stdout.startswith("deleted 1 scans: 3")
    assert query(db, "SELECT id FROM scans ORDER BY id") == [(4,), (5,)]
    refused = run_posture("prune", db=db)
    assert refused.returncode == 2 and "--keep N, --older-than DAYS" in refused.stderr
    assert run_posture("prune", "--keep", "0", db=db).returncode == 2
