from __future__ import annotations

import base64
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from plugins.dubbo.body import decode_invocation, encode_invocation
from plugins.dubbo.generic import (
    MAX_ARG_DEPTH,
    ArgumentError,
    GenericCall,
    generic_invocation,
    parse_date,
    remote_exception,
    to_java,
    to_json,
)
from plugins.dubbo.hessian2 import JavaEnum, JavaLong, JavaObject, TypedList, TypedMap

PERSON = "org.meshagent.interop.api.Person"


def test_invoke_request_on_the_wire_is_what_generic_impl_filter_sends() -> None:
    call = GenericCall(
        interface="com.acme.Greeter",
        method="greet",
        types=("java.lang.String", "long"),
        args=("ann", 7),
        version="1.0.0",
        group="blue",
        attachments={"traceid": "t-1", "retry": 2},
    )
    decoded = decode_invocation(encode_invocation(generic_invocation(call, 1500)))
    assert decoded.path == "com.acme.Greeter"
    assert decoded.version == "1.0.0"
    assert decoded.method == "$invoke"
    assert decoded.parameter_types == (
        "java.lang.String",
        "java.lang.String[]",
        "java.lang.Object[]",
    )
    name, types, args = decoded.arguments
    assert name == "greet"
    assert types == TypedList("[string", ["java.lang.String", "long"])
    assert args == TypedList("[object", ["ann", 7])
    assert isinstance(args.items[1], JavaLong)  # a declared long travels as a long
    assert decoded.attachments == {
        "traceid": "t-1",
        "retry": "2",
        "generic": "true",
        "path": "com.acme.Greeter",
        "interface": "com.acme.Greeter",
        "version": "1.0.0",
        "group": "blue",
        "timeout": "1500",
    }


def test_no_version_no_group_no_types() -> None:
    call = GenericCall("com.acme.Greeter", "whoami", None, ())
    invocation = generic_invocation(call, 1000)
    assert invocation.version == "0.0.0"
    assert "group" not in invocation.attachments
    assert invocation.arguments[1] is None  # the provider finds the method by name
    assert invocation.arguments[2] == TypedList("[object", [])


