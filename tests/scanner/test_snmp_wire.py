"""The v1/v2c wire codec, checked against pysnmp's own (pyasn1) codec, and against hostile bytes."""

from __future__ import annotations

import contextlib
import random

import pytest
from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto import api

from scanner.agents.snmp_wire import GETBULK, GETNEXT, WireError, decode_response, encode_request

V2C = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]


def test_requests_decode_with_pysnmp() -> None:
    oids = [(1, 3, 6, 1, 2, 1, 25, 6, 3, 1, 2), (1, 3, 6, 1, 4, 1, 2636, 3, 1, 13, 1, 5, 9, 1, 0, 0, 300000)]
    message, _ = decoder.decode(encode_request(1, b"public", GETBULK, 123456, oids, 25), asn1Spec=V2C.Message())
    pdu = V2C.apiMessage.get_pdu(message)
    assert bytes(V2C.apiMessage.get_community(message)) == b"public"
    assert int(V2C.apiBulkPDU.get_request_id(pdu)) == 123456
    assert int(V2C.apiBulkPDU.get_max_repetitions(pdu)) == 25
    assert [tuple(o) for o, _ in V2C.apiBulkPDU.get_varbinds(pdu)] == oids
    message, _ = decoder.decode(encode_request(1, b"c", GETNEXT, 7, oids[:1]), asn1Spec=V2C.Message())
    assert V2C.apiMessage.get_pdu(message).isSameTypeWith(V2C.GetNextRequestPDU())


def pysnmp_response() -> bytes:
    message = V2C.Message()
    V2C.apiMessage.set_defaults(message)
    pdu = V2C.GetResponsePDU()
    V2C.apiPDU.set_defaults(pdu)
    V2C.apiPDU.set_request_id(pdu, 99)
    V2C.apiPDU.set_varbinds(pdu, [
        ((1, 3, 6, 1, 2, 1, 1, 1, 0), V2C.OctetString(b"Cisco IOS \xff\x00 bytes")),
        ((1, 3, 6, 1, 2, 1, 1, 2, 0), V2C.ObjectIdentifier((1, 3, 6, 1, 4, 1, 9, 1, 516))),
        ((1, 3, 6, 1, 2, 1, 1, 3, 0), V2C.TimeTicks(4294967295)),
        ((1, 3, 6, 1, 2, 1, 2, 2, 1, 8, 1), V2C.Integer(-5)),
        ((1, 3, 6, 1, 2, 1, 4, 20, 1, 1, 10, 0, 0, 1), V2C.IpAddress("10.0.0.1")),
        ((1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 6, 1), V2C.Counter64(2**64 - 1)),
        ((1, 3, 6, 1, 2, 1, 99, 0), V2C.NoSuchObject("")),
    ])  # fmt: skip
    V2C.apiMessage.set_pdu(message, pdu)
    return bytes(encoder.encode(message))


def test_responses_from_pysnmp_decode_exactly() -> None:
    request_id, status, index, binds = decode_response(pysnmp_response())
    assert (request_id, status, index) == (99, 0, 0)
    assert [v for _, v in binds] == [
        b"Cisco IOS \xff\x00 bytes", "1.3.6.1.4.1.9.1.516", 4294967295, -5, "10.0.0.1", 2**64 - 1, None,
    ]  # fmt: skip
    assert binds[4][0] == (1, 3, 6, 1, 2, 1, 4, 20, 1, 1, 10, 0, 0, 1)


def test_truncated_and_random_bytes_never_crash_or_hang() -> None:
    good = pysnmp_response()
    for cut in range(len(good)):
        with pytest.raises(WireError):
            decode_response(good[:cut])
    rng = random.Random(7)
    for _ in range(5000):
        blob = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            blob[rng.randrange(len(blob))] = rng.randrange(256)
        with contextlib.suppress(WireError):
            decode_response(bytes(blob))
