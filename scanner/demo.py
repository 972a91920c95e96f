"""The demo: a lab of real recorded devices and real daemons on loopback, scanned as a user would.

Used by `posture demo` (and its test); the command only prints. The lab stops when the block ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from scanner.lab import Lab, SnmpSimLab
from scanner.scan import ProgressReporter, ScanSummary, run_source
from scanner.sources import Request, get_source
from scanner.store import Store
from scanner.targets import parse_target, plan_scan

DAEMON_ADDRESSES = ("127.0.1.21", "127.0.1.22", "127.0.1.23")


@dataclass
class DemoRun:
    nmap: ScanSummary
    snmp: ScanSummary


def snmp_port() -> int:
    """udp/161 needs root; without it the simulated devices listen on 1161 and are asked there."""
    return 161 if os.geteuid() == 0 else 1161


@contextmanager
def demo_lab(port: int) -> Iterator[tuple[Lab, SnmpSimLab]]:
    with Lab(DAEMON_ADDRESSES) as lab, SnmpSimLab(port=port) as sim:
        yield lab, sim


def scan_demo(store: Store, lab: Lab, sim: SnmpSimLab, hosts: ProgressReporter, devices: ProgressReporter) -> DemoRun:
    """nmap over the daemons, then SNMP over the recorded devices, into `store`."""
    plan = plan_scan([parse_target(t) for t in lab.targets])
    nmap = run_source(store, get_source("nmap"), Request(lab.targets, {"ports": lab.ports_spec, "dns": False},
                                                         plan=plan, parallel=1), hosts)  # fmt: skip
    snmp_options = {"port": sim.port, "timeout": 6, "retries": 1}
    snmp = run_source(store, get_source("snmp"), Request(list(sim.devices), snmp_options,
                                                         addresses=list(sim.devices)), devices)  # fmt: skip
    return DemoRun(nmap, snmp)
