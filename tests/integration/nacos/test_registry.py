"""The Nacos registry against a real Nacos 3 server: Dubbo naming, weights and the enabled flag
as the LB sees them, namespaces, persistent instances, application-level discovery, bad input.

The session's server is shared: each test works in a group (or namespace) of its own. Nacos'
HTTP admin API is the independent second client (the operator).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from agent.cluster.cluster import Cluster
from agent.cluster.lb import WeightedRandom
from agent.discovery.types import Add, Registration, Reset, ServiceKey, frozen_mapping
from agent.errors import RegistryError
from plugins.nacos.config import NacosConfig
from plugins.nacos.registry import NacosRegistry
from tests.fixtures.nacos import NacosServer
from tests.fixtures.processes import free_port
from tests.fixtures.tcp_forwarder import TcpForwarder
from tests.support.discovery import Consumer, eventually, next_update

pytestmark = pytest.mark.integration

IFACE = "org.meshagent.demo.GreetingService"
_groups = itertools.count()

Make = Callable[..., Awaitable[NacosRegistry]]


@pytest.fixture
def group() -> str:
    return f"it-{next(_groups)}"


@pytest.fixture
async def make(nacos_server: NacosServer, group: str) -> AsyncIterator[Make]:
    made: list[NacosRegistry] = []

    async def build(**overrides: Any) -> NacosRegistry:
        settings: dict[str, Any] = {
            "server_addresses": [nacos_server.server_addr],
            "group": group,
            "connect_timeout_s": 30,
            "require_connection": True,
            **overrides,
        }
        registry = NacosRegistry(NacosConfig.model_validate(settings))
        made.append(registry)
        await registry.start()
        return registry

    yield build
    for registry in made:
        await registry.close()


def instances(
    nacos: NacosServer, service: str, group: str, namespace: str = "", cluster: str = "DEFAULT"
) -> list[Any]:
    params = {"serviceName": service, "groupName": group, "clusterName": cluster}
    if namespace:
        params["namespaceId"] = namespace
    # The client API: the admin one of this build answers "cluster DEFAULT is not found".
    hosts: list[Any] = nacos.http("GET", "/v3/client/ns/instance/list", params)
    return hosts


def dubbo(port: int, weight: int = 100, **metadata: str) -> Registration:
    meta = {"version": "1.0.0", "group": "g1", "methods": "greet", **metadata}
    return Registration(IFACE, f"p{port}", "10.9.0.1", port, weight, frozen_mapping(meta), "dubbo")


async def test_dubbo_provider_is_written_as_dubbo_does_and_found_by_interface(
    nacos_server: NacosServer, make: Make, group: str
) -> None:
    provider = await make()
    await provider.register(dubbo(20880, weight=50))

    written = instances(nacos_server, f"providers:{IFACE}:1.0.0:g1", group)
    assert len(written) == 1
    meta = written[0]["metadata"]
    assert (meta["interface"], meta["category"], meta["protocol"]) == (IFACE, "providers", "dubbo")
    assert (meta["version"], meta["group"], meta["side"]) == ("1.0.0", "g1", "provider")
    assert written[0]["weight"] == pytest.approx(0.5)

    consumer = await make()
    found = await next_update(
        consumer.subscribe(ServiceKey(IFACE, {"version": "1.0.0", "group": "g1"}))
    )
    assert isinstance(found, Reset)
    assert [(i.address, i.weight) for i in found.instances] == [("10.9.0.1:20880", 50)]
    # Other versions live in another Nacos service: nothing there.
    other = await next_update(consumer.subscribe(ServiceKey(IFACE, {"version": "2.0.0"})))
    assert isinstance(other, Reset) and other.instances == ()


async def test_operator_weight_and_disable_change_the_load_balancer(
    nacos_server: NacosServer, make: Make, group: str
) -> None:
    provider = await make()
    await provider.register(dubbo(20881))
    await provider.register(dubbo(20882))
    consumer = await make()
    subscription = consumer.subscribe(ServiceKey(IFACE, {"version": "1.0.0", "group": "g1"}))
    cluster = Cluster(IFACE, WeightedRandom())
    model = Consumer(subscription)

    async def apply_until(check: Callable[[], bool]) -> None:
        while not check():
            update = await next_update(subscription)
            model.apply(update)
            cluster.apply(update)

    await apply_until(lambda: len(cluster.hosts()) == 2)
    service = f"providers:{IFACE}:1.0.0:g1"

    def operator(port: int, **change: str) -> None:
        params = {"serviceName": service, "groupName": group, "ip": "10.9.0.1"}
        params.update(port=str(port), clusterName="DEFAULT", ephemeral="true", **change)
        nacos_server.http("PUT", "/v3/admin/ns/instance", params)

    operator(20882, weight="0")  # drained: registered, takes no traffic
    await apply_until(lambda: cluster.get("10.9.0.1:20882").weight == 0)  # type: ignore[union-attr]
    picks = Counter(cluster.choose().id for _ in range(200))  # type: ignore[union-attr]
    assert picks == {"10.9.0.1:20881": 200}

    operator(20882, weight="1", enabled="true")
    operator(20881, weight="1", enabled="false")  # disabled: gone from the cluster
    await apply_until(
        lambda: (
            cluster.get("10.9.0.1:20881") is None and cluster.get("10.9.0.1:20882").weight == 100
        )  # type: ignore[union-attr]
    )
    picks = Counter(cluster.choose().id for _ in range(50))  # type: ignore[union-attr]
    assert picks == {"10.9.0.1:20882": 50}


async def test_namespace_and_persistent_instance(nacos_server: NacosServer, make: Make) -> None:
    namespace = f"ns-{next(_groups)}"
    nacos_server.http(
        "POST", "/v3/admin/core/namespace", {"namespaceId": namespace, "namespaceName": namespace}
    )
    registry = await make(namespace=namespace, default_mode="plain")
    reg = Registration(
        "orders", "o-1", "127.0.0.1", nacos_server.port, 100,
        frozen_mapping({"nacos.ephemeral": "false", "nacos.cluster": "east", "zone": "z1"}),
    )  # fmt: skip
    await registry.register(reg)
    group = registry.config.group
    listed = instances(nacos_server, "orders", group, namespace, "east")
    assert [(h["ephemeral"], h["clusterName"]) for h in listed] == [(False, "east")]
    assert instances(nacos_server, "orders", group, cluster="east") == []  # not in public

    east = await make(namespace=namespace, default_mode="plain", clusters=["east"])
    west = await make(namespace=namespace, default_mode="plain", clusters=["west"])
    seen = await next_update(east.subscribe(ServiceKey("orders")))
    assert isinstance(seen, Reset) and [i.id for i in seen.instances] == ["o-1"]
    assert seen.instances[0].metadata["zone"] == "z1"
    unseen = await next_update(west.subscribe(ServiceKey("orders")))
    assert isinstance(unseen, Reset) and unseen.instances == ()

    await registry.close()  # a persistent instance outlives connections: close removes it
    assert instances(nacos_server, "orders", group, namespace, "east") == []


async def test_unknown_namespace_is_refused_with_the_reason(make: Make) -> None:
    registry = await make(namespace="no-such-namespace", default_mode="plain")
    with pytest.raises(RegistryError, match="namespace"):
        await registry.register(Registration("orders", "o-1", "10.0.0.1", 80))
    assert "namespace" in registry.status().detail


async def test_bad_registration_metadata_is_refused_and_others_still_served(make: Make) -> None:
    registry = await make(default_mode="plain")
    bad = Registration(
        "orders", "o-1", "10.0.0.1", 80, 100, frozen_mapping({"nacos.ephemeral": "maybe"})
    )
    with pytest.raises(RegistryError, match=r"nacos\.ephemeral"):
        await registry.register(bad)
    await registry.register(Registration("orders", "o-2", "10.0.0.2", 80))
    seen = await next_update((await make(default_mode="plain")).subscribe(ServiceKey("orders")))
    assert isinstance(seen, Reset) and [i.id for i in seen.instances] == ["o-2"]


async def test_application_level_through_mapping_and_remote_metadata(
    nacos_server: NacosServer, make: Make, group: str
) -> None:
    app, revision = f"demo-app-{group}", "rev-1"
    metadata_info = {
        "app": app,
        "revision": revision,
        "services": {
            f"g1/{IFACE}:1.0.0:dubbo": {
                "name": IFACE, "group": "g1", "version": "1.0.0", "protocol": "dubbo",
                "params": {"methods": "greet", "timeout": "3000"},
            }
        },
    }  # fmt: skip
    nacos_server.http(
        "POST", "/v3/admin/cs/config",
        {"dataId": app, "groupName": revision, "content": json.dumps(metadata_info)},
    )  # fmt: skip
    provider = await make(default_mode="plain")
    await provider.register(
        Registration(
            app, "i-1", "10.9.0.7", 8080, 100,
            frozen_mapping({
                "dubbo.metadata.revision": revision,
                "dubbo.metadata.storage-type": "remote",
                "dubbo.endpoints": json.dumps([{"port": 20890, "protocol": "dubbo"}]),
            }),
        )
    )  # fmt: skip
    consumer = await make(default_mode="application")
    subscription = consumer.subscribe(ServiceKey(IFACE, {"version": "1.0.0", "group": "g1"}))
    model = Consumer(subscription)
    # No mapping yet: nothing provides the interface.
    first = await next_update(subscription)
    model.apply(first)
    assert isinstance(first, Reset) and first.instances == ()

    nacos_server.http(
        "POST", "/v3/admin/cs/config", {"dataId": IFACE, "groupName": "mapping", "content": app}
    )
    await model.until(lambda m: "10.9.0.7:20890" in m.instances, within_s=30)
    found = model.instances["10.9.0.7:20890"]
    assert (found.metadata["timeout"], found.metadata["application"]) == ("3000", app)

    # Another version is not in the app's metadata: filtered out.
    other = consumer.subscribe(ServiceKey(IFACE, {"version": "9.9.9", "group": "g1"}))
    reset = await next_update(other, 30)
    assert isinstance(reset, Reset) and reset.instances == ()
    nacos_server.http("DELETE", "/v3/admin/cs/config", {"dataId": IFACE, "groupName": "mapping"})
    await model.until(lambda m: not m.instances, within_s=30)
    await asyncio.sleep(0)  # let pending callbacks run before the registries close


async def test_deregister_and_reregister_are_seen(make: Make) -> None:
    registry = await make(default_mode="plain")
    consumer = await make(default_mode="plain")
    subscription = consumer.subscribe(ServiceKey("pay"))
    model = Consumer(subscription)
    model.apply(await next_update(subscription))
    await registry.register(Registration("pay", "a", "10.0.0.1", 80))
    await registry.register(Registration("pay", "b", "10.0.0.2", 80))
    await model.until(lambda m: set(m.instances) == {"a", "b"})
    await registry.deregister("pay", "a")
    await model.until(lambda m: set(m.instances) == {"b"})
    await registry.register(Registration("pay", "a", "10.0.0.1", 80, 300))
    await model.until(lambda m: m.instances.get("a") is not None and m.instances["a"].weight == 300)
    assert any(isinstance(u, Add) and u.instance.id == "a" for u in model.updates)
    await eventually(lambda: registry.status().connected, what="still connected")


async def test_a_nacos_behind_a_port_mapping_with_another_grpc_offset(
    nacos_server: NacosServer, make: Make
) -> None:
    """Issue 27: a load balancer or port mapping in front of Nacos need not keep the gRPC port
    1000 above the HTTP one; ``grpc_port_offset`` says where it is. Two forwarders expose
    the session server's HTTP port at P and its gRPC port at P + 2000."""
    forwarders = await _free_forward_pair(nacos_server, offset=2000)
    try:
        registry = await make(
            server_addresses=[forwarders[0].endpoint], grpc_port_offset=2000, default_mode="plain"
        )
        await registry.register(Registration("mapped", "m-1", "10.0.0.9", 80))
        consumer = await make(default_mode="plain")  # straight to the server
        model = Consumer(consumer.subscribe(ServiceKey("mapped")))
        await model.until(lambda m: set(m.instances) == {"m-1"})
        assert registry.status().connected
    finally:
        for forwarder in forwarders:
            await forwarder.stop()


async def _free_forward_pair(nacos: NacosServer, offset: int) -> tuple[TcpForwarder, TcpForwarder]:
    """Forwarders on P (to Nacos' HTTP port) and P + offset (to its gRPC port)."""
    for _ in range(50):
        port = free_port()
        try:
            http = await TcpForwarder(nacos.port, port=port).start()
        except OSError:
            continue
        try:
            grpc = await TcpForwarder(nacos.grpc_port, port=port + offset).start()
        except OSError:
            await http.stop()
            continue
        return http, grpc
    raise AssertionError("no free port pair for the forwarders")
