"""Decoder: every tag from bytes, forms Java never writes, round trips, and hostile input."""

from __future__ import annotations

import contextlib
import math
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import RemoteProtocolError
from plugins.dubbo.hessian2 import (
    Hessian2Decoder,
    HessianDecodeError,
    JavaEnum,
    JavaLong,
    JavaObject,
    Limits,
    TypedList,
    TypedMap,
    decode_all,
    encode,
)
from tests.support.hessian2_graph import assert_same_graph
from tests.support.work import interpreted, lines_run

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def one(data: bytes, limits: Limits | None = None) -> object:
    decoder = Hessian2Decoder(data, limits or Limits())
    value = decoder.read_object()
    assert decoder.at_end(), f"{len(data) - decoder.position} bytes left"
    return value


# -- every form ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("90", 0),
        ("80", -16),
        ("bf", 47),
        ("c7 ef", -17),
        ("c0 00", -2048),
        ("cf ff", 2047),
        ("d0 00 00", -262144),
        ("d7 ff ff", 262143),
        ("d4 08 00", 2048),
        ("49 80 00 00 00", -(2**31)),
        ("49 00 00 00 01", 1),  # a non-compact form is still valid input
    ],
)
def test_int_forms(data: str, expected: int) -> None:
    value = one(h(data))
    assert value == expected
    assert type(value) is int


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("e0", 0),
        ("d8", -8),
        ("ef", 15),
        ("f0 00", -2048),
        ("ff ff", 2047),
        ("38 00 00", -262144),
        ("3f ff ff", 262143),
        ("59 80 00 00 00", -(2**31)),
        ("4c 7f ff ff ff ff ff ff ff", 2**63 - 1),
        ("4c 00 00 00 00 00 00 00 01", 1),
    ],
)
def test_long_forms_decode_as_java_long(data: str, expected: int) -> None:
    value = one(h(data))
    assert value == expected
    assert isinstance(value, JavaLong)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("5b", 0.0),
        ("5c", 1.0),
        ("5d 80", -128.0),
        ("5e 80 00", -32768.0),
        ("5f 00 00 2f da", 12.25),
        ("5f ff ff fa 24", -1.5),
        ("44 40 28 80 00 00 00 00 00", 12.25),
        ("44 7f f0 00 00 00 00 00 00", math.inf),
    ],
)
def test_double_forms(data: str, expected: float) -> None:
    value = one(h(data))
    assert value == expected
    assert type(value) is float


def test_nan() -> None:
    value = one(h("44 7f f8 00 00 00 00 00 00"))
    assert isinstance(value, float)
    assert math.isnan(value)


def test_dates_are_utc_aware() -> None:
    assert one(h("4a 00 00 00 d0 4b 92 84 b8")) == datetime(1998, 5, 8, 9, 51, 31, tzinfo=UTC)
    minute = one(h("4b 00 e3 83 8f"))
    assert minute == datetime(1998, 5, 8, 9, 51, tzinfo=UTC)
    assert isinstance(minute, datetime)
    assert minute.tzinfo is UTC
    assert one(h("4b ff ff ff 9c")) == EPOCH - timedelta(minutes=100)


def test_date_outside_pythons_range_is_a_decode_error() -> None:
    with pytest.raises(HessianDecodeError, match="out of range"):
        one(h("4a 7f ff ff ff ff ff ff ff"))


def test_strings() -> None:
    assert one(h("00")) == ""
    assert one(h("05 68 65 6c 6c 6f")) == "hello"
    assert one(h("01 c3 a9")) == "\u00e9"
    assert one(h("30 20") + b"x" * 32) == "x" * 32
    assert one(h("53 04 00") + b"x" * 1024) == "x" * 1024


def test_surrogate_pair_becomes_one_character_and_lone_surrogate_survives() -> None:
    assert one(h("02 ed a0 bd ed b8 80")) == "\U0001f600"
    assert one(h("01 ed a0 80")) == "\ud800"


