"""Misbehaving SNMP agents, for what no real agent does on demand: answers that loop, answers that crawl.

These are real agents on real UDP sockets (loopback only) speaking SNMPv2c through pysnmp's own message
codec; only their behaviour is contrived. Each serves until stopped and answers at most `max_replies`.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import TypeVar

from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto import api

V2C = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]


Agent = TypeVar("Agent", bound="UdpAgent")  # typing.Self is 3.11+


class UdpAgent:
    """A UDP socket on a loopback address, served by `_serve` in a thread until the `with` block ends."""

    def __init__(self, address: str, port: int = 161, timeout: float = 0.2) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((address, port))
        self._sock.settimeout(timeout)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self: Agent) -> Agent:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _serve(self) -> None:
        raise NotImplementedError


class BadAgent(UdpAgent):
    """mode 'loop': every GETNEXT/GETBULK answer repeats the OIDs asked (a walk that never advances).
    mode 'slow': each reply waits `delay` seconds, and tables go on for ever (ever-increasing OIDs)."""

    def __init__(self, address: str, mode: str, delay: float = 0.3, max_replies: int = 5000) -> None:
        self.address, self.mode, self.delay, self.max_replies = address, mode, delay, max_replies
        self.replies = 0
        super().__init__(address)

    def _serve(self) -> None:
        while not self._stop.is_set() and self.replies < self.max_replies:
            try:
                data, peer = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            try:
                message, _ = decoder.decode(data, asn1Spec=V2C.Message())
            except Exception:  # noqa: S112 - not SNMPv2c (a v3 probe): stay silent like a v2c-only device
                continue
            request = V2C.apiMessage.get_pdu(message)
            response_message = V2C.apiMessage.get_response(message)
            response = V2C.apiMessage.get_pdu(response_message)
            asked = [oid for oid, _ in V2C.apiPDU.get_varbinds(request)]
            if request.isSameTypeWith(V2C.GetRequestPDU()):
                binds = [(oid, V2C.OctetString(f"{self.mode} agent")) for oid in asked]
            elif self.mode == "loop":
                binds = [(oid, V2C.OctetString("again")) for oid in asked]
            else:
                binds = [(V2C.ObjectIdentifier((*oid, 1)), V2C.OctetString("more")) for oid in asked]
            V2C.apiPDU.set_varbinds(response, binds)
            if self.mode == "slow":
                time.sleep(self.delay)
            self._sock.sendto(encoder.encode(response_message), peer)
            self.replies += 1
