"""Dubbo 3 application-level discovery against a real ZooKeeper, nodes as Dubbo 3.3 writes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from kazoo.client import KazooClient

from agent.discovery.types import Add, Remove, Reset, ServiceKey, frozen_mapping
from plugins.zookeeper.registry import ZooKeeperRegistry
from tests.fixtures.zookeeper import ZooKeeperServer
from tests.integration.zookeeper.test_interface_level import make_config
from tests.support.discovery import Consumer, next_update

pytestmark = pytest.mark.integration

IFACE = "org.apache.dubbo.demo.DemoService"
_count = iter(range(10_000))


def instance_json(
    app: str, host: str, port: int, revision: str, *, tri_port: int | None = None
) -> bytes:
    endpoints = [{"port": port, "protocol": "dubbo"}]
    if tri_port is not None:
        endpoints.append({"port": tri_port, "protocol": "tri"})
    instance_id = f"{host}:{port}"
    body = {
        "name": app,
        "id": instance_id,
        "address": host,
        "port": port,
        "sslPort": None,
        "payload": {
            "@class": "org.apache.dubbo.registry.zookeeper.ZookeeperInstance",
            "id": instance_id,
            "name": app,
            "metadata": {
                "dubbo.endpoints": json.dumps(endpoints, separators=(",", ":")),
                "dubbo.metadata.revision": revision,
                "dubbo.metadata.storage-type": "remote",
                "timestamp": "1700000000000",
            },
        },
        "registrationTimeUTC": 1700000000123,
        "serviceType": "DYNAMIC",
        "uriSpec": None,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def metadata_json(app: str, revision: str, version: str) -> bytes:
    service = {
        "name": IFACE,
        "version": version,
        "protocol": "dubbo",
        "path": IFACE,
        "params": {"methods": "sayHello", "weight": "60"},
    }
    return json.dumps(
        {"app": app, "revision": revision, "services": {f"{IFACE}:{version}:dubbo": service}}
    ).encode()


@pytest.fixture
def root() -> str:
    return f"/app{next(_count)}"


@pytest.fixture
async def registry(zookeeper: ZooKeeperServer, root: str) -> AsyncIterator[ZooKeeperRegistry]:
    reg = ZooKeeperRegistry(make_config(zookeeper, root, default_mode="application"))
    await reg.start()
    yield reg
    await reg.close()


def key(version: str = "1.0.0", **extra: str) -> ServiceKey:
    return ServiceKey(IFACE, frozen_mapping({"version": version, **extra}))


def add_instance(kz: KazooClient, root: str, app: str, host: str, port: int, rev: str) -> int:
    path = f"{root}/services/{app}/{host}:{port}"
    kz.create(path, instance_json(app, host, port, rev), ephemeral=True, makepath=True)
    return int(kz.exists(path).czxid)


async def test_mapping_instances_and_metadata(
    registry: ZooKeeperRegistry, kz: KazooClient, root: str
) -> None:
    kz.create(f"{root}/dubbo/mapping/{IFACE}", b"demo-provider", makepath=True)
    kz.create(
        f"{root}/dubbo/metadata/demo-provider/r1",
        metadata_json("demo-provider", "r1", "1.0.0"),
        makepath=True,
    )
    czxid = add_instance(kz, root, "demo-provider", "192.168.1.5", 20880, "r1")

    sub = registry.subscribe(key())
    reset = await next_update(sub)
    assert isinstance(reset, Reset)
    [instance] = reset.instances
    assert (instance.id, instance.port, instance.revision, instance.weight) == (
        "192.168.1.5:20880",
        20880,
        czxid,
        60,
    )
    assert instance.metadata["application"] == "demo-provider"
    assert instance.metadata["methods"] == "sayHello"

    second = add_instance(kz, root, "demo-provider", "192.168.1.6", 20880, "r1")
    add = await next_update(sub)
    assert isinstance(add, Add) and add.instance.revision == second

    kz.delete(f"{root}/services/demo-provider/192.168.1.5:20880")
    remove = await next_update(sub)
    assert remove == Remove(remove.revision, "192.168.1.5:20880", czxid)


async def test_version_filtering_by_metadata(
    registry: ZooKeeperRegistry, kz: KazooClient, root: str
) -> None:
    kz.create(f"{root}/dubbo/mapping/{IFACE}", b"demo-provider", makepath=True)
    kz.create(
        f"{root}/dubbo/metadata/demo-provider/r1",
        metadata_json("demo-provider", "r1", "1.0.0"),
        makepath=True,
    )
    add_instance(kz, root, "demo-provider", "192.168.1.5", 20880, "r1")
    sub = registry.subscribe(key("2.0.0"))
    reset = await next_update(sub)
    assert isinstance(reset, Reset) and reset.instances == ()


async def test_mapping_change_and_provided_by(
    registry: ZooKeeperRegistry, kz: KazooClient, root: str
) -> None:
    # no metadata stored remotely: instances kept unfiltered (local metadata hook not set)
    add_instance(kz, root, "app-a", "10.0.0.1", 20880, "ra")
    add_instance(kz, root, "app-b", "10.0.0.2", 20880, "rb")
    consumer = Consumer(registry.subscribe(key()))
    await consumer.until(lambda c: c.resets == 1)
    assert consumer.instances == {}  # no mapping yet

    kz.create(f"{root}/dubbo/mapping/{IFACE}", b"app-a", makepath=True)
    await consumer.until(lambda c: set(c.instances) == {"10.0.0.1:20880"})
    kz.set(f"{root}/dubbo/mapping/{IFACE}", b"app-a,app-b")
    await consumer.until(lambda c: set(c.instances) == {"10.0.0.1:20880", "10.0.0.2:20880"})
    kz.set(f"{root}/dubbo/mapping/{IFACE}", b"app-b")
    await consumer.until(lambda c: set(c.instances) == {"10.0.0.2:20880"})

    pinned = registry.subscribe(key(provided_by="app-a"))
    reset = await next_update(pinned)
    assert isinstance(reset, Reset)
    assert [i.id for i in reset.instances] == ["10.0.0.1:20880"]


async def test_tri_port_and_in_place_update(
    registry: ZooKeeperRegistry, kz: KazooClient, root: str
) -> None:
    path = f"{root}/services/app-a/10.0.0.1:20880"
    kz.create(
        path,
        instance_json("app-a", "10.0.0.1", 20880, "r1", tri_port=50052),
        ephemeral=True,
        makepath=True,
    )
    sub = registry.subscribe(key(provided_by="app-a", protocol="tri"))
    reset = await next_update(sub)
    assert isinstance(reset, Reset)
    [instance] = reset.instances
    assert (instance.id, instance.port) == ("10.0.0.1:50052", 50052)

    # Dubbo rewrites the instance JSON when its metadata revision changes
    kz.set(path, instance_json("app-a", "10.0.0.1", 20880, "r2", tri_port=50052))
    add = await next_update(sub)
    assert isinstance(add, Add)
    assert add.instance.metadata["dubbo.metadata.revision"] == "r2"
    assert add.instance.revision == instance.revision


async def test_malformed_instance_is_skipped(
    registry: ZooKeeperRegistry, kz: KazooClient, root: str
) -> None:
    add_instance(kz, root, "app-a", "10.0.0.1", 20880, "r1")
    kz.create(f"{root}/services/app-a/10.0.0.9:1", b"{not json", ephemeral=True)
    sub = registry.subscribe(key(provided_by="app-a"))
    reset = await next_update(sub)
    assert isinstance(reset, Reset)
    assert [i.id for i in reset.instances] == ["10.0.0.1:20880"]
    kz.set(f"{root}/services/app-a/10.0.0.9:1", instance_json("app-a", "10.0.0.9", 1, "r1"))
    add = await next_update(sub)
    assert isinstance(add, Add) and add.instance.id == "10.0.0.9:1"
