"""A fake SNMPv2c agent written from scratch: a real UDP socket on loopback, requests and answers in
hand-built BER, so a test can serve what no real agent would (a 2,000-byte TimeTicks, a 40 KB string).

It answers GET, GETNEXT and GETBULK from a table of OIDs whose values are given as raw BER TLVs, checks
the community (a wrong one gets silence, as real agents do) and ignores anything it cannot parse (an
SNMPv3 probe). It is deliberately independent of posture's own codec (`scanner.agents.snmp_wire`).
"""

from __future__ import annotations

import bisect

from tests.scanner.snmp_agents import UdpAgent


def tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes((tag, n)) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + body


def integer(value: int, tag: int = 0x02) -> bytes:
    return tlv(tag, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True))


def octets(value: bytes | str) -> bytes:
    return tlv(0x04, value.encode() if isinstance(value, str) else value)


def oid_body(arcs: tuple[int, ...]) -> bytes:
    out = bytearray((arcs[0] * 40 + arcs[1],))
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out.extend(reversed(chunk))
    return bytes(out)


def object_id(text: str) -> bytes:
    return tlv(0x06, oid_body(parse_oid(text)))


def parse_oid(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.strip(".").split("."))


def _read(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the TLV at pos."""
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first & 0x80:
        count = first & 0x7F
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    else:
        length = first
    return tag, pos, pos + length


def _decode_oid(body: bytes) -> tuple[int, ...]:
    arcs = [body[0] // 40, body[0] % 40]
    value = 0
    for byte in body[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    return tuple(arcs)


END_OF_MIB = b"\x82\x00"
NO_SUCH_OBJECT = b"\x80\x00"


class FakeAgent(UdpAgent):
    """Serves `mib` ({OID text: BER TLV of the value}) on address:port until the `with` block ends."""

    def __init__(self, address: str, mib: dict[str, bytes], community: bytes = b"public", port: int = 161) -> None:
        self.community = community
        self.oids = sorted(parse_oid(o) for o in mib)
        self.values = {parse_oid(o): v for o, v in mib.items()}
        self.requests = 0
        super().__init__(address, port, timeout=0.1)

    def _next(self, oid: tuple[int, ...]) -> tuple[tuple[int, ...], bytes]:
        i = bisect.bisect_right(self.oids, oid)
        if i == len(self.oids):
            return oid, END_OF_MIB
        found = self.oids[i]
        return found, self.values[found]

    def answer(self, data: bytes) -> bytes | None:
        """The response to one request, or None for anything that is not a v2c request with our community."""
        try:
            _, pos, _ = _read(data, 0)
            _, start, pos = _read(data, pos)
            version = int.from_bytes(data[start:pos], "big")
            _, start, pos = _read(data, pos)
            if version != 1 or data[start:pos] != self.community:
                return None
            pdu, pos, _ = _read(data, pos)
            fields = []
            for _ in range(3):
                _, start, pos = _read(data, pos)
                fields.append(data[start:pos])
            _, pos, list_end = _read(data, pos)
            asked = []
            while pos < list_end:
                _, inner, pos = _read(data, pos)
                _, ostart, oend = _read(data, inner)
                asked.append(_decode_oid(data[ostart:oend]))
        except IndexError:
            return None
        binds: list[tuple[tuple[int, ...], bytes]] = []
        if pdu == 0xA0:  # GET
            binds = [(o, self.values.get(o, NO_SUCH_OBJECT)) for o in asked]
        elif pdu == 0xA1:  # GETNEXT
            binds = [self._next(o) for o in asked]
        elif pdu == 0xA5:  # GETBULK (non-repeaters taken as 0, as posture sends)
            last = list(asked)
            for _ in range(min(int.from_bytes(fields[2], "big"), 50)):
                for i, o in enumerate(last):
                    last[i], value = self._next(o)
                    binds.append((last[i], value))
        else:
            return None

        def response(binds: list[tuple[tuple[int, ...], bytes]]) -> bytes:
            varbinds = b"".join(tlv(0x30, tlv(0x06, oid_body(o)) + v) for o, v in binds)
            body = tlv(0x02, fields[0]) + integer(0) + integer(0) + tlv(0x30, varbinds)
            return tlv(0x30, integer(1) + octets(self.community) + tlv(0xA2, body))

        message = response(binds)
        while len(message) > 65000 and len(binds) > 1:  # keep to one datagram, as real agents do (tooBig)
            binds = binds[: len(binds) // 2]
            message = response(binds)
        return message

    def _serve(self) -> None:
        while not self._stop.is_set() and self.requests < 20000:  # bounded, whatever the client does
            try:
                data, peer = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = self.answer(data)
            if reply is not None:
                self.requests += 1
                self._sock.sendto(reply, peer)


def system_mib(descr: bytes | str = "Linux honest-host 5.10.0 x86_64", name: str = "honest-host") -> dict[str, bytes]:
    """A sane device: the system group, two interfaces and three installed packages."""
    mib = {
        "1.3.6.1.2.1.1.1.0": octets(descr),
        "1.3.6.1.2.1.1.2.0": object_id("1.3.6.1.4.1.8072.3.2.10"),
        "1.3.6.1.2.1.1.3.0": integer(123456, 0x43),
        "1.3.6.1.2.1.1.4.0": octets("noc@example.org"),
        "1.3.6.1.2.1.1.5.0": octets(name),
        "1.3.6.1.2.1.1.6.0": octets("server room"),
    }
    for i, (descr_i, mac) in enumerate([("lo", b""), ("eth0", bytes.fromhex("02005e100001"))], 1):
        mib[f"1.3.6.1.2.1.2.2.1.2.{i}"] = octets(descr_i)
        mib[f"1.3.6.1.2.1.2.2.1.3.{i}"] = integer(24 if i == 1 else 6)
        mib[f"1.3.6.1.2.1.2.2.1.5.{i}"] = integer(1000000000, 0x42)
        mib[f"1.3.6.1.2.1.2.2.1.6.{i}"] = octets(mac)
        mib[f"1.3.6.1.2.1.2.2.1.8.{i}"] = integer(1)
    for i, package in enumerate(["openssl-1.1.1k", "bash-5.1", "openssh-server-8.4p1"], 1):
        mib[f"1.3.6.1.2.1.25.6.3.1.2.{i}"] = octets(package)
        mib[f"1.3.6.1.2.1.25.6.3.1.4.{i}"] = integer(4)
    return mib
