"""plugins/dubbo/jdk_types.py with values alone (Java's own outputs, from Java 17, inline).

The bytes against hessian-lite are tests/interop/test_hessian2_java.py's; the real provider
is tests/interop/test_dubbo_jdk_types.py's.
"""

from __future__ import annotations

import pytest

from plugins.dubbo import jdk_types
from plugins.dubbo.generic import ArgumentError, to_java, to_json
from plugins.dubbo.hessian2 import JavaLong, JavaObject, decode_all, encode
from tests.support.jdk_values import JDK_VALUES


@pytest.mark.parametrize(
    ("seconds", "nanos", "text"),
    [
        (0, 0, "PT0S"),
        (-1, 0, "PT-1S"),
        (-1, 500_000_000, "PT-0.5S"),
        (-61, 500_000_000, "PT-1M-0.5S"),
        (3600, 0, "PT1H"),
        (-3600, 0, "PT-1H"),
        (90061, 5, "PT25H1M1.000000005S"),
        (-90061, 999_999_999, "PT-25H-1M-0.000000001S"),
        (59, 1000, "PT59.000001S"),
        (0, 1, "PT0.000000001S"),
        (-1, 999_999_999, "PT-0.000000001S"),
    ],
)
def test_duration_text_is_javas_to_string(seconds: int, nanos: int, text: str) -> None:
    assert jdk_types.duration_text(seconds, nanos) == text
    parsed = jdk_types.duration(text)
    assert (parsed.fields["seconds"], parsed.fields["nanos"]) == (seconds, nanos)


@pytest.mark.parametrize(
    ("text", "seconds", "nanos"),
    [
        ("PT-0.5S", -1, 500_000_000),
        ("-PT1H30M", -5400, 0),
        ("P2DT3H", 183600, 0),
        ("PT1.5S", 1, 500_000_000),
        ("-PT-1.5S", 1, 500_000_000),
        ("pt1h", 3600, 0),
    ],
)
def test_duration_parse_is_javas(text: str, seconds: int, nanos: int) -> None:
    parsed = jdk_types.duration(text)
    assert parsed.fields == {"nanos": nanos, "seconds": seconds}
    assert isinstance(parsed.fields["seconds"], JavaLong)


def test_period_parse_and_text() -> None:
    parsed = jdk_types.period("-P1Y2M3W4D")
    assert parsed.fields == {"days": -25, "months": -2, "years": -1}
    assert jdk_types.period_text(-1, -2, -25) == "P-1Y-2M-25D"
    assert jdk_types.period_text(0, 0, 0) == "P0D"


def test_instant_from_text_offsets_and_epoch_milliseconds() -> None:
    assert jdk_types.instant("1970-01-01T08:00:00+08:00").fields == {"nanos": 0, "seconds": 0}
    assert jdk_types.instant(-1).fields == {"nanos": 999_000_000, "seconds": -1}
    assert jdk_types.instant_text(-62135596800, 0) == "0001-01-01T00:00:00Z"
    assert jdk_types.instant_text(0, 1_000_000) == "1970-01-01T00:00:00.001Z"


@pytest.mark.parametrize(("declared", "text"), JDK_VALUES)
def test_each_value_reads_back_as_its_text(declared: str, text: object) -> None:
    """Through our own encoder and decoder: the handle written is read as the same JSON."""
    (decoded,) = decode_all(encode(to_java(text, declared)))
    assert to_json(decoded) == text


@pytest.mark.parametrize(
    ("generalized", "text"),
    [
        ({"class": "java.time.Instant", "epochSecond": 1700000000, "nano": 5}, None),
        ({"class": "java.time.Duration", "seconds": 90061, "nano": 5, "zero": False}, None),
        ({"class": "java.time.Year", "value": 2024, "leap": True}, 2024),
        ({"class": "java.util.Currency", "currencyCode": "EUR", "symbol": "€"}, "EUR"),
        ({"class": "java.net.Inet4Address", "hostAddress": "10.1.2.3"}, "10.1.2.3"),
        (
            {
                "class": "java.net.URI",
                "scheme": "https",
                "rawSchemeSpecificPart": "//example.com/a?b=c",
                "rawFragment": "d",
            },
            "https://example.com/a?b=c#d",
        ),
        ({"class": "java.util.Locale", "language": "zh", "country": "CN", "variant": ""}, "zh_CN"),
    ],
)
def test_generalized_maps_read_as_text(generalized: dict[str, object], text: object) -> None:
    """The maps the provider's PojoUtils.generalize makes (as printed by Dubbo 3.3.6)."""
    expected = {
        "java.time.Instant": "2023-11-14T22:13:20.000000005Z",
        "java.time.Duration": "PT25H1M1.000000005S",
    }.get(str(generalized["class"]), text)
    assert to_json(generalized) == expected


def test_a_generalized_map_of_another_shape_stays_a_map() -> None:
    odd = {"class": "java.time.Instant", "epochSecond": "soon"}
    assert to_json(odd) == odd
    assert to_json(JavaObject(jdk_types.INSTANT_HANDLE, {"seconds": "x"})) == {
        "class": jdk_types.INSTANT_HANDLE,
        "seconds": "x",
    }


@pytest.mark.parametrize(
    ("declared", "value"),
    [
        ("java.time.Instant", "2024-13-01T00:00:00Z"),
        ("java.time.Instant", 2**63),
        ("java.time.LocalTime", "24:00"),
        ("java.time.OffsetDateTime", "2024-02-29T13:45:30+19:00"),
        ("java.time.ZoneId", "Europe Paris"),
        ("java.time.MonthDay", "--02-30"),
        ("java.time.YearMonth", "2024-13"),
        ("java.time.Period", "P"),
        ("java.time.Duration", "PT"),
        ("java.util.Locale", ""),
        ("java.net.URI", "a b"),
        ("java.lang.Class", "java.lang.String;rm"),
        ("char", "\U0001f600"),
        ("java.time.Instant", "x" * 10_000),
        ("java.time.Instant", 1.5),
    ],
)
def test_bad_values_are_argument_errors(declared: str, value: object) -> None:
    with pytest.raises(ArgumentError) as caught:
        to_java(value, declared, "args[0]")
    assert caught.value.path == "args[0]"


def test_a_map_parameters_class_key() -> None:
    assert to_java({"class": "java.util.TreeMap", "a": 1}, "java.util.Map") == {
        "class": "java.util.TreeMap",
        "a": 1,
    }
    with pytest.raises(ArgumentError) as caught:
        to_java({"class": "java.util.Date"}, "java.util.Map", "args[1]")
    assert caught.value.path == "args[1].class"
    # Not declared a Map: "class" is the POJO's type marker, as before.
    assert to_java({"class": "com.example.Person"}, "com.example.Person") == {
        "class": "com.example.Person"
    }
