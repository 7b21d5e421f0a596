from __future__ import annotations

import logging
import sys

from agent.telemetry.logfmt import KeyValueFormatter


def test_extra_fields_become_key_value_pairs() -> None:
    record = logging.makeLogRecord(
        {
            "name": "x",
            "levelname": "INFO",
            "msg": "endpoint ejected",
            "cluster": "echo",
            "endpoint": "a b",
        }
    )
    line = KeyValueFormatter().format(record)
    assert line.endswith('INFO x endpoint ejected cluster=echo endpoint="a b"')


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    return logging.makeLogRecord(
        {"name": "x", "levelname": "WARNING", "msg": msg, "args": args, **extra}
    )


def test_what_a_client_sent_cannot_forge_a_line() -> None:
    # Issue 25: an instance id with "%0A" wrote "... ERROR meshagent FORGED" as a line.
    forged = "id\n2026-01-01 00:00:00,000 ERROR meshagent FORGED"
    line = KeyValueFormatter().format(
        record("bad request from client: %s", "a\r\nb", instance=forged, peer='x" y=1')
    )
    assert "\n" not in line and "\r" not in line
    assert "bad request from client: a\\r\\nb" in line
    assert 'instance="id\\n2026-01-01 00:00:00,000 ERROR meshagent FORGED"' in line
    assert 'peer="x\\" y=1"' in line  # the quote is escaped: no field of its own


def test_control_bidi_and_nul_characters_are_escaped() -> None:
    line = KeyValueFormatter().format(record("m", value="a\u202eb\x00c\x1b[31m\u2066"))
    assert line.endswith("value=a\\u202eb\\x00c\\x1b[31m\\u2066")
    assert KeyValueFormatter().format(record("m", empty="")).endswith('empty=""')
    assert (
        KeyValueFormatter().format(record("m", plain="b\u00fccher")).endswith("plain=b\u00fccher")
    )


def test_an_exception_is_one_field_and_its_trace_only_at_debug() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        info = sys.exc_info()
    root = logging.getLogger()
    saved = root.level
    try:
        root.setLevel(logging.INFO)
        line = KeyValueFormatter().format(record("failed", exc_info=info))
        assert line.endswith('failed error="ValueError: bad\\nthing"')
        assert "\n" not in line
        root.setLevel(logging.DEBUG)
        lines = KeyValueFormatter().format(record("failed", exc_info=info)).split("\n")
        assert lines[0].endswith('failed error="ValueError: bad\\nthing"')
        assert lines[1] == "  | Traceback (most recent call last):"
        assert all(line.startswith("  | ") for line in lines[1:])
    finally:
        root.setLevel(saved)
