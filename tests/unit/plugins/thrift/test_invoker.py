"""The IDL's JSON mapping and reply decoding, without a network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.errors import InvalidRequest, InvokeNotSupported, RemoteApplicationError, UpstreamError
from plugins.thrift.codec import (
    AppError,
    Header,
    Message,
    MessageDecoder,
    MessageType,
    Proto,
    Transport,
    application_exception,
    encode_header,
)
from plugins.thrift.config import ThriftServiceOptions
from plugins.thrift.invoker import (
    _Bad,
    decode_reply,
    encode_call,
    encode_reply,
    load_service,
    struct_from_json,
    struct_to_json,
    with_base,
)
from tests.support.thrift_messages import IDL, big_item, echo_thrift

OPTIONS = ThriftServiceOptions(idl=str(IDL))
Echo = load_service(OPTIONS, "echo")


def test_struct_round_trip_through_json() -> None:
    item = big_item()
    as_json = struct_to_json(item)
    assert as_json["id"] == str(2**62 + 2)  # past 2**53: a string
    assert as_json["color"] == "GREEN"
    assert as_json["flags"] == {"1": [True, False, True], "-5": []}
    assert struct_from_json(echo_thrift.Item, as_json, "x") == item


def test_call_bytes_are_what_thriftpy2_reads() -> None:
    args = struct_from_json(Echo.add_args, {"a": "-9223372036854775808", "b": 1}, "args")
    message = encode_call(Echo, "add", args, Proto.COMPACT, oneway=False)
    assert message.header[:3] == ("add", 1, 1)
    assert message.header.proto is Proto.COMPACT


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"a": 2**63, "b": 1}, "a"),
        ({"a": "12x", "b": 1}, "a"),
        ({"a": True, "b": 1}, "a"),
        ({"a": None, "b": 1}, "a"),
    ],
)
def test_bad_integers(value: dict[str, Any], path: str) -> None:
    with pytest.raises(_Bad) as info:
        struct_from_json(Echo.add_args, value, "args")
    assert info.value.path == f"args.{path}"


@pytest.mark.parametrize(
    ("value", "path"),
    [
        # Issue 23: each of these was a 500 with a traceback, or a silently wrong value.
        ({"name": "x", "ratio": 10**400}, "ratio"),  # OverflowError
        ({"name": "\ud800"}, "name"),  # UnicodeEncodeError
        ({"name": "x", "color": "mro"}, "color"),  # an attribute of the enum class
        ({"name": "x", "color": "__class__"}, "color"),
        ({"name": "x", "id": "1_000"}, "id"),  # int() would take it
        ({"name": "x", "id": "١٢"}, "id"),  # Arabic-Indic digits: int() would take them
        ({"name": "x", "tags": ["a", "b", "a"]}, "tags[2]"),  # a set with a duplicate
        ({"name": "x", "flags": {"mro": [True]}}, "flags.mro"),
        ({"name": "x", "switches": {"True": "on"}}, "switches.True"),
        ({"name": "x", "places": {"(1, 2)": "here"}}, "places.(1, 2)"),
    ],
)
def test_bad_values_are_refused_with_their_path(value: dict[str, Any], path: str) -> None:
    with pytest.raises(_Bad) as info:
        struct_from_json(echo_thrift.Item, value, "item")
    assert info.value.path == f"item.{path}"


def test_keys_json_cannot_carry_and_double_specials_round_trip() -> None:
    item = echo_thrift.Item(
        name="x",
        switches={True: "on", False: "off"},
        places={echo_thrift.Point(x=1, y=2): "here"},
        scores={"a": float("nan"), "b": float("inf"), "c": float("-inf")},
        ratio=float("-inf"),
        color=echo_thrift.Color.BLUE,
    )
    as_json = struct_to_json(item)
    # Booleans as JSON writes them, a struct key as its compact JSON (was a Python repr).
    assert as_json["switches"] == {"true": "on", "false": "off"}
    assert as_json["places"] == {'{"x":1,"y":2}': "here"}
    # NaN and infinities as protobuf and TJSONProtocol say them (were "nan", "inf").
    assert as_json["scores"] == {"a": "NaN", "b": "Infinity", "c": "-Infinity"}
    assert as_json["ratio"] == "-Infinity"
    back = struct_from_json(echo_thrift.Item, as_json, "item")
    assert back.switches == item.switches and back.places == item.places
    assert back.ratio == float("-inf") and back.scores["b"] == float("inf")
    assert back.color == echo_thrift.Color.BLUE


def test_a_reply_string_that_is_not_utf8_is_a_bad_answer() -> None:
    # thriftpy2 decodes strings as UTF-8: it raised UnicodeDecodeError, a 500 (issue 23).
    head = encode_header(Header("ping", MessageType.REPLY, 1, Proto.BINARY))
    body = b"\x0b\x00\x00\x00\x00\x00\x02\xff\xfe\x00"  # success: string 0xff 0xfe
    with pytest.raises(UpstreamError, match="not UTF-8"):
        decode_reply(Echo, "ping", reply(head + body))


def reply(data: bytes) -> Any:
    decoder = MessageDecoder(Proto.BINARY, Transport.BUFFERED)
    decoder.receive_data(data)
    return decoder.next_event()


def test_application_exception_from_the_provider() -> None:
    wire = application_exception(
        "ping", 1, AppError.UNKNOWN_METHOD, "no ping", Proto.BINARY, Transport.BUFFERED
    )
    with pytest.raises(RemoteApplicationError) as info:
        decode_reply(Echo, "ping", reply(wire))
    assert info.value.exception_type == "TApplicationException"
    assert info.value.details == {"type": AppError.UNKNOWN_METHOD}


def test_a_reply_without_its_result_is_an_upstream_error() -> None:
    empty = encode_header(Header("ping", 2, 1, Proto.BINARY)) + b"\x00"
    with pytest.raises(UpstreamError, match="no result"):
        decode_reply(Echo, "ping", reply(empty))


def test_idl_problems_are_config_errors(tmp_path: Any) -> None:
    with pytest.raises(InvokeNotSupported, match="names no Thrift IDL"):
        load_service(ThriftServiceOptions(), "svc")
    with pytest.raises(InvokeNotSupported, match="cannot load"):
        load_service(ThriftServiceOptions(idl=str(tmp_path / "missing.thrift")), "svc")
    with pytest.raises(InvokeNotSupported, match="has services Echo"):
        load_service(ThriftServiceOptions(idl=str(IDL), idl_service="Other"), "svc")


def test_base_is_filled_only_where_the_idl_has_it() -> None:
    args, log_id = with_base(Echo.context_args, {"note": "n"}, "app", 250)
    assert log_id is not None and args["Base"]["LogID"] == log_id
    assert args["Base"]["Caller"] == "app"
    assert args["Base"]["Extra"]["timeout_ms"] == "250"
    # Filled Base encodes as the IDL's struct.
    assert struct_from_json(Echo.context_args, args, "args").Base.Caller == "app"
    assert with_base(Echo.add_args, {"a": 1, "b": 2}, "app", 250) == ({"a": 1, "b": 2}, None)
    given = {"note": "n", "Base": {"LogID": "x"}}
    assert with_base(Echo.context_args, given, "app", 250) == (given, None)


@pytest.mark.parametrize("proto", [Proto.BINARY, Proto.COMPACT])
def test_fallback_reply_encodes_the_value_as_the_result(proto: Proto) -> None:
    call = Header("recorded", MessageType.CALL, 77, proto, True)
    wire = encode_reply(Echo, "recorded", 42, call, Transport.FRAMED)
    decoder = MessageDecoder(proto, Transport.FRAMED)
    decoder.receive_data(wire)
    reply = decoder.next_event()
    assert isinstance(reply, Message)
    assert reply.header.type == MessageType.REPLY and reply.header.seqid == 77
    assert decode_reply(Echo, "recorded", reply) == 42


def test_fallback_value_of_the_wrong_type_is_refused() -> None:
    call = Header("slow", MessageType.CALL, 1, Proto.BINARY, True)
    with pytest.raises(InvalidRequest) as caught:
        encode_reply(Echo, "slow", {"x": 1}, call, Transport.FRAMED)
    assert caught.value.errors[0][0] == "degrade.value"


def test_a_union_takes_exactly_one_field_in_its_idl_and_includes(tmp_path: Path) -> None:
    (tmp_path / "shapes.thrift").write_text("union Size { 1: i32 small, 2: i64 large }\n")
    (tmp_path / "main.thrift").write_text(
        'include "shapes.thrift"\n'
        "union Pick { 1: string name, 2: i32 number }\n"
        "struct Plain { 1: optional string a, 2: optional string b }\n"
        "service S { Pick choose(1: Pick pick, 2: shapes.Size size, 3: Plain plain) }\n"
    )
    service = load_service(ThriftServiceOptions(idl=str(tmp_path / "main.thrift")), "s")
    spec = service.choose_args.thrift_spec
    pick, size, plain = spec[1][2], spec[2][2], spec[3][2]
    assert struct_from_json(pick, {"number": 3}, "args.pick").number == 3
    assert struct_from_json(size, {"large": 5}, "args.size").large == 5
    assert struct_from_json(plain, {}, "args.plain").a is None  # a struct may be empty
    for cls, value in ((pick, {}), (pick, {"name": "a", "number": 1}), (size, {"small": None})):
        with pytest.raises(_Bad) as caught:
            struct_from_json(cls, value, "args.x")
        assert caught.value.path == "args.x" and "is a union" in caught.value.message
