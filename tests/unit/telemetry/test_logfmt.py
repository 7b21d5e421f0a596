from __future__ import annotations

import logging

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
