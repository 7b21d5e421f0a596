"""One contract, every registry plugin: local, zookeeper (real ZooKeeper), etcd (real etcd),
nacos (real Nacos, the session's server: each test in a group of its own).

A kind is built from the ``Plugin`` its entry point names (``plugins.<kind>:PLUGIN``), from
the configuration a user would write; going through the installed entry points would test
the venv's install rather than this tree. For the kinds backed by a server, a second registry
on the same server plays another agent, so "visible to a subscriber" means visible through
the registry.
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.discovery.registry import Registry
from agent.discovery.types import Add, Registration, Remove, Reset, ServiceKey
from agent.plugins import Plugin
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.nacos import NacosServer
from tests.fixtures.zookeeper import ZooKeeperServer
from tests.support.discovery import next_update

pytestmark = pytest.mark.integration

_roots = itertools.count()


@dataclass
class Kind:
    name: str
    make: Callable[[], Awaitable[Registry]]
    shared: bool
    """True: registries made by ``make`` see each other's registrations (one server)."""


@pytest.fixture(scope="module")
def zookeeper_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    with ZooKeeperServer(tmp_path_factory.mktemp("contract-zookeeper")) as server:
        yield server


@pytest.fixture(scope="module")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    with EtcdServer(tmp_path_factory.mktemp("contract-etcd")) as server:
        yield server


def _config(kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    root = f"/contract{next(_roots)}"
    if kind == "local":
        return {}
    if kind == "zookeeper":
        server: ZooKeeperServer = request.getfixturevalue("zookeeper_server")
        return {
            "hosts": server.hosts,
            "plain_root": f"{root}/meshagent/services",
            "default_mode": "plain",
            "session_timeout_s": 4,
            "connect_timeout_s": 15,
            "require_connection": True,
        }
    if kind == "nacos":
        nacos: NacosServer = request.getfixturevalue("nacos_server")
        return {
            "server_addresses": [nacos.server_addr],
            "group": f"contract{next(_roots)}",
            "default_mode": "plain",
            "connect_timeout_s": 30,
            "require_connection": True,
        }
    etcd: EtcdServer = request.getfixturevalue("etcd_server")
    return {
        "endpoints": [etcd.endpoint],
        "prefix": f"{root}/services",
        "lease_ttl_s": 5,
        "connect_timeout_s": 15,
        "require_connection": True,
    }


@pytest.fixture(params=["local", "zookeeper", "etcd", "nacos"])
async def kind(request: pytest.FixtureRequest) -> AsyncIterator[Kind]:
    name: str = request.param
    plugin: Plugin[Registry] = importlib.import_module(f"plugins.{name}").PLUGIN
    assert plugin.name == name
    config = _config(name, request)
    made: list[Registry] = []

    async def make() -> Registry:
        registry: Registry = plugin.build(config, f"registries.{name}")
        made.append(registry)
        await registry.start()
        return registry

    yield Kind(name, make, shared=name != "local")
    for registry in made:
        await registry.close()


async def observer_of(kind: Kind, registry: Registry) -> Registry:
    """Another agent's view of the registry if the kind has one, else the registry itself."""
    return await kind.make() if kind.shared else registry


ORDERS = ServiceKey("contract-orders")


def registration(instance_id: str, port: int) -> Registration:
    return Registration(ORDERS.name, instance_id, "10.1.0.1", port)


async def test_status_is_connected_after_start(kind: Kind) -> None:
    registry = await kind.make()
    status = registry.status()
    assert status.connected is True
    assert status.since > 0


async def test_first_update_is_a_reset(kind: Kind) -> None:
    registry = await kind.make()
    reset = await next_update(registry.subscribe(ORDERS))
    assert isinstance(reset, Reset) and reset.instances == ()
    assert isinstance(await next_update(registry.subscribe(ServiceKey("contract-none"))), Reset)


async def test_register_is_an_add_with_growing_revisions(kind: Kind) -> None:
    registry = await kind.make()
    subscription = (await observer_of(kind, registry)).subscribe(ORDERS)
    reset = await next_update(subscription)
    assert isinstance(reset, Reset)

    await registry.register(registration("c-1", 9001))
    first = await next_update(subscription)
    await registry.register(registration("c-2", 9002))
    second = await next_update(subscription)
    assert isinstance(first, Add) and isinstance(second, Add)
    assert (first.instance.id, first.instance.address) == ("c-1", "10.1.0.1:9001")
    assert second.instance.id == "c-2"
    assert reset.revision <= first.revision < second.revision
    assert 0 < first.instance.revision < second.instance.revision


async def test_deregister_is_a_remove_of_that_registration(kind: Kind) -> None:
    registry = await kind.make()
    subscription = (await observer_of(kind, registry)).subscribe(ORDERS)
    assert isinstance(await next_update(subscription), Reset)
    await registry.register(registration("c-1", 9001))
    added = await next_update(subscription)
    assert isinstance(added, Add)

    await registry.deregister(ORDERS.name, "c-1")
    removed = await next_update(subscription)
    assert isinstance(removed, Remove)
    assert removed.instance_id == "c-1"
    assert removed.registration_revision == added.instance.revision
    assert removed.revision >= added.revision  # revisions never go back


async def test_close_removes_this_agents_registrations(kind: Kind, tmp_path: Path) -> None:
    registry = await kind.make()
    await registry.register(registration("c-1", 9001))
    await registry.register(registration("c-2", 9002))
    if kind.shared:
        observer = await kind.make()
        subscription = observer.subscribe(ORDERS)
        reset = await next_update(subscription)
        assert isinstance(reset, Reset) and {i.id for i in reset.instances} == {"c-1", "c-2"}
        await registry.close()
        gone = {(await next_update(subscription)).instance_id for _ in range(2)}  # type: ignore[union-attr]
        assert gone == {"c-1", "c-2"}
        late = await kind.make()
        reset = await next_update(late.subscribe(ORDERS))
        assert isinstance(reset, Reset) and reset.instances == ()
    else:
        # The embedded registry is only this agent's: closing it ends its subscriptions.
        subscription = registry.subscribe(ORDERS)
        assert isinstance(await next_update(subscription), Reset)
        await registry.close()
        assert subscription.closed
        assert [u async for u in subscription] == []
