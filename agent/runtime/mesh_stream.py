"""The supervisor-worker stream's messages, as bytes (sans-IO; docs/workers.md).

One JSON object per line over a Unix socket, in order. The supervisor sends each worker
a snapshot when it connects (every cluster's ``Reset`` and endpoint states, the rules and
dynamic settings in force, then ``ready``), then each change as it happens: discovery
updates in the registry's Reset/Add/Remove shape, endpoint state (health, ejection, a
failure streak), rule and settings versions. Workers send their passive outlier signals
(an endpoint's failure, and a success while its streak is open), answers to pings and
metric requests. A line is bounded (``MAX_LINE``); anything unreadable ends the stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from agent.discovery.types import Add, Instance, Remove, Reset, Update, frozen_mapping
from agent.telemetry.exposition import Metric, Sample
from agent.telemetry.recent_failures import FailedCall

# A snapshot's Reset of a large cluster is one line: 100,000 instances fit.
MAX_LINE = 64 * 1024 * 1024

Message = dict[str, Any]


class StreamError(ValueError):
    """A line the other side should never send: the stream is closed."""


async def read_message(reader: asyncio.StreamReader) -> Message | None:
    """The next message, None at the end of the stream (``reader`` made with
    ``limit=MAX_LINE``: a longer line is a StreamError)."""
    try:
        line = await reader.readline()
    except ValueError:
        raise StreamError(f"a line over {MAX_LINE} bytes") from None
    return decode(line) if line else None


def encode(message: Message) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Message:
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise StreamError(f"unreadable line: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise StreamError("a message is an object with a type 't'")
    return message


def instance_to_json(instance: Instance) -> list[Any]:
    return [
        instance.id,
        instance.host,
        instance.port,
        instance.weight,
        dict(instance.metadata),
        instance.revision,
    ]


def instance_from_json(value: Any) -> Instance:
    if not isinstance(value, list) or len(value) != 6:
        raise StreamError(f"not an instance: {value!r:.80}")
    id_, host, port, weight, metadata, revision = value
    if not (
        isinstance(id_, str)
        and isinstance(host, str)
        and isinstance(port, int)
        and isinstance(weight, int)
        and isinstance(metadata, dict)
        and isinstance(revision, int)
    ):
        raise StreamError(f"not an instance: {value!r:.80}")
    return Instance(id_, host, port, weight, frozen_mapping(metadata), revision)


def update_to_json(update: Update) -> Message:
    if isinstance(update, Reset):
        return {
            "k": "reset",
            "r": update.revision,
            "i": [instance_to_json(i) for i in update.instances],
        }
    if isinstance(update, Add):
        return {"k": "add", "r": update.revision, "i": instance_to_json(update.instance)}
    return {
        "k": "remove",
        "r": update.revision,
        "id": update.instance_id,
        "rr": update.registration_revision,
    }


def update_from_json(value: Any) -> Update:
    if not isinstance(value, dict) or not isinstance(value.get("r"), int):
        raise StreamError(f"not an update: {value!r:.80}")
    kind, revision = value.get("k"), value["r"]
    if kind == "reset" and isinstance(value.get("i"), list):
        return Reset(revision, tuple(instance_from_json(i) for i in value["i"]))
    if kind == "add":
        return Add(revision, instance_from_json(value.get("i")))
    if kind == "remove" and isinstance(value.get("id"), str) and isinstance(value.get("rr"), int):
        return Remove(revision, value["id"], value["rr"])
    raise StreamError(f"not an update: {value!r:.80}")


# An endpoint's state as the supervisor decided it: the active checker's verdict, the end
# of its ejection (time.monotonic: CLOCK_MONOTONIC is one clock for every process of a
# host), and whether it has a failure streak open (workers then report its successes).
HostState = tuple[bool, float, bool]


def host_states_from_json(value: Any) -> dict[str, HostState]:
    if not isinstance(value, dict):
        raise StreamError("endpoint states are an object")
    states: dict[str, HostState] = {}
    for key, state in value.items():
        if (
            not isinstance(state, list)
            or len(state) != 3
            or not isinstance(state[0], bool)
            or not isinstance(state[1], int | float)
            or not isinstance(state[2], bool)
        ):
            raise StreamError(f"not an endpoint state: {state!r:.80}")
        states[key] = (state[0], float(state[1]), state[2])
    return states


def metrics_to_json(metrics: list[Metric]) -> list[Any]:
    return [
        [m.name, m.documentation, m.type, [[s.name, s.labels, s.value] for s in m.samples]]
        for m in metrics
    ]


def metrics_from_json(value: Any) -> list[Metric]:
    if not isinstance(value, list):
        raise StreamError("metrics are a list")
    found: list[Metric] = []
    for family in value:
        if not isinstance(family, list) or len(family) != 4:
            raise StreamError(f"not a metric family: {family!r:.80}")
        name, documentation, typ, samples = family
        if not (isinstance(name, str) and isinstance(documentation, str) and isinstance(typ, str)):
            raise StreamError(f"not a metric family: {family!r:.80}")
        metric = Metric(name, documentation, typ)
        if not isinstance(samples, list):
            raise StreamError(f"not a metric family: {family!r:.80}")
        for sample in samples:
            if (
                not isinstance(sample, list)
                or len(sample) != 3
                or not isinstance(sample[0], str)
                or not isinstance(sample[1], dict)
                or not isinstance(sample[2], int | float)
            ):
                raise StreamError(f"not a sample: {sample!r:.80}")
            metric.samples.append(Sample(sample[0], _labels(sample[1]), float(sample[2])))
        found.append(metric)
    return found


def _labels(value: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()}


def failures_to_json(calls: list[FailedCall]) -> list[Any]:
    return [
        [
            c.at,
            c.protocol,
            c.direction,
            c.source,
            c.target,
            c.method,
            c.outcome,
            c.status,
            c.error,
            [dict(link) for link in c.chain],
        ]
        for c in calls
    ]


def failures_from_json(value: Any) -> list[FailedCall]:
    if not isinstance(value, list):
        raise StreamError("failed calls are a list")
    found = []
    for item in value:
        if (
            not isinstance(item, list)
            or len(item) != 10
            or not isinstance(item[0], int | float)
            or not all(isinstance(field, str) for field in item[1:9])
            or not isinstance(item[9], list)
            or not all(isinstance(link, dict) for link in item[9])
        ):
            raise StreamError(f"not a failed call: {item!r:.80}")
        protocol, direction, source, target, method, outcome, status, error = item[1:9]
        chain = tuple(_labels(link) for link in item[9])
        found.append(
            FailedCall(
                float(item[0]),
                protocol,
                direction,
                source,
                target,
                method,
                outcome,
                status,
                error,
                chain,
            )
        )
    return found
