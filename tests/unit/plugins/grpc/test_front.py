from __future__ import annotations

import asyncio

import pytest

from plugins.grpc.front import PREFACE, _sniff


def reader_of(*chunks: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    for chunk in chunks:
        reader.feed_data(chunk)
    if eof:
        reader.feed_eof()
    return reader


@pytest.mark.parametrize("split", [1, 5, 23, 24])
async def test_http2_preface_in_pieces(split: int) -> None:
    reader = reader_of(PREFACE[:split], PREFACE[split:] + b"\x00\x00\x12", eof=False)
    assert await _sniff(reader) == PREFACE
    # The frames after the preface are left for the relay.
    assert await reader.readexactly(3) == b"\x00\x00\x12"


async def test_http1_is_told_apart_within_two_bytes() -> None:
    # "POST" parts from "PRI " at its second byte: no waiting for 24 bytes.
    reader = reader_of(b"PO", eof=False)
    assert await asyncio.wait_for(_sniff(reader), 1) == b"PO"
    # What came in one read stays in the head: it is handed to h11 whole.
    assert await _sniff(reader_of(b"GET / HTTP/1.1\r\n")) == b"GET / HTTP/1.1\r\n"


async def test_closed_before_anything() -> None:
    assert await _sniff(reader_of()) == b""
    assert await _sniff(reader_of(b"PRI * HT")) == b"PRI * HT"
