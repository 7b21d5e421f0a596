"""Exact bytes of each Hessian 2.0 form we write: spec boundaries, hessian-lite quirks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from agent.errors import LocalProtocolError
from plugins.dubbo.hessian2 import (
    Hessian2Encoder,
    HessianEncodeError,
    JavaEnum,
    JavaLong,
    JavaObject,
    TypedList,
    TypedMap,
    encode,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "90"),
        (-16, "80"),  # lowest one-octet int
        (47, "bf"),  # highest one-octet int
        (-17, "c7 ef"),
        (48, "c8 30"),
        (-2048, "c0 00"),
        (2047, "cf ff"),
        (-2049, "d3 f7 ff"),
        (2048, "d4 08 00"),
        (-262144, "d0 00 00"),
        (262143, "d7 ff ff"),
        (-262145, "49 ff fb ff ff"),
        (262144, "49 00 04 00 00"),
        (2**31 - 1, "49 7f ff ff ff"),
        (-(2**31), "49 80 00 00 00"),
        # A plain int that does not fit 32 bits goes out as a long.
        (2**31, "4c 00 00 00 00 80 00 00 00"),
        (-(2**31) - 1, "4c ff ff ff ff 7f ff ff ff"),
    ],
)
def test_int_forms(value: int, expected: str) -> None:
    assert encode(value) == h(expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "e0"),
        (-8, "d8"),
        (15, "ef"),
        (-9, "f7 f7"),
        (16, "f8 10"),
        (-2048, "f0 00"),
        (2047, "ff ff"),
        (-2049, "3b f7 ff"),
        (2048, "3c 08 00"),
        (-262144, "38 00 00"),
        (262143, "3f ff ff"),
        (-262145, "59 ff fb ff ff"),
        (262144, "59 00 04 00 00"),
        (2**31 - 1, "59 7f ff ff ff"),
        (-(2**31), "59 80 00 00 00"),
        (2**31, "4c 00 00 00 00 80 00 00 00"),
        (2**63 - 1, "4c 7f ff ff ff ff ff ff ff"),
        (-(2**63), "4c 80 00 00 00 00 00 00 00"),
    ],
)
def test_long_forms(value: int, expected: str) -> None:
    assert encode(JavaLong(value)) == h(expected)


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 2**100])
def test_integer_beyond_long_is_refused(value: int) -> None:
    with pytest.raises(HessianEncodeError, match="does not fit a Java long"):
        encode(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0, "5b"),
        (-0.0, "5b"),  # hessian-lite: (int)-0.0 == -0.0, so it is sent as 0.0
        (1.0, "5c"),
        (127.0, "5d 7f"),
        (-128.0, "5d 80"),
        (128.0, "5e 00 80"),
        (-129.0, "5e ff 7f"),
        (32767.0, "5e 7f ff"),
        (-32768.0, "5e 80 00"),
        (32768.0, "5f 01 f4 00 00"),  # value*1000 as int32
        (0.5, "5f 00 00 01 f4"),
        (12.25, "5f 00 00 2f da"),
        (-1.5, "5f ff ff fa 24"),
        (0.001, "5f 00 00 00 01"),
        (2147483.647, "5f 7f ff ff ff"),
        (3.3, "44 40 0a 66 66 66 66 66 66"),  # 0.001*3300 != 3.3
        (2147483.648, "44 41 40 62 4d d2 f1 a9 fc"),  # mills saturate: full form
        (1.0e10, "44 42 02 a0 5f 20 00 00 00"),
        (float("inf"), "44 7f f0 00 00 00 00 00 00"),
        (float("-inf"), "44 ff f0 00 00 00 00 00 00"),
        (float("nan"), "44 7f f8 00 00 00 00 00 00"),
    ],
)
def test_double_forms(value: float, expected: str) -> None:
    assert encode(value) == h(expected)


def test_bool_and_null() -> None:
    assert encode(True, False, None) == b"TFN"


def test_date_forms_from_the_spec() -> None:
    # 09:51:31 May 8, 1998 UTC: not on a minute, so the 64-bit millisecond form.
    assert encode(datetime(1998, 5, 8, 9, 51, 31, tzinfo=UTC)) == h("4a 00 00 00 d0 4b 92 84 b8")
    # 09:51:00 May 8, 1998 UTC: on a minute, so the compact 32-bit minute form.
    assert encode(datetime(1998, 5, 8, 9, 51, tzinfo=UTC)) == h("4b 00 e3 83 8f")


def test_date_minute_form_needs_minutes_to_fit_int32() -> None:
    far = EPOCH + timedelta(minutes=2**31)
    assert encode(far)[:1] == b"\x4a"
    assert encode(EPOCH + timedelta(minutes=2**31 - 1))[:1] == b"\x4b"
    assert encode(EPOCH - timedelta(minutes=100)) == h("4b ff ff ff 9c")
    assert encode(EPOCH - timedelta(milliseconds=1)) == h("4a ff ff ff ff ff ff ff ff")


def test_date_in_other_timezone_is_the_same_instant() -> None:
    tokyo = datetime(1998, 5, 8, 18, 51, tzinfo=timezone(timedelta(hours=9)))
    assert encode(tokyo) == h("4b 00 e3 83 8f")


def test_date_drops_sub_millisecond_precision() -> None:
    assert encode(EPOCH + timedelta(microseconds=1999)) == h("4a 00 00 00 00 00 00 00 01")


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(HessianEncodeError, match="naive"):
        encode(datetime(2024, 1, 1))


@pytest.mark.parametrize(
    ("length", "header"),
    [(0, "00"), (1, "01"), (31, "1f"), (32, "30 20"), (1023, "33 ff"), (1024, "53 04 00")],
)
def test_string_length_forms(length: int, header: str) -> None:
    assert encode("x" * length) == h(header) + b"x" * length


def test_string_of_32768_units_is_one_chunk() -> None:
    assert encode("x" * 0x8000) == h("53 80 00") + b"x" * 0x8000


def test_string_over_32768_units_is_chunked() -> None:
    assert encode("x" * 0x8001) == h("52 80 00") + b"x" * 0x8000 + h("01") + b"x"
    data = encode("x" * 70000)
    assert data[:3] == h("52 80 00")
    assert data[3 + 0x8000 : 6 + 0x8000] == h("52 80 00")
    tail = 70000 - 0x10000
    assert data[6 + 0x10000 : 6 + 0x10000 + 3] == bytes([0x53, tail >> 8, tail & 0xFF])


def test_string_utf8_of_bmp_characters() -> None:
    assert encode("\u00e9") == h("01 c3 a9")
    assert encode("\u20ac") == h("01 e2 82 ac")


def test_non_bmp_character_is_a_surrogate_pair_counting_two_units() -> None:
    # Not 4-byte UTF-8: each surrogate as its own 3-byte sequence, length 2.
    assert encode("\U0001f600") == h("02 ed a0 bd ed b8 80")


def test_lone_surrogate_is_written_as_java_would() -> None:
    assert encode("\ud800") == h("01 ed a0 80")


def test_chunk_never_splits_a_surrogate_pair() -> None:
    value = "a" * 0x7FFF + "\U0001f600"
    data = encode(value)
    assert data[:3] == h("52 7f ff")
    assert data[3 + 0x7FFF :] == h("02 ed a0 bd ed b8 80")


def test_string_length_counts_utf16_units_not_bytes() -> None:
    assert encode("\u00e9" * 32)[:2] == h("30 20")


@pytest.mark.parametrize(
    ("length", "header"),
    [(0, "20"), (1, "21"), (15, "2f"), (16, "34 10"), (1023, "37 ff"), (1024, "42 04 00")],
)
def test_binary_length_forms(length: int, header: str) -> None:
    data = bytes(range(256)) * 5
    assert encode(data[:length]) == h(header) + data[:length]


def test_binary_accepts_bytearray_and_memoryview() -> None:
    assert encode(bytearray(b"ab"), memoryview(b"c")) == h("22 61 62 21 63")


def test_binary_chunks_fill_hessian_lites_8k_buffer() -> None:
    # hessian-lite cuts a byte[] where its 8192-byte buffer fills (3 bytes of header).
    assert encode(b"z" * 8189) == h("42 1f fd") + b"z" * 8189
    assert encode(b"z" * 8190) == h("41 1f fd") + b"z" * 8189 + h("21") + b"z"


def test_binary_chunk_follows_the_buffer_fill_left_by_earlier_values() -> None:
    # 8177 bytes leave the buffer at 8180; the next binary's first chunk would have
    # only 9 bytes, so hessian-lite flushes and sends it whole as a non-final chunk
    # followed by an empty final one.
    encoder = Hessian2Encoder()
    encoder.write_object(b"a" * 8177)
    encoder.write_object(b"b" * 20)
    assert encoder.getvalue()[3 + 8177 :] == h("41 00 14") + b"b" * 20 + h("20")


def test_untyped_list_forms() -> None:
    assert encode([]) == h("78")
    assert encode([1, 2]) == h("7a 91 92")
    assert encode((1,)) == h("79 91")
    assert encode(list(range(7)))[:1] == h("7f")
    assert encode(list(range(8))) == h("58 98") + bytes(range(0x90, 0x98))


def test_typed_list_forms_and_type_reference() -> None:
    linked = "java.util.LinkedList"
    type_name = bytes([len(linked)]) + linked.encode()
    assert encode(TypedList(linked, [1])) == h("71") + type_name + h("91")
    assert encode(TypedList(linked, list(range(8)))) == (
        h("56") + type_name + h("98") + bytes(range(0x90, 0x98))
    )
    # A type name already sent is sent again as its index.
    assert encode(TypedList(linked, []), TypedList(linked, [])) == (
        h("70") + type_name + h("70 90")
    )


def test_primitive_array_types_write_elements_as_java_does() -> None:
    assert encode(TypedList("[int", [1, 2])) == h("72 04") + b"[int" + h("91 92")
    assert encode(TypedList("[long", [1])) == h("71 05") + b"[long" + h("e1")
    assert encode(TypedList("[double", [1])) == h("71 07") + b"[double" + h("5c")


def test_map_forms() -> None:
    assert encode({}) == h("48 5a")
    assert encode({"a": 1}) == h("48 01 61 91 5a")
    tree = "java.util.TreeMap"
    assert encode(TypedMap(tree, {1: "x"})) == (
        h("4d") + bytes([len(tree)]) + tree.encode() + h("91 01 78 5a")
    )


def test_class_definition_then_compact_instances() -> None:
    point = JavaObject("a.P", {"x": 1, "y": 2})
    assert encode(point) == h("43 03 61 2e 50 92 01 78 01 79 60 91 92")
    other = JavaObject("a.P", {"x": 3, "y": 4})
    # Definition sent once; the second instance only names it.
    assert encode(point, other) == h("43 03 61 2e 50 92 01 78 01 79 60 91 92 60 93 94")


def test_seventeenth_class_uses_the_O_form() -> None:
    objects = [JavaObject(f"K{i}", {}) for i in range(17)]
    data = encode(*objects)
    assert data.endswith(h("43 03 4b 31 36 90 4f a0"))  # 'C' "K16" 0 fields, 'O' 16


def test_redefining_a_class_with_other_fields_sends_a_new_definition() -> None:
    data = encode(JavaObject("a.P", {"x": 1}), JavaObject("a.P", {"y": 2}))
    assert data == h("43 03 61 2e 50 91 01 78 60 91 43 03 61 2e 50 91 01 79 61 92")


def test_shared_list_is_written_once_then_referenced() -> None:
    shared = [1]
    assert encode([shared, shared]) == h("7a 79 91 51 91")


def test_references_carry_across_write_object_calls() -> None:
    shared = {"k": 1}
    encoder = Hessian2Encoder()
    encoder.write_object(shared)
    encoder.write_object(shared)
    assert encoder.getvalue() == h("48 01 6b 91 5a 51 90")


def test_self_referencing_object() -> None:
    node = JavaObject("N", {"next": None})
    node.fields["next"] = node
    assert encode(node) == h("43 01 4e 91 04 6e 65 78 74 60 51 90")


def test_equal_enum_constants_share_one_reference() -> None:
    # Java enum constants are singletons: hessian-lite writes the repeat as a ref.
    data = encode(JavaEnum("C", "RED"), JavaEnum("C", "RED"))
    assert data == h("43 01 43 91 04 6e 61 6d 65 60 03 52 45 44 51 90")


def test_equal_but_distinct_lists_are_not_shared() -> None:
    assert encode([[1], [1]]) == h("7a 79 91 79 91")


def test_big_decimal_is_an_object_with_its_string_value() -> None:
    assert encode(Decimal("1.50")) == (
        h("43 14") + b"java.math.BigDecimal" + h("91 05") + b"value" + h("60 04") + b"1.50"
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [("1E+3", "1E+3"), ("0.0000001", "1E-7"), ("-0.00", "0.00"), ("123.4500", "123.4500")],
)
def test_big_decimal_text_matches_java_to_string(value: str, text: str) -> None:
    assert encode(Decimal(value)).endswith(bytes([len(text)]) + text.encode())


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")])
def test_big_decimal_without_java_form_is_refused(value: Decimal) -> None:
    with pytest.raises(HessianEncodeError):
        encode(value)


@pytest.mark.parametrize("value", [object(), {1, 2}, 1j, frozenset()])
def test_unsupported_value_raises_a_local_protocol_error(value: object) -> None:
    with pytest.raises(HessianEncodeError, match="cannot encode") as info:
        encode(value)
    assert isinstance(info.value, LocalProtocolError)


def test_empty_java_names_are_refused() -> None:
    with pytest.raises(HessianEncodeError):
        encode(JavaObject("", {}))
    with pytest.raises(HessianEncodeError):
        encode(TypedList("", []))


def test_too_deep_python_value_raises_encode_error() -> None:
    nested: list[object] = []
    for _ in range(100_000):
        nested = [nested]
    with pytest.raises(HessianEncodeError, match="nests too deeply"):
        encode(nested)


def test_encode_is_one_stream() -> None:
    shared = [1]
    assert encode(shared, shared) == h("79 91 51 90")
