"""The protocol sniffer in pure bytes: whole, byte by byte, and never undecided for long."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.runtime.sniff import HTTP2_PREFACE, MAX_SNIFF_BYTES, pipeline_protocol, sniff
from tests.support.work import interpreted

DUBBO_REQUEST = b"\xda\xbb\xc2\x00" + (1).to_bytes(8, "big") + (0).to_bytes(4, "big")
THRIFT_BINARY = b"\x80\x01\x00\x01" + struct.pack("!i", 4) + b"ping" + b"\x00\x00\x00\x01"
THRIFT_COMPACT = b"\x82\x21\x01\x04ping"

CASES = [
    (DUBBO_REQUEST, "dubbo"),
    (HTTP2_PREFACE + b"\x00\x00\x00\x04", "http2"),
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "http"),
    (b"POST /v1/x HTTP/1.1\r\n", "http"),
    (b"OPTIONS * HTTP/1.1\r\n", "http"),
    (THRIFT_BINARY, "thrift"),
    (struct.pack("!I", len(THRIFT_BINARY)) + THRIFT_BINARY, "thrift"),
    (THRIFT_COMPACT, "thrift"),
    (struct.pack("!I", len(THRIFT_COMPACT)) + THRIFT_COMPACT, "thrift"),
    (b"\x16\x03\x01\x02\x00\x01", "tcp"),  # a TLS ClientHello
    (b"SSH-2.0-OpenSSH_9.2\r\n", "tcp"),
    (b"GETX / HTTP/1.1\r\n", "tcp"),
    (b"\x00\x00\x00\x00\x80\x01\x00\x01", "tcp"),  # a zero frame length
    (b"PRI * HTTP/1.1\r\n\r\n", "tcp"),  # not the HTTP/2 preface
]


@pytest.mark.parametrize(("data", "expected"), CASES)
def test_whole(data: bytes, expected: str) -> None:
    assert sniff(data) == expected


@pytest.mark.parametrize(("data", "expected"), CASES)
def test_byte_by_byte_undecided_then_one_verdict(data: bytes, expected: str) -> None:
    verdicts = [sniff(data[:n]) for n in range(len(data) + 1)]
    first = next(i for i, v in enumerate(verdicts) if v is not None)
    assert verdicts[first] == expected
    # Once decided, more bytes never change the verdict.
    assert set(verdicts[first:]) == {expected}
    assert first <= MAX_SNIFF_BYTES


def test_nothing_yet_is_undecided() -> None:
    assert sniff(b"") is None
    assert sniff(b"\xda") is None
    assert sniff(b"PO") is None
    assert sniff(HTTP2_PREFACE[:10]) is None


@given(st.binary(min_size=MAX_SNIFF_BYTES, max_size=64))
def test_every_input_is_decided_by_the_longest_signature(data: bytes) -> None:
    assert sniff(data) in {"dubbo", "http", "http2", "thrift", "tcp"}


def test_pipeline_is_the_service_protocol_only_when_it_can_carry_the_bytes() -> None:
    assert pipeline_protocol("dubbo", "dubbo") == "dubbo"
    assert pipeline_protocol("http2", "grpc") == "grpc"
    assert pipeline_protocol("http", "dubbo") == "tcp"
    assert pipeline_protocol("tcp", "dubbo") == "tcp"
    assert pipeline_protocol("thrift", "tcp") == "tcp"


class _CountingBytes(bytes):
    """Bytes that count what slicing them copies out."""

    copied = 0

    def __getitem__(self, index: Any) -> Any:
        part = super().__getitem__(index)
        if isinstance(index, slice):
            _CountingBytes.copied += len(part)
        return part


@pytest.mark.parametrize(
    "first", [b"\x00\x00\x00\x10\x80\x01\x00\x01", b"\x00" * 8, b"GE", b"PRI * HTTP/2.0\r\n"]
)
def test_a_large_first_read_is_judged_on_its_first_bytes_only(first: bytes) -> None:
    # Issue 25: the sniffer's work is bounded whatever the input: a megabyte read at once
    # is looked at no further than the longest signature (an interpreted copy of the
    # module, so that slicing goes through the counting bytes in either build).
    module = interpreted("agent.runtime.sniff")
    data = _CountingBytes(first + b"\x00" * (1 << 20))
    expected = sniff(bytes(data)[:MAX_SNIFF_BYTES])
    _CountingBytes.copied = 0
    assert module.sniff(data) == expected
    assert _CountingBytes.copied <= MAX_SNIFF_BYTES
