"""Nacos' config service as a :class:`ConfigSource`, on the registry's client.

Key (group, data_id) is Nacos' own pair, in the registry's namespace. The version is the
content's MD5, which is what Nacos itself uses to tell versions apart. Nacos stores no empty
content: an empty document reads as absent, and ``put`` of one is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from agent.discovery.config_source import (
    ConfigItem,
    ConfigKey,
    ConfigSource,
    ConfigSourceError,
    LatestValue,
    check_content,
)
from plugins.nacos.client import NacosCallError, NacosClient

if TYPE_CHECKING:
    from plugins.nacos.registry import NacosRegistry

log = logging.getLogger(__name__)


def item_of(key: ConfigKey, content: str | None) -> ConfigItem | None:
    if not content:
        return None
    return ConfigItem(key, content, hashlib.md5(content.encode()).hexdigest())


class NacosConfigSource(ConfigSource):
    def __init__(self, registry: NacosRegistry) -> None:
        self.name = registry.name
        self._registry = registry

    def _client(self) -> NacosClient:
        client = self._registry.client
        if client is None or not self._registry.connected:
            raise ConfigSourceError(f"Nacos not connected: {self._registry.status().detail}")
        return client

    async def get(self, key: ConfigKey) -> ConfigItem | None:
        try:
            return item_of(key, await self._client().get_config(key.data_id, key.group))
        except NacosCallError as exc:
            raise ConfigSourceError(str(exc)) from exc

    async def put(self, key: ConfigKey, content: str) -> ConfigItem:
        check_content(content)
        item = item_of(key, content)
        if item is None or not content.strip():
            raise ConfigSourceError("Nacos stores no empty or blank content (delete instead)")
        try:
            await self._client().publish_config(key.data_id, key.group, content)
        except NacosCallError as exc:
            raise ConfigSourceError(str(exc)) from exc
        return item

    async def delete(self, key: ConfigKey) -> bool:
        client = self._client()
        try:
            if await client.get_config(key.data_id, key.group) is None:
                return False
            await client.remove_config(key.data_id, key.group)
        except NacosCallError as exc:
            raise ConfigSourceError(str(exc)) from exc
        return True

    async def watch(self, key: ConfigKey) -> AsyncIterator[ConfigItem | None]:
        slot = LatestValue()
        last: list[ConfigItem | None] = []

        async def changed(content: str) -> None:
            slot.set(item_of(key, content))

        async def reread(client: NacosClient) -> None:
            try:
                slot.set(item_of(key, await client.get_config(key.data_id, key.group)))
            except NacosCallError as exc:
                log.info("watch %s: re-read after reconnect failed: %s", key, exc)

        def reconnected(client: NacosClient) -> None:
            # The SDK's listener resumes by itself, but only on its next listen round (up to
            # seconds later); reading now yields a change made during the outage at once.
            self._registry.spawn(reread(client))

        client: NacosClient | None = None
        try:
            while client is None:
                candidate = await self._registry.wait_connected()
                try:
                    # Listen first, then read: a change in between is seen by one or the other.
                    await candidate.listen_config(key.data_id, key.group, changed)
                    client = candidate
                    slot.set(item_of(key, await client.get_config(key.data_id, key.group)))
                except NacosCallError as exc:
                    log.info("watch %s: %s; retrying once connected", key, exc)
                    if client is None:
                        await asyncio.sleep(self._registry.config.health_interval_s)
            self._registry.add_reconnect_hook(reconnected)
            while True:
                value = await slot.next()
                # The SDK re-reads after its listen loop and may report the same content twice.
                if last and last[0] == value:
                    continue
                last[:] = [value]
                yield value
        finally:
            self._registry.remove_reconnect_hook(reconnected)
            if client is not None:
                try:
                    async with asyncio.timeout(5):
                        await client.unlisten_config(key.data_id, key.group, changed)
                except (NacosCallError, TimeoutError):
                    pass
