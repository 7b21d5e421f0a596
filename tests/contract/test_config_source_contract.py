"""One contract, every config source: local (in memory), zookeeper (real ZooKeeper), etcd
(real etcd) and nacos (real Nacos). Each source comes from its registry plugin, built from the
configuration a user would write, through ``Registry.config_source()``.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from agent.discovery.config_source import ConfigItem, ConfigKey, ConfigSource
from agent.discovery.registry import Registry
from agent.plugins import Plugin
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.nacos import NacosServer
from tests.fixtures.zookeeper import ZooKeeperServer
from tests.support.discovery import eventually

pytestmark = pytest.mark.integration

WAIT_S = 30.0  # a bound for a loaded machine, not the expected delivery time
_groups = itertools.count()


@pytest.fixture(scope="module")
def zookeeper_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    with ZooKeeperServer(tmp_path_factory.mktemp("config-zookeeper")) as server:
        yield server


def _config(kind: str, address: str) -> dict[str, Any]:
    if kind == "zookeeper":
        return {
            "hosts": address,
            "config_root": f"/contract-config{next(_groups)}",
            "session_timeout_s": 4,
            "connect_timeout_s": 15,
            "require_connection": True,
        }
    if kind == "etcd":
        return {
            "endpoints": [address],
            "config_prefix": f"/contract-config{next(_groups)}",
            "connect_timeout_s": 15,
            "require_connection": True,
        }
    if kind == "nacos":
        return {
            "server_addresses": [address],
            "connect_timeout_s": 30,
            "require_connection": True,
            "restart_grace_s": 0,
        }
    return {}


@dataclass
class Source:
    kind: str
    registry: Registry
    source: ConfigSource


async def _build(kind: str, address: str) -> Source:
    plugin: Plugin[Registry] = importlib.import_module(f"plugins.{kind}").PLUGIN
    registry: Registry = plugin.build(_config(kind, address), f"registries.{kind}")
    await registry.start()
    source = registry.config_source()
    assert source is not None, f"{kind} offers no config source"
    return Source(kind, registry, source)


@pytest.fixture(scope="module")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    with EtcdServer(tmp_path_factory.mktemp("config-etcd")) as server:
        yield server


@pytest.fixture(params=["local", "zookeeper", "etcd", "nacos"])
async def src(request: pytest.FixtureRequest) -> AsyncIterator[Source]:
    kind: str = request.param
    address = ""
    if kind == "zookeeper":
        address = request.getfixturevalue("zookeeper_server").hosts
    elif kind == "etcd":
        address = request.getfixturevalue("etcd_server").endpoint
    elif kind == "nacos":
        address = request.getfixturevalue("nacos_server").server_addr
    built = await _build(kind, address)
    yield built
    await built.registry.close()


def key() -> ConfigKey:
    return ConfigKey(f"contract-{next(_groups)}", "rules.yaml")


async def next_value(
    watch: AsyncIterator[ConfigItem | None], within_s: float = WAIT_S
) -> ConfigItem | None:
    return await asyncio.wait_for(anext(watch), within_s)


async def test_get_put_delete(src: Source) -> None:
    k = key()
    assert await src.source.get(k) is None
    first = await src.source.put(k, "timeout: 1")
    assert (first.key, first.content) == (k, "timeout: 1")
    got = await src.source.get(k)
    assert got is not None and (got.content, got.version) == ("timeout: 1", first.version)
    second = await src.source.put(k, "timeout: 2")
    assert second.version != first.version
    assert await src.source.delete(k) is True
    assert await src.source.get(k) is None
    assert await src.source.delete(k) is False


async def test_watch_yields_current_value_then_changes_in_order(src: Source) -> None:
    k = key()
    await src.source.put(k, "v0")
    watch = aiter(src.source.watch(k))
    try:
        current = await next_value(watch)
        assert current is not None and current.content == "v0"
        for n in (1, 2, 3):
            await src.source.put(k, f"v{n}")
            changed = await next_value(watch)
            assert changed is not None and changed.content == f"v{n}"
        await src.source.delete(k)
        assert await next_value(watch) is None
    finally:
        await watch.aclose()  # type: ignore[attr-defined]


async def test_slow_reader_gets_the_latest_never_an_older_one(src: Source) -> None:
    k = key()
    watch = aiter(src.source.watch(k))
    try:
        assert await next_value(watch) is None
        for n in range(1, 6):
            await src.source.put(k, f"v{n}")
        seen: list[str] = []
        while not seen or seen[-1] != "v5":
            item = await next_value(watch)
            assert item is not None
            seen.append(item.content)
        order = [int(v[1:]) for v in seen]
        assert order == sorted(set(order)), f"went back or repeated: {seen}"
        if src.kind == "local":
            assert seen == ["v5"]  # writes faster than the reader collapse to the latest
    finally:
        await watch.aclose()  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ["zookeeper", "etcd", "nacos"])
async def test_watch_survives_a_server_restart(
    kind: str,
    tmp_path_factory: pytest.TempPathFactory,
    nacos_factory: Callable[..., NacosServer],
) -> None:
    server: ZooKeeperServer | EtcdServer | NacosServer
    if kind == "zookeeper":
        server = ZooKeeperServer(tmp_path_factory.mktemp("config-restart")).start()
        address = server.hosts
    elif kind == "etcd":
        server = EtcdServer(tmp_path_factory.mktemp("config-restart-etcd")).start()
        address = server.endpoint
    else:
        server = nacos_factory()
        address = server.server_addr
    built = await _build(kind, address)
    k = key()
    watch = aiter(built.source.watch(k))
    try:
        assert await next_value(watch) is None
        await built.source.put(k, "before")
        item = await next_value(watch)
        assert item is not None and item.content == "before"

        await asyncio.to_thread(server.restart)
        await eventually(lambda: built.registry.status().connected, 90, "reconnected")
        await built.source.put(k, "after")
        while item is None or item.content != "after":
            item = await next_value(watch, 60)
            assert item is None or item.content in ("before", "after")
    finally:
        await watch.aclose()  # type: ignore[attr-defined]
        await built.registry.close()
        server.stop()


async def test_a_change_reaches_the_watch_within_a_second(src: Source) -> None:
    # The bound is the feature: watches are pushed, not found by a poll.
    k = key()
    await src.source.put(k, "v0")
    watch = aiter(src.source.watch(k))
    try:
        first = await next_value(watch)
        assert first is not None and first.content == "v0"
        for n in (1, 2, 3):
            await src.source.put(k, f"v{n}")
            changed = await next_value(watch, within_s=1.0)
            assert changed is not None and changed.content == f"v{n}"
    finally:
        await watch.aclose()  # type: ignore[attr-defined]
