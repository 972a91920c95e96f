"""The tools behind the discovery sources: nmap (`nmap`), SNMP (`snmp`, `snmp_wire`).

The sources themselves, their interface and registry, are in `scanner.sources`.
"""

from __future__ import annotations

from collections.abc import Callable

ProgressCallback = Callable[[int], None]  # hosts of this chunk finished so far