def test_string_chunks_of_every_kind_join() -> None:
    # 'R' chunk, then a compact final chunk; a pair split across chunks still joins.
    data = h("52 00 02 61 ed a0 bd 01 ed b8 80")
    assert one(data) == "a\U0001f600"
    assert one(h("52 00 01 61 52 00 01 62 30 01 63")) == "abc"


def test_binary_forms_and_chunks() -> None:
    assert one(h("20")) == b""
    assert one(h("23 01 02 03")) == b"\x01\x02\x03"
    assert one(h("34 10") + bytes(16)) == bytes(16)
    assert one(h("42 00 02 aa bb")) == b"\xaa\xbb"
    assert one(h("41 00 01 aa 41 00 01 bb 21 cc")) == b"\xaa\xbb\xcc"


def test_lists_of_every_form() -> None:
    assert one(h("78")) == []
    assert one(h("7a 91 92")) == [1, 2]
    assert one(h("58 92 91 92")) == [1, 2]
    assert one(h("57 91 92 5a")) == [1, 2]  # variable length, untyped
    typed = one(h("55 04") + b"[int" + h("91 5a"))  # variable length, typed
    assert typed == TypedList("[int", [1])
    assert one(h("56 04") + b"[int" + h("92 91 92")) == TypedList("[int", [1, 2])


def test_type_names_are_referenced_by_index() -> None:
    data = h("7a 71 04") + b"a.L1" + h("91 71 90 92")
    assert one(data) == [TypedList("a.L1", [1]), TypedList("a.L1", [2])]


def test_maps() -> None:
    assert one(h("48 5a")) == {}
    assert one(h("48 91 01 61 92 01 62 5a")) == {1: "a", 2: "b"}
    assert one(h("4d 03") + b"a.M" + h("01 6b 4e 5a")) == TypedMap("a.M", {"k": None})


def test_objects_with_direct_and_O_forms() -> None:
    data = h("43 03 61 2e 50 92 01 78 01 79 60 91 92 4f 90 93 94")
    first, second = decode_all(data)
    assert first == JavaObject("a.P", {"x": 1, "y": 2})
    assert second == JavaObject("a.P", {"x": 3, "y": 4})


def test_one_field_name_object_with_string_is_read_as_enum() -> None:
    assert one(h("43 01 43 91 04") + b"name" + h("60 03") + b"RED") == JavaEnum("C", "RED")
    # Not a string: stays an object.
    assert one(h("43 01 43 91 04") + b"name" + h("60 91")) == JavaObject("C", {"name": 1})


def test_big_decimal() -> None:
    data = h("43 14") + b"java.math.BigDecimal" + h("91 05") + b"value" + h("60 04") + b"1.50"
    value = one(data)
    assert isinstance(value, Decimal)
    assert str(value) == "1.50"


def test_references_to_lists_maps_and_objects() -> None:
    pair = one(h("7a 79 91 51 91"))
    assert isinstance(pair, list)
    first, second = pair
    assert first is second
    shared = decode_all(h("48 01 6b 91 5a 51 90"))
    assert shared[0] is shared[1]


def test_self_reference_is_a_cycle_not_a_hang() -> None:
    value = one(h("79 51 90"))
    assert isinstance(value, list)
    assert value[0] is value
    node = one(h("43 01 4e 91 04 6e 65 78 74 60 51 90"))
    assert isinstance(node, JavaObject)
    assert node.fields["next"] is node


def test_read_object_is_callable_repeatedly_with_shared_state() -> None:
    decoder = Hessian2Decoder(h("43 01 43 91 01 76 60 91 60 92"))
    assert decoder.read_object() == JavaObject("C", {"v": 1})
    assert not decoder.at_end()
    assert decoder.read_object() == JavaObject("C", {"v": 2})
    assert decoder.at_end()
    with pytest.raises(HessianDecodeError, match="no value left"):
        decoder.read_object()


