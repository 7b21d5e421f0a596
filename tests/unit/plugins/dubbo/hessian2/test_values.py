"""The Python value types: what they mean on the wire and what survives a round trip."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal

import pytest

import plugins.dubbo.hessian2 as hessian2
from agent.errors import LocalProtocolError, RemoteProtocolError
from plugins.dubbo.hessian2 import (
    HessianDecodeError,
    HessianEncodeError,
    JavaEnum,
    JavaLong,
    JavaObject,
    Limits,
    TypedList,
    TypedMap,
    decode_all,
    encode,
)


def test_public_api() -> None:
    assert set(hessian2.__all__) == {
        "Hessian2Encoder",
        "Hessian2Decoder",
        "Limits",
        "encode",
        "decode_all",
        "JavaObject",
        "JavaEnum",
        "TypedList",
        "TypedMap",
        "JavaLong",
        "HessianDecodeError",
        "HessianEncodeError",
    }


def test_errors_sit_in_the_agent_error_tree() -> None:
    assert issubclass(HessianDecodeError, RemoteProtocolError)
    assert issubclass(HessianEncodeError, LocalProtocolError)


def test_java_long_is_an_int_that_stays_a_long() -> None:
    assert JavaLong(5) == 5
    assert repr(JavaLong(5)) == "JavaLong(5)"
    assert encode(5) == b"\x95"  # a plain int small enough is a Java int
    assert encode(JavaLong(5)) == b"\xe5"  # the same value as a Java long
    (decoded,) = decode_all(b"\xe5")
    assert isinstance(decoded, JavaLong)
    assert encode(decoded) == b"\xe5"


def test_arithmetic_on_java_long_gives_a_plain_int() -> None:
    # Python's int operators return int: a computed value is re-typed by the caller.
    assert type(JavaLong(1) + 1) is int


def test_bool_is_not_an_int_on_the_wire() -> None:
    assert encode(True, 1) == b"T\x91"


def test_decoded_typed_values_keep_their_java_type() -> None:
    values = [
        TypedList("java.util.LinkedList", [1]),
        TypedMap("java.util.LinkedHashMap", {"a": 1}),
        JavaObject("com.example.Point", {"x": 1, "y": 2}),
        JavaEnum("com.example.Color", "RED"),
        Decimal("1.50"),
    ]
    data = encode(*values)
    decoded = decode_all(data)
    assert decoded == values
    assert encode(*decoded) == data


def test_untyped_containers_decode_as_list_and_dict() -> None:
    assert decode_all(encode((1, 2), [3], {"k": "v"})) == [[1, 2], [3], {"k": "v"}]


def test_datetime_decodes_as_utc_aware() -> None:
    (value,) = decode_all(encode(datetime(2024, 2, 29, 12, 0, 0, 5000, tzinfo=UTC)))
    assert value == datetime(2024, 2, 29, 12, 0, 0, 5000, tzinfo=UTC)
    assert isinstance(value, datetime)
    assert value.tzinfo is UTC


def test_java_object_type_is_frozen_but_its_fields_fill_in() -> None:
    point = JavaObject("a.P", {"x": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        point.class_name = "a.Q"  # type: ignore[misc]
    point.fields["y"] = 2
    assert encode(point) == encode(JavaObject("a.P", {"x": 1, "y": 2}))


def test_java_object_is_not_hashable_so_cannot_be_a_decoded_map_key() -> None:
    with pytest.raises(TypeError):
        hash(JavaObject("a.P", {}))
    with pytest.raises(HessianDecodeError, match="cannot be a Python dict key"):
        decode_all(b"H" + encode(JavaObject("a.P", {"x": 1})) + b"\x91Z")


def test_java_enum_is_hashable_and_works_as_map_key() -> None:
    red = JavaEnum("a.Color", "RED")
    assert {red: 1}[JavaEnum("a.Color", "RED")] == 1
    assert decode_all(encode({red: 1})) == [{red: 1}]


def test_object_with_a_single_name_field_reads_back_as_an_enum() -> None:
    # The wire cannot tell them apart; the bytes are the same either way.
    data = encode(JavaObject("a.Tag", {"name": "x"}))
    assert data == encode(JavaEnum("a.Tag", "x"))
    assert decode_all(data) == [JavaEnum("a.Tag", "x")]


def test_typed_containers_compare_by_type_and_content() -> None:
    assert TypedList("a", [1]) == TypedList("a", [1])
    assert TypedList("a", [1]) != TypedList("b", [1])
    as_list: object = [1]
    as_dict: object = {1: 2}
    assert TypedList("a", [1]) != as_list
    assert TypedMap("a", {1: 2}) != as_dict


def test_big_decimal_keeps_its_scale() -> None:
    (value,) = decode_all(encode(Decimal("1.500")))
    assert str(value) == "1.500"


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(Limits)])
@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_limits_must_be_positive_ints(field: str, bad: object) -> None:
    with pytest.raises(ValueError, match=field):
        Limits(**{field: bad})  # type: ignore[arg-type]


def test_unsupported_python_type_names_the_type() -> None:
    with pytest.raises(HessianEncodeError, match=r"builtins\.set"):
        encode({1})
