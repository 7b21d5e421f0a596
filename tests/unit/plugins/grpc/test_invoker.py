"""The pure parts of gRPC JSON invocation: body validation, method names, status mapping,
JSON to protobuf with error paths (on a message type built here, no server needed)."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message_factory import GetMessageClass

from agent.config import ServiceConfig
from agent.errors import InvalidRequest
from plugins.grpc.invoker import (
    HTTP_STATUS,
    GrpcServiceOptions,
    encode,
    parse_body,
    split_method,
    status_error,
    to_json,
)
from plugins.grpc.reflection import MethodInfo


def message_class() -> Any:
    pool = descriptor_pool.DescriptorPool()
    file = descriptor_pb2.FileDescriptorProto(name="t.proto", package="t", syntax="proto3")
    message = file.message_type.add(name="Req")
    message.field.add(
        name="name",
        json_name="name",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    message.field.add(
        name="big_count",
        json_name="bigCount",
        number=2,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    pool.Add(file)
    return GetMessageClass(pool.FindMessageTypeByName("t.Req"))


def method(client_streaming: bool = False) -> MethodInfo:
    cls = message_class()
    return MethodInfo("/t.S/M", cls, cls, client_streaming, False)


def test_body_fields_are_checked_with_paths() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_body({"mesage": {}, "timeout_ms": 0})
    paths = {path for path, _ in caught.value.errors}
    assert paths == {"body.mesage", "body.timeout_ms"}


def test_method_names() -> None:
    service = ServiceConfig(name="greeter", protocol="grpc")
    assert split_method(service, "SayHello") == ("greeter", "SayHello")
    assert split_method(service, "helloworld.Greeter.SayHello") == (
        "helloworld.Greeter",
        "SayHello",
    )
    named = ServiceConfig(
        name="greeter", protocol="grpc", options={"grpc_service": "helloworld.Greeter"}
    )
    assert split_method(named, "SayHello") == ("helloworld.Greeter", "SayHello")


def test_service_options_forbid_unknown_fields() -> None:
    with pytest.raises(ValueError, match="grpc_servise"):
        GrpcServiceOptions.model_validate({"grpc_servise": "x"})


def test_json_in_both_field_name_styles_and_int64_as_text() -> None:
    info = method()
    for body in ({"name": "a", "bigCount": "7"}, {"name": "a", "big_count": 7}):
        (request,) = encode(info, parse_body({"message": body}))
        assert (request.name, request.big_count) == ("a", 7)
    assert to_json(info.output(name="a")) == {"name": "a", "bigCount": "0"}


def test_bad_json_has_its_path() -> None:
    with pytest.raises(InvalidRequest) as caught:
        encode(method(), parse_body({"message": {"nope": 1}}))
    assert caught.value.errors[0][0] == "body.message"
    with pytest.raises(InvalidRequest) as caught:
        encode(method(True), parse_body({"messages": [{}, {"name": 5}]}))
    assert caught.value.errors[0][0] == "body.messages.1"


def test_messages_only_for_client_streaming() -> None:
    with pytest.raises(InvalidRequest) as caught:
        encode(method(), parse_body({"messages": [{}]}))
    assert caught.value.errors[0][0] == "body.messages"
    assert len(encode(method(True), parse_body({"messages": [{}, {}, {}]}))) == 3


def test_status_error_carries_http_status_and_grpc_code() -> None:
    error = status_error("NOT_FOUND", 5, "no such user", "echo-a")
    assert error.http_status == 404
    assert error.details == {
        "grpc_code": 5,
        "grpc_status": "NOT_FOUND",
        "grpc_message": "no such user",
    }
    assert str(error) == "echo-a: NOT_FOUND: no such user"
    # Every non-OK code has a status; unknown ones are server errors.
    assert len(HTTP_STATUS) == 16
    assert status_error("NEW_CODE", 99, "", "").http_status == 500


def test_a_reply_holding_an_any_of_an_unknown_type_is_a_bad_answer() -> None:
    # json_format raised TypeError: a 500 with a traceback (issue 23).
    from google.protobuf import any_pb2, timestamp_pb2

    from agent.errors import UpstreamError
    from plugins.grpc.invoker import to_json

    unknown = any_pb2.Any(type_url="type.googleapis.com/x.Unknown", value=b"\x08\x01")
    with pytest.raises(UpstreamError, match="cannot be written as JSON"):
        to_json(unknown)
    # One whose type is in the message's pool is written as protobuf's JSON mapping has it.
    known = any_pb2.Any()
    known.Pack(timestamp_pb2.Timestamp(seconds=1700000000))
    assert to_json(known) == {
        "@type": "type.googleapis.com/google.protobuf.Timestamp",
        "value": "2023-11-14T22:13:20Z",
    }