# -- round trips ---------------------------------------------------------------------------

CLASS_NAMES = st.sampled_from(["a.B", "com.example.Point", "x.Y$Z"])
FIELD_NAMES = st.sampled_from(["x", "y", "value", "children", "id"])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**31), 2**31 - 1)
    | st.integers(-(2**63), 2**63 - 1).map(JavaLong)
    | st.floats()
    | st.text()
    | st.binary(max_size=300)
    | st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.just(UTC),
    ).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.builds(JavaEnum, CLASS_NAMES, st.sampled_from(["RED", "GREEN"]))
)


def containers(children: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return (
        st.lists(children, max_size=10)
        | st.tuples(children, children)
        | st.dictionaries(
            st.text(max_size=5) | st.integers(-(2**31), 2**31 - 1), children, max_size=5
        )
        | st.builds(
            TypedList,
            st.sampled_from(["java.util.LinkedList", "[object"]),
            st.lists(children, max_size=9),
        )
        | st.builds(
            TypedMap,
            st.sampled_from(["java.util.TreeMap"]),
            st.dictionaries(st.text(max_size=5), children, max_size=5),
        )
        | st.builds(JavaObject, CLASS_NAMES, st.dictionaries(FIELD_NAMES, children, min_size=2))
    )


values = st.recursive(scalars, containers, max_leaves=30)


@settings(deadline=None, max_examples=300)
@given(st.lists(values, min_size=1, max_size=4))
def test_round_trip(stream: list[object]) -> None:
    # A class keeps one field list per stream, as it does in Java.
    assert_same_graph(stream, decode_all(encode(*stream)))


@settings(deadline=None, max_examples=200)
@given(st.lists(values, min_size=1, max_size=3))
def test_decoded_values_re_encode_to_the_same_bytes(stream: list[object]) -> None:
    data = encode(*stream)
    assert encode(*decode_all(data)) == data


@settings(deadline=None, max_examples=50)
@given(st.text(min_size=1, max_size=20), st.integers(0, 40))
def test_round_trip_of_long_and_chunked_text(piece: str, extra: int) -> None:
    # Repeat a random piece to just past the 32768-unit chunk size, where chunking and
    # surrogate pairs meet.
    text = piece * (0x8000 // len(piece)) + piece[: extra % len(piece)] + "\U0001f600" * extra
    assert decode_all(encode(text)) == [text]


def test_round_trip_of_lone_surrogates_and_chunk_boundaries() -> None:
    for text in ["\udc00\ud800", "a" * 0x7FFF + "\U0001f600" * 3, "\u20ac" * 0x8001]:
        assert decode_all(encode(text)) == [text]


# -- hostile input -------------------------------------------------------------------------

VALID_ENCODINGS = [
    encode(2**31),
    encode(-262145),
    encode(JavaLong(-2049)),
    encode(3.3),
    encode(12.25),
    encode(datetime(1998, 5, 8, 9, 51, 31, tzinfo=UTC)),
    encode("h\u00e9llo \U0001f600 w\u00f6rld"),
    h("52 00 02 61 ed a0 bd 01 ed b8 80"),  # chunked, a pair split across chunks
    encode(bytes(range(256)) * 32 + b"x"),  # chunked binary
    encode([1, "two", [3.5, None], {"k": JavaLong(5)}]),
    encode(TypedList("java.util.LinkedList", list(range(9)))),
    encode(TypedMap("java.util.TreeMap", {"a": True})),
    encode(Decimal("-123.456")),
    encode([JavaEnum("C", "RED"), JavaEnum("C", "RED")]),
    encode(JavaObject("a.P", {"x": [1], "y": JavaObject("a.Q", {"z": b"\x00"})})),
]


@pytest.mark.parametrize("data", VALID_ENCODINGS, ids=lambda d: d[:8].hex())
def test_truncated_at_every_offset_raises_decode_error(data: bytes) -> None:
    assert len(decode_all(data)) == 1
    for cut in range(len(data)):
        with pytest.raises(HessianDecodeError):
            Hessian2Decoder(data[:cut]).read_object()


def test_decode_error_is_a_remote_protocol_error() -> None:
    with pytest.raises(RemoteProtocolError):
        decode_all(h("40"))


def test_list_declaring_two_billion_elements_fails_fast_without_allocating() -> None:
    tracemalloc.start()
    try:
        with pytest.raises(HessianDecodeError, match="declares 2147483647 elements"):
            decode_all(h("58 49 7f ff ff ff 91 92 93"))
        with pytest.raises(HessianDecodeError, match="declares 2147483647 elements"):
            decode_all(h("56 01 4c 49 7f ff ff ff 91 92 93"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_negative_list_length_is_refused() -> None:
    with pytest.raises(HessianDecodeError, match="negative"):
        decode_all(h("58 49 ff ff ff ff"))


@pytest.mark.parametrize(
    "data",
    [
        h("53 ff ff 61 62 63"),  # string claims 65535 units
        h("52 ff ff 61"),
        h("42 ff ff 00 01 02"),  # binary claims 65535 bytes
        h("41 ff ff 00"),
        h("43 01 43 49 7f ff ff ff 01 78"),  # class claims 2**31-1 fields
    ],
)
def test_huge_declared_lengths_with_short_bodies(data: bytes) -> None:
    with pytest.raises(HessianDecodeError):
        decode_all(data)


@pytest.mark.parametrize(
    "opener",
    [h("79"), h("48 90"), h("71 01 4c")],  # list of one, map entry 0 -> ..., typed list
)
def test_nesting_ten_thousand_deep_is_refused_by_depth_limit(opener: bytes) -> None:
    with pytest.raises(HessianDecodeError, match="max_depth"):
        decode_all(opener * 10_000 + h("90"))


def test_nested_objects_are_bounded_too() -> None:
    data = h("43 01 4e 91 01 6e") + h("60") * 10_000 + h("4e")
    with pytest.raises(HessianDecodeError, match="max_depth"):
        decode_all(data)


def test_depth_limit_is_configurable() -> None:
    assert one(h("79") * 5 + h("90"), Limits(max_depth=5)) == [[[[[0]]]]]
    with pytest.raises(HessianDecodeError, match="max_depth=4"):
        one(h("79") * 5 + h("90"), Limits(max_depth=4))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (h("51 90"), "reference 0 to an undefined value"),
        (h("79 51 91"), "reference 1 to an undefined value"),
        (h("51 49 7f ff ff ff"), "undefined"),
        (h("60"), "undefined class definition 0"),
        (h("4f 91"), "undefined class definition 1"),
        (h("71 90 90"), "type reference 0 undefined"),
        (h("51 4e"), "reference must be an int"),
    ],
)
def test_undefined_references(data: bytes, message: str) -> None:
    with pytest.raises(HessianDecodeError, match=message):
        decode_all(data)


def test_big_decimal_referring_to_itself_is_refused() -> None:
    data = h("43 14") + b"java.math.BigDecimal" + h("91 05") + b"value" + h("60 51 90")
    with pytest.raises(HessianDecodeError, match="still being decoded"):
        decode_all(data)


@pytest.mark.parametrize("tag", [0x40, 0x45, 0x47, 0x50])
def test_reserved_tags_are_refused(tag: int) -> None:
    with pytest.raises(HessianDecodeError, match=f"unknown Hessian 2.0 tag 0x{tag:02x}"):
        decode_all(bytes([tag]))


def test_end_marker_out_of_place() -> None:
    with pytest.raises(HessianDecodeError, match="unexpected end marker"):
        decode_all(h("5a"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (h("01 ff"), "not valid UTF-8"),
        (h("02 c3 41"), "not valid UTF-8"),
        (h("02 f0 9f 98 80"), "4-byte UTF-8"),  # hessian-lite refuses these too
        (h("52 00 01 61 91"), "string chunk expected"),
        (h("41 00 01 61 91"), "binary chunk expected"),
        (h("43 91"), "class name must be a string"),
        (h("43 01 43 91 91"), "field name must be a string"),
    ],
)
def test_malformed_values(data: bytes, message: str) -> None:
    with pytest.raises(HessianDecodeError, match=message):
        decode_all(data)


def test_unhashable_map_key_is_a_decode_error() -> None:
    with pytest.raises(HessianDecodeError, match="map key of type list"):
        decode_all(h("48 78 90 5a"))


@pytest.mark.parametrize(
    ("limits", "data", "message"),
    [
        (Limits(max_elements=3), encode(list(range(4))), "max_elements"),
        (Limits(max_elements=3), h("57 90 90 90 90 5a"), "max_elements"),
        (Limits(max_string_length=3), encode("abcd"), "max_string_length"),
        (Limits(max_string_length=3), h("52 00 02 61 62 02 63 64"), "max_string_length"),
        (Limits(max_binary_length=3), encode(b"abcd"), "max_binary_length"),
        (
            Limits(max_class_defs=1),
            encode(JavaObject("A", {}), JavaObject("B", {})),
            "max_class_defs",
        ),
        (Limits(max_refs=2), encode([[], []]), "max_refs"),
        (Limits(max_types=1), encode(TypedList("a", []), TypedList("b", [])), "max_types"),
    ],
)
def test_limits(limits: Limits, data: bytes, message: str) -> None:
    with pytest.raises(HessianDecodeError, match=message):
        decode_all(data, limits)


def test_decoder_stays_failed_after_an_error() -> None:
    decoder = Hessian2Decoder(h("40 90"))
    with pytest.raises(HessianDecodeError):
        decoder.read_object()
    with pytest.raises(HessianDecodeError, match="already failed"):
        decoder.read_object()


@settings(deadline=None, max_examples=1000)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_decode_errors(data: bytes) -> None:
    with contextlib.suppress(HessianDecodeError):
        decode_all(data)


@settings(deadline=None, max_examples=500)
@given(st.sampled_from(VALID_ENCODINGS), st.data())
def test_mutated_encodings_raise_only_decode_errors(data: bytes, draw: st.DataObject) -> None:
    position = draw.draw(st.integers(0, len(data) - 1))
    byte = draw.draw(st.integers(0, 255))
    mutated = data[:position] + bytes([byte]) + data[position + 1 :]
    with contextlib.suppress(HessianDecodeError):
        decode_all(mutated)


@pytest.mark.parametrize(
    "value_of",
    [
        pytest.param(lambda n: [f"s{i}" for i in range(n)], id="list-of-strings"),
        pytest.param(lambda n: "\u00e9x" * n, id="long-chunked-string"),
        pytest.param(lambda n: b"\x01" * (n * 8), id="long-chunked-binary"),
        pytest.param(lambda n: {i: [i, float(i)] for i in range(n)}, id="map-of-lists"),
    ],
)
def test_decoding_work_is_linear_in_the_input(value_of: Callable[[int], object]) -> None:
    # Issue 25: no decoder's work may grow faster than its input. Lines of decoder.py run
    # (an interpreted copy, so the count is the same in a compiled build) for n and 10n.
    decoder = interpreted("plugins.dubbo.hessian2.decoder")

    def lines_for(n: int) -> int:
        data = encode(value_of(n))
        (decoded,), lines = lines_run(decoder, lambda: decoder.decode_all(data))
        assert decoded == value_of(n) or isinstance(decoded, bytes | dict)
        return lines

    assert lines_for(30_000) <= 10 * lines_for(3_000) * 1.05
