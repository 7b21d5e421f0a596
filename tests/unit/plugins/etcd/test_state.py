"""The etcd plugin's per-service state: listings and watch events into Reset/Add/Remove."""

from __future__ import annotations

import json
import logging

import pytest

from agent.discovery.logonce import LogOnce
from agent.discovery.types import Add, Instance, Remove, Reset, frozen_mapping
from plugins.etcd.layout import KeyLayout
from plugins.etcd.state import KeyValue, ServiceState

LAYOUT = KeyLayout("/meshagent/services")


def kv(id_: str, value: object, create: int, mod: int | None = None) -> KeyValue:
    body = value if isinstance(value, str) else json.dumps(value)
    return KeyValue(LAYOUT.key("orders", id_), body.encode(), create, mod or create)


def inst(id_: str, port: int, revision: int, weight: int = 100) -> Instance:
    meta = frozen_mapping({"protocol": "tcp"})
    return Instance(id_, "10.0.0.1", port, weight, meta, revision)


def rec(port: int, **extra: object) -> dict[str, object]:
    return {"host": "10.0.0.1", "port": port, **extra}


@pytest.fixture
def state() -> ServiceState:
    return ServiceState("orders", LAYOUT, LogOnce(logging.getLogger("test.etcd"), "etcd_key"))


def test_list_then_events(state: ServiceState) -> None:
    assert not state.listed
    assert state.listed_at([kv("a", rec(1), 3), kv("b", rec(2), 4)], 7) == [
        Reset(7, (inst("a", 1, 3), inst("b", 2, 4)))
    ]
    assert state.listed and state.next_revision == 8
    assert state.put(kv("c", rec(3), 8)) == [Add(8, inst("c", 3, 8))]
    assert state.put(kv("a", rec(1, weight=5), 3, 9)) == [Add(9, inst("a", 1, 3, weight=5))]
    assert state.delete(LAYOUT.key("orders", "b"), 10, 4) == [Remove(10, "b", 4)]
    assert state.snapshot() == Reset(10, (inst("a", 1, 3, weight=5), inst("c", 3, 8)))


def test_many_events_at_one_revision(state: ServiceState) -> None:
    state.listed_at([kv("a", rec(1), 3), kv("b", rec(2), 4)], 5)
    # A lease revoke deletes every key of the lease in one revision.
    assert state.delete(LAYOUT.key("orders", "a"), 6, 3) == [Remove(6, "a", 3)]
    assert state.delete(LAYOUT.key("orders", "b"), 6, 4) == [Remove(6, "b", 4)]


def test_relist_after_compaction_is_a_diff(state: ServiceState) -> None:
    state.listed_at([kv("a", rec(1), 3), kv("b", rec(2), 4)], 5)
    updates = state.listed_at([kv("a", rec(1), 3), kv("c", rec(3), 9)], 12)
    assert updates == [Remove(12, "b", 4), Add(12, inst("c", 3, 9))]


def test_recreated_key_is_a_new_registration(state: ServiceState) -> None:
    state.listed_at([kv("a", rec(1), 3)], 3)
    assert state.delete(LAYOUT.key("orders", "a"), 4, 3) == [Remove(4, "a", 3)]
    assert state.put(kv("a", rec(1), 5)) == [Add(5, inst("a", 1, 5))]
    # A delete that names an older registration than the one known leaves it in place.
    assert state.delete(LAYOUT.key("orders", "a"), 6, 3) == []


def test_stale_events_are_ignored(state: ServiceState) -> None:
    state.listed_at([kv("a", rec(1), 3)], 10)
    assert state.put(kv("b", rec(2), 8)) == []
    assert state.delete(LAYOUT.key("orders", "a"), 9, 3) == []


def test_progress_moves_the_resume_point(state: ServiceState) -> None:
    state.listed_at([], 4)
    state.progress(20)
    assert state.next_revision == 21
    state.progress(7)
    assert state.next_revision == 21


def test_bad_input_is_skipped_and_logged_once(
    state: ServiceState, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="test.etcd")
    assert state.listed_at([kv("bad", "{", 2), kv("ok", rec(1), 3)], 3) == [
        Reset(3, (inst("ok", 1, 3),))
    ]
    assert state.put(kv("bad", "{", 2, 4)) == []
    assert state.put(kv("bad", "[]", 2, 5)) == []
    outside = KeyValue(b"/meshagent/services/orders/a/b", b"{}", 6, 6)
    assert state.put(outside) == []
    assert state.put(outside) == []
    assert state.delete(outside.key, 7, 6) == []
    other = KeyValue(LAYOUT.key("billing", "x"), json.dumps(rec(1)).encode(), 8, 8)
    assert state.put(other) == []
    assert state.put(kv("ok", "null", 3, 9)) == [Remove(9, "ok", 3)]  # now unusable: gone
    messages = [(r.getMessage(), getattr(r, "etcd_key", None)) for r in caplog.records]
    assert len(messages) == 5, messages  # "{" once, "[]" once, outside once, other, null
    assert all(key is not None and key.startswith("/meshagent/services/") for _, key in messages)
