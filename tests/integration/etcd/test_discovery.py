"""Discovery against a real etcd 3.4: keys written by others, in meshagent's layout."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request

import pytest

from agent.discovery.types import Add, Instance, Remove, Reset, ServiceKey, frozen_mapping
from plugins.etcd.layout import KeyLayout
from plugins.etcd.registry import EtcdRegistry
from tests.fixtures.etcd import EtcdServer
from tests.integration.etcd.conftest import Kv, KvFactory, RegistryFactory
from tests.support.discovery import Consumer, eventually, next_update, no_update

pytestmark = pytest.mark.integration


def record(host: str, port: int, **extra: object) -> str:
    return json.dumps({"host": host, "port": port, **extra})


def instance(id_: str, host: str, port: int, revision: int, **metadata: str) -> Instance:
    return Instance(
        id_, host, port, metadata=frozen_mapping({"protocol": "tcp", **metadata}), revision=revision
    )


async def test_reset_add_change_remove_carry_etcd_revisions(
    registry: EtcdRegistry, kv: Kv, prefix: str
) -> None:
    layout = KeyLayout(prefix)
    created = await kv.put(layout.key("orders", "a"), record("10.0.0.1", 80))
    await kv.put(layout.key("other", "x"), record("10.9.9.9", 80))  # another service

    subscription = registry.subscribe(ServiceKey("orders"))
    reset = await next_update(subscription)
    assert isinstance(reset, Reset)
    assert reset.instances == (instance("a", "10.0.0.1", 80, created),)
    assert reset.revision >= created

    b_rev = await kv.put(layout.key("orders", "b"), record("10.0.0.2", 81))
    assert await next_update(subscription) == Add(b_rev, instance("b", "10.0.0.2", 81, b_rev))

    # Rewritten in place: the same registration (create_revision), a new mod_revision.
    changed = await kv.put(layout.key("orders", "b"), record("10.0.0.2", 81, weight=5))
    assert await next_update(subscription) == Add(
        changed, Instance("b", "10.0.0.2", 81, 5, frozen_mapping({"protocol": "tcp"}), b_rev)
    )

    removed = await kv.delete(layout.key("orders", "a"))
    assert await next_update(subscription) == Remove(removed, "a", created)
    await no_update(subscription, 0.3)


async def test_names_are_percent_encoded_components(
    registry: EtcdRegistry, kv: Kv, prefix: str
) -> None:
    layout = KeyLayout(prefix)
    subscription = registry.subscribe(ServiceKey("org.example/Orders v1"))
    reset = await next_update(subscription)
    assert isinstance(reset, Reset) and reset.instances == ()
    revision = await kv.put(
        f"{prefix}/org.example%2FOrders%20v1/10.0.0.1%3A80", record("10.0.0.1", 80)
    )
    update = await next_update(subscription)
    assert isinstance(update, Add) and update.instance.id == "10.0.0.1:80"
    assert update.revision == revision
    assert (
        layout.key("org.example/Orders v1", "10.0.0.1:80")
        .decode()
        .endswith("/org.example%2FOrders%20v1/10.0.0.1%3A80")
    )


async def test_bad_keys_and_values_are_logged_once_and_skipped(
    registry: EtcdRegistry, kv: Kv, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="plugins.etcd")
    layout = KeyLayout(prefix)
    await kv.put(layout.key("orders", "junk"), "{not json")
    subscription = registry.subscribe(ServiceKey("orders"))
    reset = await next_update(subscription)
    assert isinstance(reset, Reset) and reset.instances == ()  # the junk is not an instance

    await kv.put(f"{prefix}/orders/deeper/still", record("10.0.0.3", 80))  # outside the layout
    await kv.put(layout.key("orders", "junk"), "[1, 2]")
    await kv.put(layout.key("orders", "junk"), "[1, 2]")
    await kv.put(layout.key("orders", "noport"), json.dumps({"host": "h"}))
    good = await kv.put(layout.key("orders", "good"), record("10.0.0.4", 80))
    update = await next_update(subscription)
    assert isinstance(update, Add) and update.instance.id == "good" and update.revision == good

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    junk = [w for w in warnings if "/orders/junk" in w]
    assert len([w for w in junk if "not a JSON object" in w]) == 1, warnings
    assert any("/orders/deeper/still" in w and "outside the layout" in w for w in warnings)
    assert any("/orders/noport" in w for w in warnings)
    assert all(
        getattr(r, "etcd_key", "").startswith(prefix)
        for r in caplog.records
        if r.levelno == logging.WARNING
    )


async def test_a_bad_value_over_a_good_one_removes_it(
    registry: EtcdRegistry, kv: Kv, prefix: str
) -> None:
    layout = KeyLayout(prefix)
    created = await kv.put(layout.key("orders", "a"), record("10.0.0.1", 80))
    subscription = registry.subscribe(ServiceKey("orders"))
    assert isinstance(await next_update(subscription), Reset)
    broken = await kv.put(layout.key("orders", "a"), "garbage")
    assert await next_update(subscription) == Remove(broken, "a", created)


async def test_subscribers_of_one_service_share_a_watch(
    make_registry: RegistryFactory, kv_for: KvFactory, private_etcd: EtcdServer, prefix: str
) -> None:
    registry = await make_registry(private_etcd.endpoint)
    kv = await kv_for(private_etcd)
    layout = KeyLayout(prefix)
    a = await kv.put(layout.key("orders", "a"), record("10.0.0.1", 80))
    first = registry.subscribe(ServiceKey("orders"))
    assert await next_update(first) == Reset(a, (instance("a", "10.0.0.1", 80, a),))
    second = registry.subscribe(ServiceKey("orders"))
    assert await next_update(second) == Reset(a, (instance("a", "10.0.0.1", 80, a),))
    others = [registry.subscribe(ServiceKey(f"svc-{i}")) for i in range(3)]
    for subscription in others:
        assert isinstance(await next_update(subscription), Reset)

    b = await kv.put(layout.key("orders", "b"), record("10.0.0.2", 80))
    for subscription in (first, second):
        assert await next_update(subscription) == Add(b, instance("b", "10.0.0.2", 80, b))

    # One connection, one watch stream, one watcher per service (not per subscription).
    # (A Reset goes out after the range read, before the watch is created: wait for them.)
    def watchers() -> float:
        return _metrics(private_etcd)["etcd_debugging_mvcc_watcher_total"]

    await eventually(lambda: watchers() == 4, what="4 watchers")
    assert _metrics(private_etcd)["etcd_debugging_mvcc_watch_stream_total"] == 1

    first.close()
    c = await kv.put(layout.key("orders", "c"), record("10.0.0.3", 80))
    assert await next_update(second) == Add(c, instance("c", "10.0.0.3", 80, c))


def _metrics(server: EtcdServer) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{server.endpoint}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def test_server_restart_keeps_instances_and_resumes_in_order(
    make_registry: RegistryFactory, kv_for: KvFactory, private_etcd: EtcdServer, prefix: str
) -> None:
    registry = await make_registry(private_etcd.endpoint)
    layout = KeyLayout(prefix)
    kv = await kv_for(private_etcd)
    a = await kv.put(layout.key("orders", "a"), record("10.0.0.1", 80))
    b = await kv.put(layout.key("orders", "b"), record("10.0.0.2", 80))
    consumer = Consumer(registry.subscribe(ServiceKey("orders")))
    await consumer.until(lambda c: set(c.instances) == {"a", "b"})

    before_stop = time.time()
    await asyncio.to_thread(private_etcd.stop)
    await eventually(lambda: not registry.status().connected, what="disconnected status")
    status = registry.status()
    assert status.since >= before_stop and status.detail
    await no_update(consumer.subscription, 0.3)  # last known instances kept: no empty Reset
    assert set(consumer.instances) == {"a", "b"}

    await asyncio.to_thread(private_etcd.start)
    kv = await kv_for(private_etcd)
    c = await kv.put(layout.key("orders", "c"), record("10.0.0.3", 80))
    gone = await kv.delete(layout.key("orders", "a"))
    c2 = await kv.put(layout.key("orders", "c"), record("10.0.0.3", 80, weight=7))

    await consumer.until(lambda k: "a" not in k.instances and _weight(k, "c") == 7)
    await eventually(lambda: registry.status().connected, what="connected status")
    after = consumer.updates[-3:]
    assert [type(u) for u in after] == [Add, Remove, Add]
    assert [u.revision for u in after] == [c, gone, c2]
    assert after[1] == Remove(gone, "a", a)
    assert consumer.resets == 1  # resumed, not re-listed
    assert consumer.instances["b"].revision == b


def _weight(consumer: Consumer, id_: str) -> int | None:
    known = consumer.instances.get(id_)
    return None if known is None else known.weight
