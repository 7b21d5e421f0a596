from __future__ import annotations

import pytest

from plugins.grpc.httprule import (
    HTTP_EXTENSION,
    Binding,
    RuleError,
    bindings_from_options,
    compile_template,
)


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number: int, value: bytes | str) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(raw)) + raw


def options(rule: bytes) -> bytes:
    # Another option before the rule (deprecated = true, field 33 varint) is skipped.
    return varint(33 << 3) + b"\x01" + field(HTTP_EXTENSION, rule)


def test_rule_with_body_response_body_and_additional_binding() -> None:
    rule = (
        field(4, "/v1/{parent=shelves/*}/books")
        + field(7, "book")
        + field(12, "title")
        + field(11, field(2, "/v1/books/{parent}"))
    )
    assert bindings_from_options(options(rule)) == [
        Binding("POST", "/v1/{parent=shelves/*}/books", "book", "title"),
        Binding("GET", "/v1/books/{parent}"),
    ]


def test_custom_method_and_no_rule() -> None:
    rule = field(8, field(1, "head") + field(2, "/v1/ping"))
    assert bindings_from_options(options(rule)) == [Binding("HEAD", "/v1/ping")]
    assert bindings_from_options(varint(33 << 3) + b"\x01") == []
    assert bindings_from_options(b"") == []


@pytest.mark.parametrize(
    "data",
    [
        field(HTTP_EXTENSION, b"")[:-1] + b"\x80",  # truncated varint
        varint(HTTP_EXTENSION << 3 | 2) + varint(50) + b"short",  # length past the end
        varint(1 << 3 | 3),  # group wire type
    ],
)
def test_malformed_options_are_a_rule_error(data: bytes) -> None:
    with pytest.raises(RuleError):
        bindings_from_options(data)


def test_nesting_is_bounded() -> None:
    rule = field(2, "/a")
    for _ in range(4):
        rule = field(2, "/a") + field(11, rule)
    with pytest.raises(RuleError, match="nested"):
        bindings_from_options(options(rule))


def test_template_variables_and_verb() -> None:
    template = compile_template("/v1/{name=shelves/*/books/*}:move")
    assert template.match("/v1/shelves/1/books/2:move") == {"name": "shelves/1/books/2"}
    assert template.match("/v1/shelves/1/books/2") is None
    assert template.match("/v1/shelves/1:move") is None


def test_template_default_variable_is_one_segment_and_percent_decoded() -> None:
    template = compile_template("/v1/shelves/{shelf}/books/{book.id}")
    assert template.match("/v1/shelves/a%20b/books/7") == {"shelf": "a b", "book.id": "7"}
    assert template.match("/v1/shelves/a/b/books/7") is None


def test_double_wildcard_takes_the_rest() -> None:
    template = compile_template("/v1/{path=files/**}")
    assert template.match("/v1/files/a/b/c") == {"path": "files/a/b/c"}
    assert template.match("/v1/files") is None
    assert compile_template("/v1/*/x").match("/v1/any/x") == {}


@pytest.mark.parametrize(
    "bad", ["v1/x", "/v1/{name", "/v1/{1x}", "/v1/{a}/{a}", "/v1/a b", "/v1/x:{y}"]
)
def test_bad_templates(bad: str) -> None:
    with pytest.raises(RuleError):
        compile_template(bad)
