"""Dubbo request/response bodies: round trips, descriptors, and the bytes Java sends."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import RemoteProtocolError
from plugins.dubbo.body import (
    Invocation,
    ResponseFlag,
    decode_invocation,
    decode_invocation_head,
    decode_invocation_head_sized,
    decode_result,
    encode_invocation,
    error_response_frame,
    from_descriptor,
    generic_method,
    heartbeat_request,
    heartbeat_response,
    is_heartbeat,
    request_frame,
    string_attachments,
    timeout_attachment,
    to_descriptor,
    value_response_frame,
    with_attachments,
)
from plugins.dubbo.frame import HEADER_SIZE, Frame, FrameDecoder, Header, Status
from plugins.dubbo.hessian2 import Hessian2Encoder

INTERFACE = "org.meshagent.interop.api.GreetingService"

# Captured from the Java consumer (Dubbo 3.3.6) calling echo("hi"), and the provider's answer.
JAVA_ECHO_BODY = (
    b"\x052.0.20)org.meshagent.interop.api.GreetingService\x050.0.0\x04echo"
    b"\x12Ljava/lang/String;\x02hiH\x04path0)org.meshagent.interop.api.GreetingService"
    b"\x12remote.application\x1ameshagent-interop-consumer\tinterface0)"
    b"org.meshagent.interop.api.GreetingService\x07version\x050.0.0\x07timeout\x043000Z"
)
JAVA_ECHO_RESULT = b"\x94\x02hiH\x05dubbo\x052.0.2Z"
JAVA_VOID_RESULT = b"\x95H\x05dubbo\x052.0.2Z"


def one_frame(data: bytes) -> Frame:
    decoder = FrameDecoder()
    decoder.receive_data(data)
    frame = decoder.next_event()
    assert isinstance(frame, Frame)
    return frame


def test_java_request_body() -> None:
    invocation = decode_invocation(JAVA_ECHO_BODY)
    assert invocation == Invocation(
        INTERFACE,
        "0.0.0",
        "echo",
        ("java.lang.String",),
        ("hi",),
        {
            "path": INTERFACE,
            "remote.application": "meshagent-interop-consumer",
            "interface": INTERFACE,
            "version": "0.0.0",
            "timeout": "3000",
        },
    )
    assert invocation.interface == INTERFACE and invocation.group == ""
    # Our encoder writes the same bytes for the same call (key order kept).
    assert encode_invocation(invocation) == JAVA_ECHO_BODY


def test_head_reads_only_the_head() -> None:
    head, size = decode_invocation_head_sized(JAVA_ECHO_BODY)
    assert (head.dubbo_version, head.path, head.version, head.method) == (
        "2.0.2",
        INTERFACE,
        "0.0.0",
        "echo",
    )
    assert head.parameter_descriptor == "Ljava/lang/String;"
    assert JAVA_ECHO_BODY[size:].startswith(b"\x02hi")  # the first argument comes next
    # The head alone decides the result: garbage after it is never looked at.
    assert decode_invocation_head(JAVA_ECHO_BODY[:size] + b"\xff\xff") == head


def test_java_results() -> None:
    header = Header(False, False, False, 2, Status.OK, 1, len(JAVA_ECHO_RESULT))
    result = decode_result(header, JAVA_ECHO_RESULT)
    assert result.ok and result.value == "hi"
    assert result.flag == ResponseFlag.VALUE_WITH_ATTACHMENTS
    assert result.attachments == {"dubbo": "2.0.2"}
    void = decode_result(header, JAVA_VOID_RESULT)
    assert void.ok and void.value is None and void.flag == ResponseFlag.NULL_VALUE_WITH_ATTACHMENTS


def test_timeout_attachment() -> None:
    assert timeout_attachment(JAVA_ECHO_BODY) == 3000
    body = encode_invocation(
        Invocation(INTERFACE, "", "m", ("int",), (1,), {"timeout": 250, "x": "y"})
    )
    assert timeout_attachment(body) == 250  # an int value works too
    assert timeout_attachment(encode_invocation(Invocation(INTERFACE, "", "m", (), ()))) is None
    for bad in ("soon", "-1", "0", "99999999999"):
        body = encode_invocation(Invocation(INTERFACE, "", "m", (), (), {"timeout": bad}))
        assert timeout_attachment(body) is None, bad
    assert timeout_attachment(b"\x07timeout") is None  # truncated value


invocations = st.builds(
    Invocation,
    path=st.text(max_size=40),
    version=st.sampled_from(["", "0.0.0", "1.2.3"]),
    method=st.text(min_size=1, max_size=20),
    parameter_types=st.just(("java.lang.String", "int")),
    arguments=st.tuples(st.text(max_size=50) | st.none(), st.integers(-(2**31), 2**31 - 1)),
    attachments=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=4),
)


@given(invocations)
def test_invocation_round_trip(invocation: Invocation) -> None:
    body = encode_invocation(invocation)
    assert decode_invocation(body) == invocation
    head = decode_invocation_head(body)
    assert (head.path, head.version, head.method) == (
        invocation.path,
        invocation.version,
        invocation.method,
    )


@given(st.one_of(st.none(), st.text(max_size=30), st.integers(-(2**31), 2**31 - 1)))
def test_value_response_round_trip(value: object) -> None:
    frame = one_frame(value_response_frame(12, value, {"k": "v"}))
    result = decode_result(frame.header, frame.body)
    assert result.ok and result.value == value and result.attachments == {"k": "v"}
    assert frame.header.request_id == 12


@pytest.mark.parametrize(
    "status", [Status.SERVICE_NOT_FOUND, Status.SERVER_TIMEOUT, Status.BAD_REQUEST]
)
def test_error_response_round_trip(status: Status) -> None:
    frame = one_frame(error_response_frame(3, status, "meshagent: nope ü"))
    assert frame.header.status == status and not frame.header.request
    result = decode_result(frame.header, frame.body)
    assert not result.ok and result.error_message == "meshagent: nope ü"


def test_exception_response() -> None:
    encoder = Hessian2Encoder()
    encoder.write_object(int(ResponseFlag.WITH_EXCEPTION))
    encoder.write_object({"detailMessage": "boom"})
    body = encoder.getvalue()
    result = decode_result(Header(False, False, False, 2, Status.OK, 1, len(body)), body)
    assert not result.ok and result.exception == {"detailMessage": "boom"}


@pytest.mark.parametrize("flag", [9, -1, "1", True, None])
def test_unknown_response_flag(flag: object) -> None:
    encoder = Hessian2Encoder()
    encoder.write_object(flag)
    body = encoder.getvalue()
    with pytest.raises(RemoteProtocolError, match="unknown response flag"):
        decode_result(Header(False, False, False, 2, Status.OK, 1, len(body)), body)


def test_request_frame_and_heartbeats() -> None:
    frame = one_frame(request_frame(5, JAVA_ECHO_BODY))
    assert frame.header.request and frame.header.two_way and not frame.header.event
    assert frame.body == JAVA_ECHO_BODY
    oneway = one_frame(request_frame(6, b"N", two_way=False))
    assert not oneway.header.two_way
    assert is_heartbeat(one_frame(heartbeat_request(1)))
    assert is_heartbeat(one_frame(heartbeat_response(1)))
    assert not is_heartbeat(frame)
    assert len(heartbeat_request(1)) == HEADER_SIZE + 1


@pytest.mark.parametrize(
    ("names", "descriptor"),
    [
        ([], ""),
        (["java.lang.String", "int"], "Ljava/lang/String;I"),
        (["long[]", "java.lang.String[][]"], "[J[[Ljava/lang/String;"),
        (["boolean", "byte", "char", "short", "float", "double"], "ZBCSFD"),
        (["java.util.Map", "org.meshagent.interop.api.Person"],
         "Ljava/util/Map;Lorg/meshagent/interop/api/Person;"),
    ],
)  # fmt: skip
def test_descriptors(names: list[str], descriptor: str) -> None:
    assert to_descriptor(names) == descriptor
    assert from_descriptor(descriptor) == names


def test_jvm_array_names_are_accepted() -> None:
    assert to_descriptor(["[Ljava.lang.String;", "[I"]) == "[Ljava/lang/String;[I"


@pytest.mark.parametrize("bad", ["Ljava/lang/String", "[", "Q", "I[", "L;X"])
def test_malformed_descriptors(bad: str) -> None:
    with pytest.raises(RemoteProtocolError, match="malformed parameter descriptor"):
        from_descriptor(bad)


def test_malformed_bodies() -> None:
    with pytest.raises(RemoteProtocolError):
        decode_invocation_head(b"\xff")
    with pytest.raises(RemoteProtocolError, match="service path is int"):
        decode_invocation_head(b"\x052.0.2\x91")
    with pytest.raises(RemoteProtocolError, match="attachments are str"):
        body = encode_invocation(Invocation("p", "", "m", (), ()))[:-1]
        decode_invocation(body[: body.rindex(b"H")] + b"\x01x")


# -- propagation attachments (read and added by the proxy without decoding arguments) --------


def _invocation_with(attachments: dict[str, Any], argument: Any = "x") -> bytes:
    return encode_invocation(
        Invocation("a.B", "", "m", ("java.lang.String",), (argument,), attachments)
    )


def test_string_attachments_found_from_the_tail() -> None:
    body = _invocation_with({"timeout": "100", "traceparent": "tp", "x-meshagent-hops": "2"})
    assert string_attachments(body, ["traceparent", "x-meshagent-hops", "absent"]) == {
        "traceparent": "tp",
        "x-meshagent-hops": "2",
    }
    # Beyond the window at the end (a huge attachment value pushes the key out): not read.
    far = _invocation_with({"traceparent": "tp", "zz": "v" * 20_000})
    assert string_attachments(far, ["traceparent"]) == {}
    # A non-string value is left out.
    assert string_attachments(_invocation_with({"x-meshagent-hops": 3}), ["x-meshagent-hops"]) == {}


def test_generic_method_names_the_real_method() -> None:
    generic = encode_invocation(
        Invocation(
            "a.B",
            "",
            "$invoke",
            ("java.lang.String", "[Ljava.lang.String;", "[Ljava.lang.Object;"),
            ("sayHello", ["java.lang.String"], ["x"]),
            {},
        )
    )
    assert generic_method(generic) == "sayHello"
    assert generic_method(_invocation_with({})) is None  # not generic
    assert generic_method(b"\x00garbage") is None


def test_with_attachments_adds_and_overrides_without_touching_arguments() -> None:
    person = {"name": "cy", "tags": ["a", "a"]}
    body = _invocation_with({"timeout": "1000", "traceparent": "old"}, person)
    added = with_attachments(body, {"traceparent": "new", "timeout": "250"})
    assert added is not None
    decoded = decode_invocation(added)
    assert decoded.arguments == (person,)
    assert decoded.attachments["traceparent"] == "new"
    assert decoded.attachments["timeout"] == "250"
    assert with_attachments(body[:-1], {"a": "b"}) is None  # not ending in a map: left alone


def test_the_agents_budget_goes_out_as_dubbos_timeout() -> None:
    body = _invocation_with({"timeout": "1000"})
    added = with_attachments(body, {"x-meshagent-timeout-ms": "250", "x-meshagent-hops": "1"})
    assert added is not None
    attachments = decode_invocation(added).attachments
    assert attachments["timeout"] == "250"
    assert "x-meshagent-timeout-ms" not in attachments
    assert attachments["x-meshagent-hops"] == "1"


def test_span_ids_are_not_kept_in_the_pair_cache() -> None:
    from plugins.dubbo.body import _PAIRS

    body = _invocation_with({})
    for n in range(3):
        traceparent = f"00-{'a' * 32}-{n + 1:016x}-01"
        added = with_attachments(body, {"traceparent": traceparent})
        assert added is not None
        assert decode_invocation(added).attachments["traceparent"] == traceparent
        assert ("traceparent", traceparent) not in _PAIRS


@given(st.text(max_size=1100))
def test_fast_string_form_is_the_encoders(value: str) -> None:
    from plugins.dubbo.body import _hessian_string

    encoder = Hessian2Encoder()
    encoder.write_object(value)
    assert _hessian_string(value) == encoder.getvalue()
