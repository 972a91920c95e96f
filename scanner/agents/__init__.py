"""Discovery agents: one small interface, one registry. Add an agent by adding one module here.

An agent scans one chunk of addresses and hands back host observations; the scan job (`scanner.scan`)
owns chunking, parallelism, progress, the database and interruption, so an agent never touches SQLite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from scanner.model import HostObservation

ProgressCallback = Callable[[int], None]  # hosts of this chunk finished so far


class ChunkResult(Protocol):
    """What one chunk produced; observations are read lazily, in the thread that writes them."""

    tool_version: str | None

    def observations(self) -> Iterator[HostObservation]: ...


class DiscoveryAgent(Protocol):
    name: str

    def check(self) -> str:
        """Fail with a PostureError if the agent cannot run here; return its tool's version."""
        ...

    def describe(self, options: dict[str, Any], targets: list[str]) -> list[str]:
        """The command line (or equivalent) a chunk of these targets would run, for --dry-run."""
        ...

    def run_chunk(
        self, targets: list[str], options: dict[str, Any], workdir: str, progress: ProgressCallback
    ) -> ChunkResult: ...

    def cancel(self) -> None:
        """Stop every chunk in flight (called from the main thread on an interrupt)."""
        ...


def get_agent(name: str) -> DiscoveryAgent:
    if name == "nmap":
        from scanner.agents.nmap import NmapAgent

        return NmapAgent()
    raise KeyError(name)
