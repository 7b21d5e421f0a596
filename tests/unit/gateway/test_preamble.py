from __future__ import annotations

import pytest

from agent.gateway.preamble import MAX_LINE, Preamble, PreambleError, encode, parse


def test_a_line_then_the_callers_bytes() -> None:
    line = encode("com.example.Orders", "dc-a")
    assert line == b"MESHAGENT-LINK/1 com.example.Orders dc-a\n"
    assert parse(line + b"GET / HTTP/1.1") == (
        Preamble("com.example.Orders", "dc-a"),
        b"GET / HTTP/1.1",
    )


def test_an_incomplete_line_waits_byte_by_byte() -> None:
    line = encode("orders", "a")
    for end in range(len(line)):
        assert parse(line[:end]) is None
    assert parse(line) is not None


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n",  # not a link at all: refused at once
        b"MESHAGENT-LINK/1 orders\n",
        b"MESHAGENT-LINK/1 ord ers a\n",
        b"MESHAGENT-LINK/1 orders\x00 a\n",
        b"MESHAGENT-LINK/1 orders a b\n",
        b"MESHAGENT-LINK/2 orders a\n",
        b"MESHAGENT-LINK/1 " + b"x" * MAX_LINE,  # no end within the bound
    ],
)
def test_anything_else_is_refused(data: bytes) -> None:
    with pytest.raises(PreambleError):
        parse(data)


def test_we_send_only_what_we_accept() -> None:
    with pytest.raises(PreambleError):
        encode("orders with space", "a")
