"""Interface-level discovery and registration against a real ZooKeeper, nodes as Dubbo writes."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest
from kazoo.client import KazooClient

from agent.discovery.types import Add, Registration, Remove, Reset, ServiceKey, frozen_mapping
from plugins.zookeeper.config import Backoff, ZooKeeperConfig
from plugins.zookeeper.dubbo_url import encode_component, parse_node_name
from plugins.zookeeper.registry import ZooKeeperRegistry
from tests.fixtures.zookeeper import ZooKeeperServer
from tests.support.discovery import Consumer, eventually, next_update, no_update

pytestmark = pytest.mark.integration

IFACE = "org.apache.dubbo.demo.DemoService"
_roots = itertools.count()


def provider_url(
    host: str,
    port: int,
    *,
    version: str = "1.0.0",
    group: str = "",
    timestamp: int = 1700000000000,
    weight: int | None = None,
) -> str:
    params = {
        "anyhost": "true",
        "application": "demo-provider",
        "background": "false",
        "deprecated": "false",
        "dubbo": "2.0.2",
        "dynamic": "true",
        "generic": "false",
        "interface": IFACE,
        "methods": "sayHello,sayHelloAsync",
        "pid": "4242",
        "prefer.serialization": "fastjson2,hessian2",
        "release": "3.3.0",
        "service-name-mapping": "true",
        "side": "provider",
        "timestamp": str(timestamp),
        "version": version,
        "group": group,
    }
    if weight is not None:
        params["weight"] = str(weight)
    query = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if v)
    return f"dubbo://{host}:{port}/{IFACE}?{query}"


@pytest.fixture
def root() -> str:
    return f"/it{next(_roots)}"


def make_config(zookeeper: ZooKeeperServer, root: str, **overrides: object) -> ZooKeeperConfig:
    values: dict[str, object] = {
        "hosts": zookeeper.hosts,
        "root": f"{root}/dubbo",
        "services_root": f"{root}/services",
        "plain_root": f"{root}/meshagent/services",
        "session_timeout_s": 2.0,
        "connect_timeout_s": 15.0,
        "reconnect": Backoff(base_s=0.05, max_s=0.5, jitter=0.2),
    }
    values.update(overrides)
    return ZooKeeperConfig.model_validate(values)


@pytest.fixture
async def registry(zookeeper: ZooKeeperServer, root: str) -> AsyncIterator[ZooKeeperRegistry]:
    reg = ZooKeeperRegistry(make_config(zookeeper, root))
    await reg.start()
    yield reg
    await reg.close()


def providers(root: str) -> str:
    return f"{root}/dubbo/{IFACE}/providers"


def write_provider(kz: KazooClient, root: str, url: str) -> int:
    """As Dubbo's CuratorZookeeperClient: ephemeral, data the writer's address."""
    path = f"{providers(root)}/{encode_component(url)}"
    kz.create(path, b"127.0.0.1", ephemeral=True, makepath=True)
    return int(kz.exists(path).czxid)


def key(version: str = "1.0.0", group: str = "") -> ServiceKey:
    attrs = {"version": version}
    if group:
        attrs["group"] = group
    return ServiceKey(IFACE, frozen_mapping(attrs))


async def test_reset_add_remove(registry: ZooKeeperRegistry, kz: KazooClient, root: str) -> None:
    first = provider_url("192.168.1.5", 20880, weight=50)
    czxid1 = write_provider(kz, root, first)
    sub = registry.subscribe(key())

    reset = await next_update(sub)
    assert isinstance(reset, Reset)
    [instance] = reset.instances
    assert (instance.id, instance.host, instance.port) == (
        "192.168.1.5:20880",
        "192.168.1.5",
        20880,
    )
    assert instance.weight == 50
    assert instance.revision == czxid1
    assert instance.metadata["protocol"] == "dubbo"
    assert instance.metadata["methods"] == "sayHello,sayHelloAsync"
    assert reset.revision >= czxid1

    czxid2 = write_provider(kz, root, provider_url("192.168.1.6", 20880))
    add = await next_update(sub)
    assert isinstance(add, Add)
    assert add.instance.id == "192.168.1.6:20880"
    assert add.instance.weight == 100
    assert add.instance.revision == czxid2

    kz.delete(f"{providers(root)}/{encode_component(first)}")
    remove = await next_update(sub)
    assert remove == Remove(remove.revision, "192.168.1.5:20880", czxid1)
    assert remove.revision > add.revision
    sub.close()


async def test_empty_then_created(registry: ZooKeeperRegistry, kz: KazooClient, root: str) -> None:
    sub = registry.subscribe(key())
    reset = await next_update(sub)
    assert reset == Reset(reset.revision, ())
    write_provider(kz, root, provider_url("10.0.0.1", 20880))
    add = await next_update(sub)
    assert isinstance(add, Add) and add.instance.id == "10.0.0.1:20880"


async def test_version_and_group_matching(
    registry: ZooKeeperRegistry, kz: KazooClient, root: str
) -> None:
    write_provider(kz, root, provider_url("10.0.0.1", 1, version="1.0.0"))
    write_provider(kz, root, provider_url("10.0.0.2", 1, version="2.0.0"))
    write_provider(kz, root, provider_url("10.0.0.3", 1, version="1.0.0", group="g1"))
    write_provider(kz, root, provider_url("10.0.0.4", 1, version="1.0.0", group="g2"))

    async def ids(k: ServiceKey) -> set[str]:
        sub = registry.subscribe(k)
        reset = await next_update(sub)
        sub.close()
        assert isinstance(reset, Reset)
        return {i.host for i in reset.instances}

    assert await ids(key("1.0.0")) == {"10.0.0.1"}
    assert await ids(key("2.0.0")) == {"10.0.0.2"}
    assert await ids(key("*")) == {"10.0.0.1", "10.0.0.2"}
    assert await ids(key("1.0.0", "g1")) == {"10.0.0.3"}
    assert await ids(key("1.0.0", "g1,g2")) == {"10.0.0.3", "10.0.0.4"}
    assert await ids(key("*", "*")) == {f"10.0.0.{n}" for n in range(1, 5)}


async def test_malformed_nodes_are_skipped(
    registry: ZooKeeperRegistry, kz: KazooClient, root: str, caplog: pytest.LogCaptureFixture
) -> None:
    write_provider(kz, root, provider_url("10.0.0.1", 20880))
    kz.create(f"{providers(root)}/not-a-url", b"")
    kz.create(f"{providers(root)}/{encode_component('dubbo://10.0.0.9:notaport/x')}", b"")
    kz.create(f"{providers(root)}/bad%zzescape", b"")
    sub = registry.subscribe(key())
    reset = await next_update(sub)
    assert isinstance(reset, Reset)
    assert [i.id for i in reset.instances] == ["10.0.0.1:20880"]
    warnings = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(warnings) == 3
    # A later change re-reads the directory: the same bad nodes are not logged again.
    write_provider(kz, root, provider_url("10.0.0.2", 20880))
    assert isinstance(await next_update(sub), Add)
    assert (
        len([r for r in caplog.records if "skipped" in r.getMessage() and r.levelname == "WARNING"])
        == 3
    )


async def test_restart_on_same_address_keeps_the_live_registration(
    registry: ZooKeeperRegistry, kz: KazooClient, root: str
) -> None:
    old_url = provider_url("10.0.0.1", 20880, timestamp=1)
    old = write_provider(kz, root, old_url)
    consumer = Consumer(registry.subscribe(key()))
    await consumer.until(lambda c: c.resets == 1)
    assert consumer.instances["10.0.0.1:20880"].revision == old

    new = write_provider(kz, root, provider_url("10.0.0.1", 20880, timestamp=2))
    await consumer.until(lambda c: c.instances["10.0.0.1:20880"].revision == new)
    kz.delete(f"{providers(root)}/{encode_component(old_url)}")
    await no_update(consumer.subscription)
    assert consumer.instances["10.0.0.1:20880"].revision == new
    for update in consumer.updates:
        if isinstance(update, Remove):
            assert update.registration_revision == old


async def test_register_dubbo_provider(
    registry: ZooKeeperRegistry, kz: KazooClient, root: str
) -> None:
    registration = Registration(
        service=IFACE,
        instance_id="local-1",
        host="10.1.1.1",
        port=20880,
        weight=70,
        metadata=frozen_mapping({"version": "1.0.0", "application": "app-a", "methods": "a,b"}),
        protocol="dubbo",
    )
    await registry.register(registration)
    [name] = kz.get_children(providers(root))
    url = parse_node_name(name)
    assert (url.protocol, url.host, url.port, url.path) == ("dubbo", "10.1.1.1", 20880, IFACE)
    assert url.params["interface"] == IFACE
    assert url.params["version"] == "1.0.0"
    assert url.params["weight"] == "70"
    assert url.params["side"] == "provider"
    stat = kz.exists(f"{providers(root)}/{name}")
    assert stat.ephemeralOwner == registry.session.session_id

    # and the plugin's own subscription sees it as a Dubbo consumer would
    sub = registry.subscribe(key())
    reset = await next_update(sub)
    assert isinstance(reset, Reset)
    assert [(i.id, i.weight) for i in reset.instances] == [("10.1.1.1:20880", 70)]

    await registry.deregister(IFACE, "local-1")
    assert kz.get_children(providers(root)) == []
    assert isinstance(await next_update(sub), Remove)


async def test_register_plain_and_close_removes(
    zookeeper: ZooKeeperServer, kz: KazooClient, root: str
) -> None:
    reg = ZooKeeperRegistry(make_config(zookeeper, root))
    await reg.start()
    await reg.register(
        Registration(
            "orders",
            "orders-1",
            "10.2.0.1",
            8080,
            metadata=frozen_mapping({"zone": "a"}),
            protocol="http",
        )
    )
    path = f"{root}/meshagent/services/orders/orders-1"
    data, _ = kz.get(path)
    assert data == (
        b'{"host":"10.2.0.1","metadata":{"zone":"a"},"port":8080,"protocol":"http","weight":100}'
    )
    other = ZooKeeperRegistry(make_config(zookeeper, root, default_mode="plain"))
    await other.start()
    try:
        sub = other.subscribe(ServiceKey("orders"))
        reset = await next_update(sub)
        assert isinstance(reset, Reset)
        [instance] = reset.instances
        assert (instance.id, instance.address, instance.metadata["protocol"]) == (
            "orders-1",
            "10.2.0.1:8080",
            "http",
        )
        await reg.close()
        assert kz.exists(path) is None
        remove = await next_update(sub)
        assert isinstance(remove, Remove) and remove.instance_id == "orders-1"
    finally:
        await other.close()
        await reg.close()


async def test_session_expiry_recreates_registrations(
    zookeeper: ZooKeeperServer, registry: ZooKeeperRegistry, kz: KazooClient, root: str
) -> None:
    await registry.register(Registration("orders", "o-1", "10.2.0.1", 8080, protocol="http"))
    path = f"{root}/meshagent/services/orders/o-1"
    first_owner = kz.exists(path).ephemeralOwner
    assert first_owner == registry.session.session_id

    # The known trick: a second client on the same session closes it, expiring it for the first.
    session_id, password = registry.session.client.client_id
    twin = KazooClient(hosts=zookeeper.hosts, client_id=(session_id, password))
    twin.start(timeout=15)
    twin.stop()
    twin.close()

    def recreated() -> bool:
        stat = kz.exists(path)
        return stat is not None and stat.ephemeralOwner not in (0, first_owner)

    await eventually(recreated, what="registration re-created on a new session")
    assert kz.exists(path).ephemeralOwner == registry.session.session_id
    await eventually(lambda: registry.status().connected)


async def test_server_restart_keeps_instances(
    zookeeper: ZooKeeperServer, zookeeper_server: ZooKeeperServer, root: str
) -> None:
    writer = KazooClient(hosts=zookeeper.hosts, timeout=15.0)
    writer.start(timeout=15)
    # Long session for the writer so its provider node outlives the restart. The registry's
    # is short: kazoo waits a whole session timeout on a handshake the restarting server
    # swallowed before it tries again.
    reg = ZooKeeperRegistry(make_config(zookeeper, root, session_timeout_s=4.0))
    await reg.start()
    try:
        write_provider(writer, root, provider_url("10.0.0.1", 20880))
        consumer = Consumer(reg.subscribe(key()))
        await consumer.until(lambda c: c.resets == 1 and len(c.instances) == 1)
        assert reg.status().connected

        zookeeper_server.stop()
        await eventually(lambda: not reg.status().connected, what="disconnected status")
        down_since = reg.status().since
        await no_update(consumer.subscription, within=0.3)
        assert list(consumer.instances) == ["10.0.0.1:20880"]

        zookeeper_server.start()
        await eventually(lambda: reg.status().connected, within_s=30, what="reconnected")
        assert reg.status().since >= down_since
        write_provider(writer, root, provider_url("10.0.0.2", 20880))
        await consumer.until(lambda c: len(c.instances) == 2)
        assert consumer.resets == 1
        assert not any(isinstance(u, Reset) and not u.instances for u in consumer.updates)
    finally:
        await reg.close()
        writer.stop()
        writer.close()


async def test_frozen_server_past_session_timeout(
    zookeeper: ZooKeeperServer, kz: KazooClient, root: str
) -> None:
    reg = ZooKeeperRegistry(make_config(zookeeper, root, session_timeout_s=1.0))
    await reg.start()
    try:
        await reg.register(Registration("orders", "o-1", "10.2.0.1", 8080, protocol="http"))
        path = f"{root}/meshagent/services/orders/o-1"
        assert kz.exists(path) is not None
        zookeeper.freeze()
        try:
            await eventually(lambda: not reg.status().connected, what="disconnected status")
            # Past the session timeout while frozen: the server expires the session on thaw.
            await eventually(lambda: reg.status().detail == "connection suspended", within_s=5)
            # Real time has to pass beyond the 1 s session while frozen; nothing is awaited
            # through this sleep, the checks after the thaw are bounded waits.
            await asyncio.sleep(1.5)
        finally:
            zookeeper.thaw()
        await eventually(lambda: reg.status().connected, what="reconnected")

        def registered() -> bool:
            stat = kz.exists(path)
            return stat is not None and stat.ephemeralOwner == reg.session.session_id

        await eventually(registered, what="registration back")
    finally:
        await reg.close()


async def test_subscription_survives_session_expiry(
    zookeeper: ZooKeeperServer, registry: ZooKeeperRegistry, kz: KazooClient, root: str
) -> None:
    write_provider(kz, root, provider_url("10.0.0.1", 20880))
    consumer = Consumer(registry.subscribe(key()))
    await consumer.until(lambda c: c.resets == 1 and len(c.instances) == 1)
    first_session = registry.session.session_id

    session_id, password = registry.session.client.client_id
    twin = KazooClient(hosts=zookeeper.hosts, client_id=(session_id, password))
    twin.start(timeout=15)
    twin.stop()
    twin.close()
    await eventually(
        lambda: registry.status().connected and registry.session.session_id != first_session,
        what="new session",
    )
    # the watches are armed again on the new session
    write_provider(kz, root, provider_url("10.0.0.2", 20880))
    await consumer.until(lambda c: len(c.instances) == 2)
    assert consumer.resets == 1


async def test_register_while_disconnected(
    zookeeper: ZooKeeperServer, zookeeper_server: ZooKeeperServer, root: str
) -> None:
    reg = ZooKeeperRegistry(make_config(zookeeper, root, session_timeout_s=10.0))
    await reg.start()
    try:
        zookeeper_server.stop()
        await eventually(lambda: not reg.status().connected, what="disconnected status")
        registration = Registration("orders", "o-1", "10.2.0.1", 8080, protocol="http")
        # returns at once: published when the session is back
        await asyncio.wait_for(reg.register(registration), 2.0)
        zookeeper_server.start()
        reader = KazooClient(hosts=zookeeper.hosts, timeout=4.0)
        reader.start(timeout=15)
        try:
            path = f"{root}/meshagent/services/orders/o-1"

            def published() -> bool:
                stat = reader.exists(path)
                return stat is not None and stat.ephemeralOwner == reg.session.session_id

            await eventually(published, what="registration published after reconnect")
        finally:
            reader.stop()
            reader.close()
    finally:
        await reg.close()


async def test_consumer_published_while_subscribed(
    zookeeper: ZooKeeperServer, kz: KazooClient, root: str
) -> None:
    reg = ZooKeeperRegistry(make_config(zookeeper, root, consumer_host="10.9.9.9"))
    await reg.start()
    try:
        sub = reg.subscribe(key(group="g1"))
        consumers = f"{root}/dubbo/{IFACE}/consumers"
        await eventually(lambda: bool(kz.exists(consumers) and kz.get_children(consumers)))
        [name] = kz.get_children(consumers)
        url = parse_node_name(name)
        assert (url.protocol, url.host, url.path) == ("consumer", "10.9.9.9", IFACE)
        assert url.params["category"] == "consumers"
        assert (url.version, url.group, url.params["side"]) == ("1.0.0", "g1", "consumer")
        sub.close()
        await eventually(lambda: kz.get_children(consumers) == [], what="consumer withdrawn")
    finally:
        await reg.close()


async def test_subscribe_before_start(
    zookeeper: ZooKeeperServer, kz: KazooClient, root: str
) -> None:
    write_provider(kz, root, provider_url("10.0.0.1", 20880))
    reg = ZooKeeperRegistry(make_config(zookeeper, root))
    try:
        sub = reg.subscribe(key())
        await reg.start()
        reset = await next_update(sub)
        assert isinstance(reset, Reset) and len(reset.instances) == 1
    finally:
        await reg.close()


async def test_changed_dubbo_registration_never_leaves_the_id_unregistered(
    zookeeper: ZooKeeperServer, registry: ZooKeeperRegistry, kz: KazooClient, root: str
) -> None:
    """A changed registration is a new node name (the URL is the name): the new node is
    created before the old one is deleted, so a consumer always finds the provider."""
    observer = ZooKeeperRegistry(make_config(zookeeper, root))
    await observer.start()
    try:
        consumer = Consumer(observer.subscribe(key()))
        await consumer.until(lambda c: c.resets == 1)
        metadata = frozen_mapping({"version": "1.0.0"})
        for round_, weight in enumerate((50, 60, 70, 80, 90)):
            await registry.register(
                Registration(IFACE, "local-1", "10.1.1.1", 20880, weight, metadata, "dubbo")
            )
            await consumer.until(
                lambda c, w=weight: (
                    "10.1.1.1:20880" in c.instances and c.instances["10.1.1.1:20880"].weight == w
                )
            )
            [name] = kz.get_children(providers(root))
            created = kz.exists(f"{providers(root)}/{name}").czxid
            parent = kz.exists(providers(root))
            if round_:
                # The parent's last child change is the old node's deletion, after the create.
                assert parent.pzxid > created
        assert not [u for u in consumer.updates if isinstance(u, Remove)], consumer.updates
    finally:
        await observer.close()
