"""The instance JSON of plain services: round trip and malformed records."""

from __future__ import annotations

import pytest

from agent.discovery.records import MalformedRecord, format_record, parse_record, to_instance
from agent.discovery.types import Registration, frozen_mapping


def test_plain_record_round_trip() -> None:
    registration = Registration(
        "orders", "o-1", "10.0.0.7", 8080, 20, frozen_mapping({"zone": "a"}), "http"
    )
    record = parse_record(format_record(registration))
    instance = to_instance("o-1", record, 99)
    assert (instance.id, instance.address, instance.weight, instance.revision) == (
        "o-1",
        "10.0.0.7:8080",
        20,
        99,
    )
    assert dict(instance.metadata) == {"zone": "a", "protocol": "http"}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"[1]",
        b'{"port":1}',
        b'{"host":"h","port":0}',
        b'{"host":"h","port":true}',
        b'{"host":"h","port":1,"weight":-1}',
        b'{"host":"h","port":1,"metadata":[]}',
    ],
)
def test_malformed_records(data: bytes) -> None:
    with pytest.raises(MalformedRecord):
        parse_record(data)
