"""meshagent's own instance record, shared by the registries that store plain services (sans-IO).

ZooKeeper keeps it as the data of ``/meshagent/services/{service}/{instance_id}`` (ephemeral),
etcd as the value of ``{prefix}/{service}/{instance_id}`` (leased). A JSON object:
``{"host": "10.0.0.7", "port": 8080, "weight": 100, "protocol": "http", "metadata": {...}}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agent.discovery.types import Instance, Registration, frozen_mapping


class MalformedRecord(ValueError):
    """Node data that is not a plain instance record."""


@dataclass(frozen=True)
class PlainRecord:
    host: str
    port: int
    weight: int
    protocol: str
    metadata: dict[str, str]


def format_record(registration: Registration) -> bytes:
    body = {
        "host": registration.host,
        "port": registration.port,
        "weight": registration.weight,
        "protocol": registration.protocol,
        "metadata": dict(registration.metadata),
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def parse_record(data: bytes) -> PlainRecord:
    try:
        body: Any = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedRecord(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise MalformedRecord("not a JSON object")
    host, port = body.get("host"), body.get("port")
    if not isinstance(host, str) or not host:
        raise MalformedRecord("host missing or not a string")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise MalformedRecord("port missing or out of range")
    weight = body.get("weight", 100)
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
        raise MalformedRecord("weight not a non-negative integer")
    protocol = body.get("protocol", "tcp")
    metadata = body.get("metadata", {})
    if not isinstance(protocol, str) or not isinstance(metadata, dict):
        raise MalformedRecord("protocol or metadata of the wrong type")
    return PlainRecord(host, port, weight, protocol, {str(k): str(v) for k, v in metadata.items()})


def to_instance(instance_id: str, record: PlainRecord, revision: int) -> Instance:
    """``revision``: when the registration was created (czxid, create_revision)."""
    metadata = dict(record.metadata)
    metadata["protocol"] = record.protocol
    return Instance(
        id=instance_id,
        host=record.host,
        port=record.port,
        weight=record.weight,
        metadata=frozen_mapping(metadata),
        revision=revision,
    )
