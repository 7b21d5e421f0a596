"""ZooKeeper nodes as a :class:`ConfigSource`, on the registry's kazoo session.

A key is the node ``{config_root}/{group}/{data_id}`` (``/dubbo/config`` by default: Dubbo's
ZooKeeper config center keeps ``/dubbo/config/{group}/{key}``), its content the node's data as
UTF-8, its version the node's mzxid. Watches are :class:`DataWatch` es; the registry re-reads
them on every reconnect (kazoo forgets watches when the connection drops).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError

from agent.discovery.config_source import (
    ConfigItem,
    ConfigKey,
    ConfigSource,
    ConfigSourceError,
    LatestValue,
    check_content,
)
from agent.discovery.logonce import LogOnce
from plugins.zookeeper.session import TRANSIENT
from plugins.zookeeper.watches import DataWatch

if TYPE_CHECKING:
    from plugins.zookeeper.registry import ZooKeeperRegistry

log = logging.getLogger(__name__)


class ZooKeeperConfigSource(ConfigSource):
    name = "zookeeper"

    def __init__(self, registry: ZooKeeperRegistry) -> None:
        self._registry = registry
        self._session = registry.session
        self._root = registry.config.config_root.rstrip("/")
        self._problems = LogOnce(log)

    def path(self, key: ConfigKey) -> str:
        # ConfigKey parts are letters, digits and "_-.:": valid node names as they are.
        return f"{self._root}/{key.group}/{key.data_id}"

    def _check_connected(self) -> None:
        if not self._session.connected:
            raise ConfigSourceError(f"ZooKeeper not connected: {self._registry.status().detail}")

    async def get(self, key: ConfigKey) -> ConfigItem | None:
        self._check_connected()
        try:
            data, stat = await self._session.get(self.path(key))
        except NoNodeError:
            return None
        except (*TRANSIENT, KazooException) as exc:
            raise ConfigSourceError(f"{self.path(key)}: {exc!r}") from exc
        return ConfigItem(key, data.decode("utf-8", "replace"), str(stat.mzxid))

    async def put(self, key: ConfigKey, content: str) -> ConfigItem:
        check_content(content)
        self._check_connected()
        path, data = self.path(key), content.encode()
        try:
            try:
                await self._session.set(path, data)
            except NoNodeError:
                try:
                    await self._session.create(path, data, makepath=True)
                except NodeExistsError:  # created meanwhile by someone else: ours wins
                    await self._session.set(path, data)
            _, stat = await self._session.get(path)
        except (*TRANSIENT, KazooException) as exc:
            raise ConfigSourceError(f"{path}: {exc!r}") from exc
        return ConfigItem(key, content, str(stat.mzxid))

    async def delete(self, key: ConfigKey) -> bool:
        self._check_connected()
        try:
            return await self._session.delete(self.path(key))
        except (*TRANSIENT, KazooException) as exc:
            raise ConfigSourceError(f"{self.path(key)}: {exc!r}") from exc

    async def watch(self, key: ConfigKey) -> AsyncIterator[ConfigItem | None]:
        slot = LatestValue()
        watch: DataWatch | None = None

        def changed() -> None:
            assert watch is not None
            node = watch.node
            if node is None:
                slot.set(None)
            else:
                slot.set(ConfigItem(key, node.data.decode("utf-8", "replace"), str(node.mzxid)))

        watch = DataWatch(self._session, self.path(key), changed, self._problems)
        self._registry.config_watches.add(watch)
        watch.resync()
        try:
            while True:
                yield await slot.next()
        finally:
            self._registry.config_watches.discard(watch)
            watch.close()
