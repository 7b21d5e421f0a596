"""The Base struct at field 255, filled in on the wire and read back by thriftpy2."""

from __future__ import annotations

from typing import Any

import pytest
from thriftpy2.protocol import TBinaryProtocol, TCompactProtocol
from thriftpy2.transport import TMemoryBuffer

from plugins.thrift.base import BaseValues, read_extra, with_base
from plugins.thrift.codec import Message, MessageDecoder, Proto, Transport, check_body
from plugins.thrift.invoker import base_methods, encode_call
from tests.fixtures.thrift_server import load_idl

ECHO = load_idl()
VALUES = BaseValues("trace-1", "agent-app", "10.0.0.7", {"timeout_ms": "500", "deadline_ms": "9"})


def call(method: str, proto: Proto, **args: Any) -> Message:
    args_obj = getattr(ECHO.Echo, f"{method}_args")(**args)
    return encode_call(ECHO.Echo, method, args_obj, proto, oneway=False)


def read_args(message: Message, method: str) -> Any:
    check_body(message)  # the agent's own check: one whole struct, exact length
    buffer = TMemoryBuffer(message.data)
    reader = TCompactProtocol(buffer) if message.header.proto is Proto.COMPACT else None
    reader = reader or TBinaryProtocol(buffer)
    name, _type, _seqid = reader.read_message_begin()
    assert name == method
    args = getattr(ECHO.Echo, f"{method}_args")()
    reader.read_struct(args)
    return args


@pytest.mark.parametrize("proto", [Proto.BINARY, Proto.COMPACT])
def test_a_missing_base_is_added(proto: Proto) -> None:
    message, log_id = with_base(call("context", proto, note="n"), VALUES)
    assert log_id == "trace-1"
    args = read_args(message, "context")
    assert args.note == "n"
    base = args.Base
    assert (base.LogID, base.Caller, base.Addr, base.Client) == (
        "trace-1",
        "agent-app",
        "10.0.0.7",
        "",
    )
    assert base.Extra == {"timeout_ms": "500", "deadline_ms": "9"}


@pytest.mark.parametrize("proto", [Proto.BINARY, Proto.COMPACT])
def test_the_apps_own_values_win_and_the_rest_is_filled(proto: Proto) -> None:
    given = ECHO.base.Base(LogID="app-log", Caller="", Client="cli", Extra={"timeout_ms": "80"})
    message, log_id = with_base(call("context", proto, note="x", Base=given), VALUES)
    assert log_id == "app-log"
    base = read_args(message, "context").Base
    assert (base.LogID, base.Caller, base.Addr, base.Client) == (
        "app-log",
        "agent-app",
        "10.0.0.7",
        "cli",
    )
    assert base.Extra == {"timeout_ms": "80", "deadline_ms": "9"}


@pytest.mark.parametrize("proto", [Proto.BINARY, Proto.COMPACT])
def test_fields_after_base_keep_their_meaning(proto: Proto) -> None:
    # Base first and a field after it: in compact the next field's id is a delta from the
    # previous one, so the rewritten Base must keep id 255 where it was.
    message = call("context", proto, note="after", Base=ECHO.base.Base(LogID="L"))
    data = message.data
    body_start = message.body_start
    # Swap the two top-level fields on the wire: Base (255) first, then note (1).
    body = data[body_start:]
    split = _first_field_end(body, proto)
    note_field, base_field = body[:split], body[split:-1]
    if proto is Proto.COMPACT:
        # Base already has the long header (id 255 explicit); note had a short one (delta
        # 1 from 0) and needs the long form (type 8, zigzag id 2) once it follows 255.
        assert base_field[:3] == b"\x0c\xfe\x03"
        note_field = b"\x08\x02" + note_field[1:]
    reordered = Message(
        message.header, data[:body_start] + base_field + note_field + b"\x00", body_start
    )
    filled, _ = with_base(reordered, VALUES)
    args = read_args(filled, "context")
    assert args.note == "after"
    assert (args.Base.LogID, args.Base.Caller) == ("L", "agent-app")


def _first_field_end(body: bytes, proto: Proto) -> int:
    """Where the first top-level field (note: a string) ends."""
    if proto is Proto.COMPACT:
        size = body[1]  # short strings: a one-byte varint length
        return 2 + size
    size = int.from_bytes(body[3:7], "big")
    return 7 + size


@pytest.mark.parametrize("proto", [Proto.BINARY, Proto.COMPACT])
def test_a_body_that_cannot_be_walked_passes_unchanged(proto: Proto) -> None:
    message = call("context", proto, note="n")
    cut = Message(message.header, message.data[:-3], message.body_start)
    assert with_base(cut, VALUES) == (cut, "")


def test_the_result_goes_through_the_codec_whole() -> None:
    message, _ = with_base(call("context", Proto.COMPACT, note="n"), VALUES)
    decoder = MessageDecoder(Proto.COMPACT, Transport.BUFFERED)
    decoder.receive_data(message.data)
    assert decoder.next_event() == message


def test_base_methods_are_read_from_the_idl() -> None:
    assert base_methods(ECHO.Echo) == frozenset({"context"})


@pytest.mark.parametrize("proto", [Proto.BINARY, Proto.COMPACT])
def test_extra_is_read(proto: Proto) -> None:
    given = ECHO.base.Base(LogID="l", Extra={"x-meshagent-hops": "3", "k": "v"})
    assert read_extra(call("context", proto, note="n", Base=given)) == {
        "x-meshagent-hops": "3",
        "k": "v",
    }
    assert read_extra(call("context", proto, note="n")) == {}  # no Base
    assert read_extra(call("add", proto, a=1, b=2)) == {}  # no Base in the IDL


@pytest.mark.parametrize("proto", [Proto.BINARY, Proto.COMPACT])
def test_propagation_fields_replace_the_apps_copy(proto: Proto) -> None:
    # The hop count that arrived must not be forwarded as it is (loop protection).
    given = ECHO.base.Base(Extra={"x-meshagent-hops": "3", "timeout_ms": "80"})
    values = BaseValues("t", "c", "", {"timeout_ms": "500"}, {"x-meshagent-hops": "4"})
    message, _ = with_base(call("context", proto, note="n", Base=given), values)
    extra = read_args(message, "context").Base.Extra
    assert extra == {"x-meshagent-hops": "4", "timeout_ms": "80"}
