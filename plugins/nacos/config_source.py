"""Nacos' config service as a :class:`ConfigSource`, on the registry's client.

Key (group, data_id) is Nacos' own pair, in the registry's namespace. The version is the
content's MD5, which is what Nacos itself uses to tell versions apart. Nacos stores no empty
content: an empty document reads as absent, and ``put`` of one is refused.

Nacos answers a publish before the new content is readable (its config cache is refreshed
asynchronously, ~0.1 s here): ``put`` and ``delete`` return once a read shows the change, so a
``get`` right after them never sees the old value.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
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
        client = self._client()
        try:
            await client.publish_config(key.data_id, key.group, content)
            await self._until_readable(client, key, content)
        except NacosCallError as exc:
            raise ConfigSourceError(str(exc)) from exc
        return item

    async def delete(self, key: ConfigKey) -> bool:
        client = self._client()
        try:
            if await client.get_config(key.data_id, key.group) is None:
                return False
            await client.remove_config(key.data_id, key.group)
            await self._until_readable(client, key, None)
        except NacosCallError as exc:
            raise ConfigSourceError(str(exc)) from exc
        return True

    async def _poll(self, key: ConfigKey, slot: LatestValue) -> None:
        """Re-read every ``config_poll_s``: nacos-sdk-python 3.2 drops a change for minutes
        when its refresh read hits Nacos' "being modified" lock (it marks the key in sync
        anyway), so the listener alone can miss an update."""
        interval = self._registry.config.config_poll_s
        last: str | None = None
        while True:
            await asyncio.sleep(interval)  # poll period, not synchronisation
            client = self._registry.client
            if client is None or not self._registry.connected:
                continue
            try:
                content = await client.get_config(key.data_id, key.group)
            except NacosCallError:
                continue
            if content != last:
                last = content
                slot.set(item_of(key, content))

    async def _until_readable(
        self, client: NacosClient, key: ConfigKey, content: str | None
    ) -> None:
        deadline = time.monotonic() + self._registry.config.request_timeout_s
        while await client.get_config(key.data_id, key.group) != content:
            if time.monotonic() > deadline:
                log.warning("%s: written, but not readable yet after the request timeout", key)
                return
            await asyncio.sleep(0.02)  # poll of a bounded wait: Nacos has no "visible" event

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
        poller: asyncio.Future[None] | None = None
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
            poller = asyncio.ensure_future(self._poll(key, slot))
            while True:
                value = await slot.next()
                # The SDK re-reads after its listen loop and may report the same content twice.
                if last and last[0] == value:
                    continue
                last[:] = [value]
                yield value
        finally:
            if poller is not None:
                poller.cancel()
            self._registry.remove_reconnect_hook(reconnected)
            if client is not None:
                try:
                    async with asyncio.timeout(5):
                        await client.unlisten_config(key.data_id, key.group, changed)
                except (NacosCallError, TimeoutError):
                    pass
