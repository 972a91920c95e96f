"""The host-agent bundle source: one signed bundle read again, checked against the digest its first read
gave, and written with its replay record in the same transaction.

`scanner.bundles.import_files` verifies every bundle named (signature, size, shape, not seen before) before
anything is written, then runs this source once per bundle that passed, oldest first: each bundle is its
own run (a bundle speaks for one machine, on its own date), so `posture scans` and the diff see one row per
bundle, as they always did. The replay check is made again under the write lock (`record`), where another
import may just have taken the same bundle.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

from scanner.bundles import BundleRejected, VerifiedBundle, check_not_replayed, prepared_host, read_bundle, trusted_keys
from scanner.db import Database
from scanner.sources import Batch, Progress, Request, SourceError
from scanner.store import utc_now


class BundleSource:
    name = "agent"  # the scan row's and the observations' source, as bundles have always been stored
    kind = "agent-import"
    noun = "bundles"
    whole = True
    resume: str | None = None

    def __init__(self) -> None:
        self.bundle: VerifiedBundle | None = None
        self.asset_id: int | None = None

    def check(self, request: Request) -> str | None:
        if not request.input_file or not request.options.get("digest"):
            raise SourceError("a bundle run reads one bundle checked before (scanner.bundles.import_files)")
        return None

    def units(self, request: Request) -> list[tuple[list[str], int]]:
        assert request.input_file is not None
        return [([request.input_file], 1)]

    def describe(self, request: Request, unit: list[str]) -> list[str]:
        return ["read bundle", *unit]

    def collect(
        self, request: Request, units: list[tuple[int, list[str], int]], progress: Progress
    ) -> Generator[Batch, None, None]:
        o = request.options
        path = Path(units[0][1][0])
        bundle = read_bundle(path, trusted_keys(), int(o["max_bytes"]), bool(o["follow_links"]))
        if bundle.digest != o["digest"]:
            raise BundleRejected(f"{path}: changed while it was being imported", "import it again")
        self.bundle = bundle
        machine_id = bundle.payload["host"]["machine_id"]
        yield Batch([prepared_host(bundle.payload)], done=1, unit=0, tool_version=bundle.payload["agent_version"],
                    machine_ids=[[machine_id] if machine_id else []], record=self._record)  # fmt: skip

    def _record(self, conn: Database, scan_id: int, assets: list[int]) -> None:
        """The replay record, under the write lock: refused if another import has just taken this bundle."""
        bundle = self.bundle
        assert bundle is not None
        check_not_replayed(conn, bundle)
        payload = bundle.payload
        try:
            conn.execute(
                "INSERT INTO bundles (bundle_id, digest, key_id, key_name, machine_id, collected_at, imported_at, "
                "file, scan_id, asset_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [payload["bundle_id"], bundle.digest, bundle.key_id, bundle.key_name, payload["host"]["machine_id"],
                 payload["collected_at"], utc_now(), str(bundle.path)[:1024], scan_id, assets[0]],
            )  # fmt: skip
        except conn.IntegrityError:
            raise BundleRejected(f"{bundle.path}: replayed: imported by another run just now") from None
        self.asset_id = assets[0]

    def cancel(self) -> None:
        """Nothing runs in the background: a bundle is read in the caller's thread."""

    def job_request(self, settings: dict[str, Any]) -> Request:
        raise SourceError("bundles come through a job's `inbox`, not a method")