@pytest.mark.parametrize(
    ("value", "type_name", "expected"),
    [
        (5, "long", JavaLong(5)),
        (5, "java.lang.Long", JavaLong(5)),
        (2, "double", 2.0),
        ("10.50", "java.math.BigDecimal", Decimal("10.50")),
        (1.5, "java.math.BigDecimal", Decimal("1.5")),
        (1700000000000, "java.util.Date", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        ("2023-11-14T22:13:20Z", "java.util.Date", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        ("2023-11-14T22:13:20", "java.util.Date", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        (base64.b64encode(b"\x00\xff").decode(), "byte[]", b"\x00\xff"),
        (True, "long", True),  # JSON booleans are never numbers
        ("HIGH", "com.acme.Level", "HIGH"),  # enums: realized by name on the provider
        (None, "long", None),
    ],
)
def test_declared_types_are_coerced(value: Any, type_name: str, expected: Any) -> None:
    got = to_java(value, type_name)
    assert got == expected
    assert type(got) is type(expected)


AT = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


@pytest.mark.parametrize("kind", ["java.sql.Timestamp", "java.sql.Date", "java.sql.Time"])
def test_sql_dates_are_objects_of_their_class_with_the_date_as_value(kind: str) -> None:
    # hessian's SqlDateSerializer: sent as a plain date, the provider's GenericFilter gave
    # a java.util.Date to a Timestamp parameter (ClassCastException, issue 23).
    for given in (1700000000000, "2023-11-14T22:13:20Z"):
        assert to_java(given, kind) == JavaObject(kind, {"value": AT})
    assert to_json(JavaObject(kind, {"value": AT})) == "2023-11-14T22:13:20.000Z"


@pytest.mark.parametrize(
    ("value", "signum", "words"),
    [
        (0, 0, []),
        (1, 1, [1]),
        (-1, -1, [1]),
        (2**31, 1, [-(2**31)]),  # a word is a Java int: the top bit is its sign
        (2**32 + 5, 1, [1, 5]),
        (-(2**64), -1, [1, 0, 0]),
    ],
)
def test_big_integers_are_sign_and_magnitude_words(
    value: int, signum: int, words: list[int]
) -> None:
    for given in (value, str(value)):
        sent = to_java(given, "java.math.BigInteger")
        assert isinstance(sent, JavaObject) and sent.class_name == "java.math.BigInteger"
        assert sent.fields["signum"] == signum
        assert sent.fields["mag"] == TypedList("[int", words)
        # The field order hessian-lite writes (primitives, then the int[]).
        names = list(sent.fields)
        assert names[0] == "signum" and names[-1] == "mag"
        assert to_json(sent) == str(value)


def test_a_big_integer_as_java_sends_it_comes_back_as_its_digits() -> None:
    # As decoded from a provider: the int[] may come as a plain list.
    sent = JavaObject(
        "java.math.BigInteger",
        {"signum": -1, "mag": [1, -1], "bitCountPlusOne": 0, "bitLengthPlusOne": 34},
    )
    assert to_json(sent) == str(-((1 << 32) | 0xFFFFFFFF))
    # Not a BigInteger's fields: shown as the object it is.
    odd = JavaObject("java.math.BigInteger", {"signum": 7, "mag": []})
    assert to_json(odd) == {"class": "java.math.BigInteger", "signum": 7, "mag": []}


def test_pojos_and_maps_travel_as_maps_with_their_class_key() -> None:
    person = {"class": PERSON, "name": "ann", "address": {"city": "x"}, "tags": ["a"]}
    assert to_java(person, PERSON) == person
    assert to_java({1: "a"}) == {"1": "a"}  # JSON keys are strings anyway


@pytest.mark.parametrize(
    ("value", "type_name", "path"),
    [
        ("last tuesday", "java.util.Date", "args[0]"),
        ({"x": 1}, "java.util.Date", "args[0]"),
        ("ten", "java.math.BigDecimal", "args[0]"),
        ("NaN", "java.math.BigDecimal", "args[0]"),
        ("***", "byte[]", "args[0]"),
        ("1_000", "java.math.BigInteger", "args[0]"),
        ("١٢", "java.math.BigInteger", "args[0]"),  # Arabic-Indic digits: not for int()
        ("12.5", "java.math.BigInteger", "args[0]"),
        ("soon", "java.sql.Timestamp", "args[0]"),
        pytest.param(1 << (32 * 256), "java.math.BigInteger", "args[0]", id="over-8192-bits"),
        pytest.param("9" * 2468, "java.math.BigInteger", "args[0]", id="over-2467-digits"),
    ],
)
def test_bad_arguments_name_their_path(value: Any, type_name: str, path: str) -> None:
    with pytest.raises(ArgumentError) as caught:
        to_java(value, type_name, "args[0]")
    assert caught.value.path == path


def test_bad_argument_path_inside_the_invocation() -> None:
    call = GenericCall("I", "m", ("int", "java.util.Date"), (1, "never"))
    with pytest.raises(ArgumentError) as caught:
        generic_invocation(call, 1000)
    assert caught.value.path == "args[1]"


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def test_json_nested_past_the_bound_is_refused_with_its_path() -> None:
    # Issue 25: 500 nested arrays answered a 500 with a 2,973-line RecursionError.
    assert generic_invocation(GenericCall("I", "m", None, (nested(MAX_ARG_DEPTH),)), 1000)
    for depth in (MAX_ARG_DEPTH + 1, 5_000):
        with pytest.raises(ArgumentError) as caught:
            generic_invocation(GenericCall("I", "m", None, (nested(depth),)), 1000)
        assert f"nested deeper than {MAX_ARG_DEPTH}" in caught.value.message
        assert caught.value.path.startswith("args[0]")


def test_results_become_plain_json() -> None:
    value = {
        "class": PERSON,
        "name": "ann",
        "age": JavaLong(31),
        "birthday": datetime(2023, 11, 14, 22, 13, 20, 5000, tzinfo=UTC),
        "balance": Decimal("10.50"),
        "level": JavaEnum("com.acme.Level", "HIGH"),
        "photo": b"\x01\x02",
        "ratio": float("nan"),
        "scores": TypedList("[int", [1, 2]),
        "by_id": TypedMap("java.util.TreeMap", {1: "one", None: "none", False: "no"}),
        "address": JavaObject("com.acme.Address", {"city": "x"}),
    }
    assert to_json(value) == {
        "class": PERSON,
        "name": "ann",
        "age": 31,
        "birthday": "2023-11-14T22:13:20.005Z",
        "balance": "10.50",
        "level": "HIGH",
        "photo": "AQI=",
        "ratio": "NaN",
        "scores": [1, 2],
        "by_id": {"1": "one", "null": "none", "false": "no"},
        "address": {"class": "com.acme.Address", "city": "x"},
    }
    assert type(to_json(JavaLong(5))) is int


def test_a_value_containing_itself_is_cut() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    assert to_json(loop) == [1, None]
    shared = {"a": 1}
    assert to_json([shared, shared]) == [{"a": 1}, {"a": 1}]  # shared is not a cycle


def test_generic_exception_names_the_real_exception() -> None:
    wrapped = JavaObject(
        "org.apache.dubbo.rpc.service.GenericException",
        {
            "detailMessage": "com.acme.Boom: boom",
            "exceptionClass": "com.acme.Boom",
            "exceptionMessage": "boom",
            "stackTrace": [],
        },
    )
    error = remote_exception(wrapped)
    assert (error.exception_type, str(error), error.details) == ("com.acme.Boom", "boom", None)


def test_plain_throwable_uses_detail_message_and_keeps_its_own_fields() -> None:
    thrown = JavaObject(
        "com.acme.NotFound",
        {"detailMessage": "no 7", "stackTrace": [], "cause": None, "id": JavaLong(7)},
    )
    error = remote_exception(thrown)
    assert (error.exception_type, str(error), error.details) == (
        "com.acme.NotFound",
        "no 7",
        {"id": 7},
    )


def test_parse_date_rejects_what_is_not_a_date() -> None:
    with pytest.raises(ArgumentError):
        parse_date(float("inf"))
    with pytest.raises(ArgumentError):
        parse_date(True)


def test_a_uuid_goes_as_hessian_lite_writes_it_and_comes_back_as_text() -> None:
    text = "123e4567-e89b-12d3-a456-426614174000"
    assert to_java(text.upper(), "java.util.UUID") == JavaObject("java.util.UUID", {"value": text})
    with pytest.raises(ArgumentError):
        to_java("nope", "java.util.UUID", "args[0]")
    # Read back from hessian's own form, and from the map PojoUtils generalizes one into.
    assert to_json(JavaObject("java.util.UUID", {"value": text})) == text
    generalized = {
        "class": "java.util.UUID",
        "mostSignificantBits": 0x123E4567E89B12D3,
        "leastSignificantBits": 0xA456426614174000 - 2**64,
    }
    assert to_json(generalized) == text


def test_a_generalized_throwable_reads_without_its_stack() -> None:
    frame = {"class": "java.lang.StackTraceElement", "methodName": "run", "lineNumber": 7}
    cause = {
        "class": "java.io.IOException",
        "message": "inner",
        "localizedMessage": "inner",
        "stackTrace": [frame],
        "suppressed": [],
        "cause": None,
    }
    outer = {**cause, "class": "x.Failed", "message": "outer", "cause": cause, "code": 7}
    outer["suppressed"] = TypedList("[object", [cause])
    assert to_json(outer) == {
        "class": "x.Failed",
        "message": "outer",
        "cause": {"class": "java.io.IOException", "message": "inner"},
        "suppressed": [{"class": "java.io.IOException", "message": "inner"}],
        "code": 7,
    }
    # A map with some of those keys is data.
    assert to_json({"message": "m", "cause": None}) == {"message": "m", "cause": None}


def test_declared_arrays_are_typed_lists_with_checked_elements() -> None:
    longs = to_java([1, 2**40], "long[]")
    assert longs == TypedList("[long", [1, 2**40])
    assert all(isinstance(v, JavaLong) for v in longs.items)
    assert to_java([1, None], "[Ljava.lang.Integer;") == TypedList("[java.lang.Integer", [1, None])
    assert to_java([1], "double[]").items == [1.0]
    for declared, items in (("int[]", [None]), ("short[]", [2**15]), ("boolean[]", [1])):
        with pytest.raises(ArgumentError) as caught:
            to_java(items, declared, "args[2]")
        assert caught.value.path == "args[2][0]"
