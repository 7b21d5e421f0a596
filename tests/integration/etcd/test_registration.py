"""Registration through the etcd plugin against a real etcd 3.4: leases, their loss, outages."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agent.cluster.cluster import Cluster
from agent.cluster.lb import RoundRobin
from agent.discovery.types import Add, Registration, Remove, Reset, ServiceKey, frozen_mapping
from agent.errors import RegistryError
from plugins.etcd.layout import KeyLayout
from plugins.etcd.registry import EtcdRegistry
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.processes import ManagedProcess
from tests.fixtures.tcp_forwarder import TcpForwarder
from tests.integration.etcd.conftest import Kv, KvFactory, RegistryFactory
from tests.support.discovery import Consumer, eventually, next_update, no_update

pytestmark = pytest.mark.integration

ORDERS = Registration("orders", "o-1", "10.0.0.7", 8080, 20, frozen_mapping({"zone": "a"}), "http")


def registration(instance_id: str, host: str = "10.0.0.1", port: int = 80) -> Registration:
    return Registration("orders", instance_id, host, port)


async def test_register_puts_a_leased_key_and_deregister_deletes_it(
    registry: EtcdRegistry, kv: Kv, prefix: str
) -> None:
    key = KeyLayout(prefix).key("orders", "o-1").decode()
    subscription = registry.subscribe(ServiceKey("orders"))
    assert isinstance(await next_update(subscription), Reset)

    await registry.register(ORDERS)
    stored = (await kv.keys(prefix))[key]
    assert json.loads(stored.value) == {
        "host": "10.0.0.7",
        "port": 8080,
        "weight": 20,
        "protocol": "http",
        "metadata": {"zone": "a"},
    }
    assert stored.lease == registry.lease_id and registry.lease_id is not None
    assert 0 < await kv.ttl(stored.lease) <= 2

    added = await next_update(subscription)
    assert isinstance(added, Add)
    assert added.instance.revision == stored.create_revision == added.revision
    assert dict(added.instance.metadata) == {"zone": "a", "protocol": "http"}

    # Registering again (changed weight) updates in place: the same registration.
    await registry.register(Registration("orders", "o-1", "10.0.0.7", 8080, 30))
    changed = await next_update(subscription)
    assert isinstance(changed, Add) and changed.instance.revision == added.instance.revision

    await registry.deregister("orders", "o-1")
    assert key not in await kv.keys(prefix)
    removed = await next_update(subscription)
    assert removed == Remove(removed.revision, "o-1", added.instance.revision)
    await registry.deregister("orders", "o-1")  # twice is fine


async def test_close_revokes_the_lease_at_once(
    make_registry: RegistryFactory, etcd: EtcdServer, kv: Kv, prefix: str
) -> None:
    registry = await make_registry(etcd.endpoint, lease_ttl_s=60)
    await registry.register(registration("a"))
    await registry.register(registration("b", port=81))
    lease_id = registry.lease_id
    assert lease_id is not None and len(await kv.keys(prefix)) == 2
    await registry.close()
    assert await kv.keys(prefix) == {}  # not in 60 s: now
    assert await kv.ttl(lease_id) == -1  # revoked
    assert not registry.status().connected


async def test_revoked_lease_is_regranted_and_registrations_put_again(
    make_registry: RegistryFactory, etcd: EtcdServer, kv: Kv, prefix: str
) -> None:
    registry = await make_registry(etcd.endpoint)
    observer = await make_registry(etcd.endpoint)
    consumer = Consumer(observer.subscribe(ServiceKey("orders")))
    await registry.register(registration("a"))
    await registry.register(registration("b", port=81))
    await consumer.until(lambda c: set(c.instances) == {"a", "b"})
    first = {id_: i.revision for id_, i in consumer.instances.items()}
    old_lease = registry.lease_id
    assert old_lease is not None

    await kv.revoke(old_lease)  # what an expiry after a partition looks like, without waiting

    def new_keys() -> bool:
        return registry.lease_id not in (None, old_lease)

    await eventually(new_keys, what="a new lease")
    await consumer.until(
        lambda c: (
            set(c.instances) == {"a", "b"}
            and all(c.instances[i].revision > first[i] for i in ("a", "b"))
        )
    )
    stored = await kv.keys(prefix)
    assert {kv_.lease for kv_ in stored.values()} == {registry.lease_id}
    removes = [u for u in consumer.updates if isinstance(u, Remove)]
    assert {(r.instance_id, r.registration_revision) for r in removes} == set(first.items())


async def test_stale_remove_of_a_restarted_provider_keeps_the_live_one(
    make_registry: RegistryFactory, etcd: EtcdServer, kv: Kv, prefix: str
) -> None:
    old = await make_registry(etcd.endpoint)
    new = await make_registry(etcd.endpoint)
    observer = await make_registry(etcd.endpoint)
    subscription = observer.subscribe(ServiceKey("orders"))
    cluster = Cluster("orders", RoundRobin())
    cluster.apply(await next_update(subscription))

    await old.register(registration("10.0.0.1:80"))
    first = await next_update(subscription)
    assert isinstance(first, Add)
    cluster.apply(first)

    # The provider restarted on the same id, through another agent, before the old lease ended.
    await new.register(registration("10.0.0.1:80"))
    gone, live = await next_update(subscription), await next_update(subscription)
    assert gone == Remove(gone.revision, "10.0.0.1:80", first.instance.revision)
    assert isinstance(live, Add) and live.instance.revision > first.instance.revision
    cluster.apply(gone)
    cluster.apply(live)

    # The old agent's late deregistration (or lease end) must not take the new one down ...
    await old.deregister("orders", "10.0.0.1:80")
    await old.close()
    key = KeyLayout(prefix).key("orders", "10.0.0.1:80").decode()
    assert (await kv.keys(prefix))[key].lease == new.lease_id
    await no_update(subscription, 0.3)
    # ... and a remove of the old registration arriving late is refused by the cluster.
    cluster.apply(Remove(live.revision + 1, "10.0.0.1:80", first.instance.revision))
    host = cluster.get("10.0.0.1:80")
    assert host is not None and host.instance.revision == live.instance.revision


async def test_registrations_while_partitioned_are_applied_on_reconnect(
    make_registry: RegistryFactory, etcd: EtcdServer, kv: Kv, prefix: str
) -> None:
    forwarder = await TcpForwarder(etcd.port).start()
    try:
        registry = await make_registry(forwarder.endpoint)
        await registry.register(registration("stays"))
        await registry.register(registration("goes", port=81))
        await forwarder.stop()
        await eventually(lambda: not registry.status().connected, what="disconnected")

        await registry.register(registration("late", port=82))  # returns at once
        await registry.deregister("orders", "goes")
        await forwarder.start()

        layout = KeyLayout(prefix)
        wanted = {layout.key("orders", i).decode() for i in ("stays", "late")}

        async def applied() -> bool:
            return set(await kv.keys(prefix)) == wanted

        await _eventually_async(applied, "registrations applied after reconnect")
        # Pending writes go out first, then the session reports itself connected.
        await eventually(lambda: registry.status().connected, what="connected")
    finally:
        await forwarder.stop()


async def test_compaction_while_disconnected_relists_as_a_diff(
    make_registry: RegistryFactory, kv_for: KvFactory, private_etcd: EtcdServer, prefix: str
) -> None:
    kv = await kv_for(private_etcd)
    layout = KeyLayout(prefix)
    record = json.dumps({"host": "10.0.0.1", "port": 80})
    kept = await kv.put(layout.key("orders", "kept"), record)
    await kv.put(layout.key("orders", "dropped"), record)
    forwarder = await TcpForwarder(private_etcd.port).start()
    try:
        registry = await make_registry(forwarder.endpoint)
        consumer = Consumer(registry.subscribe(ServiceKey("orders")))
        await consumer.until(lambda c: set(c.instances) == {"kept", "dropped"})

        await forwarder.stop()
        await eventually(lambda: not registry.status().connected, what="disconnected")
        await kv.delete(layout.key("orders", "dropped"))
        added = await kv.put(layout.key("orders", "added"), record)
        await kv.put(layout.key("orders", "flash"), record)  # created and deleted meanwhile
        await kv.delete(layout.key("orders", "flash"))
        await kv.compact(await kv.revision())
        await forwarder.start()

        await consumer.until(lambda c: set(c.instances) == {"kept", "added"})
        after = consumer.updates[1:]
        assert consumer.resets == 1  # a diff, not a second Reset: nothing flaps
        assert [type(u) for u in after] == [Remove, Add]
        assert after[1].instance.revision == added  # type: ignore[union-attr]
        assert consumer.instances["kept"].revision == kept
        await no_update(consumer.subscription, 0.3)

        # And the watch goes on from the re-list.
        more = await kv.put(layout.key("orders", "more"), record)
        await consumer.until(lambda c: "more" in c.instances)
        assert consumer.updates[-1].revision == more
    finally:
        await forwarder.stop()


async def test_frozen_server_past_the_ttl(
    make_registry: RegistryFactory, kv_for: KvFactory, private_etcd: EtcdServer, prefix: str
) -> None:
    registry = await make_registry(private_etcd.endpoint, request_timeout_s=0.5)
    await registry.register(registration("a"))
    consumer = Consumer(registry.subscribe(ServiceKey("orders")))
    await consumer.until(lambda c: set(c.instances) == {"a"})

    private_etcd.freeze()
    try:
        await eventually(lambda: not registry.status().connected, what="disconnected", within_s=10)
        frozen_at = time.monotonic()
        assert set(consumer.instances) == {"a"}
        await eventually(lambda: time.monotonic() - frozen_at > 3, what="past the 2 s TTL")
    finally:
        private_etcd.thaw()
    await eventually(lambda: registry.status().connected, what="reconnected", within_s=15)
    kv = await kv_for(private_etcd)

    async def registered() -> bool:
        stored = await kv.keys(prefix)
        return [v.lease for v in stored.values()] == [registry.lease_id]

    # Whether etcd expired the lease on thaw (re-granted, re-put) or our keepalive won: the
    # registration is there, under the lease the registry holds now.
    await _eventually_async(registered, "registration under the current lease")
    await consumer.until(lambda c: set(c.instances) == {"a"})


AGENT = textwrap.dedent(
    """
    import asyncio, sys
    from agent.discovery.types import Registration
    from plugins.etcd.config import EtcdConfig
    from plugins.etcd.registry import EtcdRegistry

    async def main():
        config = EtcdConfig(endpoints=[sys.argv[1]], prefix=sys.argv[2], lease_ttl_s=2,
                            request_timeout_s=1, require_connection=True,
                            reconnect={"base_s": 0.05, "max_s": 0.5})
        registry = EtcdRegistry(config)
        await registry.start()
        for i in range(2):
            await registry.register(Registration("orders", f"p-{i}", "10.0.0.9", 9000 + i))
        print(f"registered lease={registry.lease_id:x}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


def agent_process(etcd: EtcdServer, prefix: str, tmp_path: Path) -> ManagedProcess:
    return ManagedProcess(
        [sys.executable, "-c", AGENT, etcd.endpoint, prefix],
        log_path=tmp_path / "agent.log",
        name="etcd-agent",
        cwd=Path(__file__).resolve().parents[3],
    )


async def test_killed_agent_keys_vanish_within_the_ttl(
    etcd: EtcdServer, kv: Kv, prefix: str, tmp_path: Path
) -> None:
    agent = agent_process(etcd, prefix, tmp_path).start()
    try:
        await asyncio.to_thread(agent.wait_for_line, r"registered lease=", 30)
        assert len(await kv.keys(prefix)) == 2
        agent.kill()
        killed_at = time.monotonic()

        async def vanished() -> bool:
            return await kv.keys(prefix) == {}

        await _eventually_async(vanished, "keys of the killed agent to expire", within_s=6)
        # TTL 2 s; etcd checks expiry every 500 ms and a lease gets at least its TTL.
        assert time.monotonic() - killed_at < 2 + 1.5
    finally:
        agent.stop()


async def test_agent_partitioned_past_the_ttl_puts_its_keys_again(
    etcd: EtcdServer, kv: Kv, prefix: str, tmp_path: Path
) -> None:
    agent = agent_process(etcd, prefix, tmp_path).start()
    try:
        await asyncio.to_thread(agent.wait_for_line, r"registered lease=", 30)
        first = {k: v.lease for k, v in (await kv.keys(prefix)).items()}
        assert len(first) == 2
        agent.send_signal(signal.SIGSTOP)  # no keepalive gets out: the lease runs out

        async def vanished() -> bool:
            return await kv.keys(prefix) == {}

        await _eventually_async(vanished, "keys of the frozen agent to expire", within_s=6)
        agent.send_signal(signal.SIGCONT)

        async def back() -> bool:
            stored = await kv.keys(prefix)
            return set(stored) == set(first) and all(
                v.lease not in first.values() for v in stored.values()
            )

        await _eventually_async(back, "the agent's keys, under a new lease", within_s=10)
    finally:
        agent.stop()


async def _eventually_async(check: object, what: str, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not await check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)  # poll interval of a bounded wait


async def test_start_before_the_server_answers(
    make_registry: RegistryFactory, etcd: EtcdServer, kv: Kv, prefix: str
) -> None:
    forwarder = TcpForwarder(etcd.port)  # not listening yet: etcd "down"
    try:
        with pytest.raises(RegistryError, match="not reachable"):
            await make_registry(forwarder.endpoint, connect_timeout_s=0.3)

        registry = await make_registry(
            forwarder.endpoint, connect_timeout_s=0.3, require_connection=False
        )
        status = registry.status()
        assert not status.connected and status.detail
        subscription = registry.subscribe(ServiceKey("orders"))
        await registry.register(registration("early"))
        await no_update(subscription, 0.3)  # no answer yet: no Reset, not even an empty one

        await forwarder.start()
        first = await next_update(subscription)
        assert isinstance(first, Reset)
        if not first.instances:  # the registration may land after the range read
            added = await next_update(subscription)
            assert isinstance(added, Add) and added.instance.id == "early"
        else:
            assert [i.id for i in first.instances] == ["early"]
        assert registry.status().connected
        assert [v.lease for v in (await kv.keys(prefix)).values()] == [registry.lease_id]
    finally:
        await forwarder.stop()
