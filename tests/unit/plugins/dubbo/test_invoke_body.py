"""The JSON body of a Dubbo invocation: what it may say, and errors by path."""

from __future__ import annotations

import pytest

from agent.errors import InvalidRequest
from plugins.dubbo.invoke_body import parse_body


def test_every_field_is_optional() -> None:
    body = parse_body({})
    assert (body.types, body.args, body.version, body.group) == (None, [], None, None)
    assert (body.attachments, body.timeout_ms) == ({}, None)


def test_a_full_body() -> None:
    body = parse_body(
        {
            "types": ["java.lang.String", "int"],
            "args": ["a", 1],
            "version": "1.0",
            "group": "*",
            "attachments": {"tenant": "t1", "n": 2},
            "timeout_ms": 500,
        }
    )
    assert body.types == ["java.lang.String", "int"] and body.args == ["a", 1]
    assert body.attachments == {"tenant": "t1", "n": 2}


@pytest.mark.parametrize(
    ("raw", "path", "fragment"),
    [
        ({"argz": []}, "body.argz", "Extra inputs"),
        ({"timeout_ms": 0}, "body.timeout_ms", "greater than or equal to 1"),
        ({"types": [""]}, "body.types.0", "at least 1 character"),
        ({"attachments": {"timeout": 5}}, "body.attachments", "timeout set by the agent"),
        ({"attachments": {"generic": "x", "path": "y"}}, "body.attachments", "generic, path"),
        ({"types": ["int"], "args": [1, 2]}, "body.types", "must pair up"),
    ],
)
def test_errors_name_the_path(raw: dict[str, object], path: str, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_body(raw)
    assert any(p.startswith(path) and fragment in p + m for p, m in caught.value.errors), (
        caught.value.errors
    )
