"""etcd keys as a :class:`ConfigSource`, on the registry's current connection.

A key is ``{config_prefix}/{group}/{data_id}`` (``/dubbo/config`` by default: Dubbo's etcd
config center layout), its content the value as UTF-8, its version the key's mod_revision.
Plain keys, no lease: configuration outlives the agent. A watch reads the key, then watches it
from the next revision on a stream of its own; when the connection goes (or a compaction
cancels the watch) it waits for the registry's next session and reads again, yielding the value
only if it changed meanwhile.
"""

from __future__ import annotations

import asyncio
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
from plugins.etcd.client import TRANSIENT, EtcdConnection
from plugins.etcd.state import KeyValue

if TYPE_CHECKING:
    from plugins.etcd.registry import EtcdRegistry

log = logging.getLogger(__name__)


class EtcdConfigSource(ConfigSource):
    name = "etcd"

    def __init__(self, registry: EtcdRegistry) -> None:
        self._registry = registry
        self._prefix = registry.config.config_prefix

    def key_bytes(self, key: ConfigKey) -> bytes:
        # ConfigKey parts are letters, digits and "_-.:": no "/" to escape.
        return f"{self._prefix}/{key.group}/{key.data_id}".encode()

    def _conn(self) -> EtcdConnection:
        conn = self._registry.connection
        if conn is None:
            raise ConfigSourceError(f"etcd not connected: {self._registry.status().detail}")
        return conn

    @staticmethod
    def _item(key: ConfigKey, kv: KeyValue | None) -> ConfigItem | None:
        if kv is None:
            return None
        return ConfigItem(key, kv.value.decode("utf-8", "replace"), str(kv.mod_revision))

    async def get(self, key: ConfigKey) -> ConfigItem | None:
        try:
            kv, _ = await self._conn().get(self.key_bytes(key))
        except TRANSIENT as exc:
            raise ConfigSourceError(f"etcd get {key}: {exc!r}") from exc
        return self._item(key, kv)

    async def put(self, key: ConfigKey, content: str) -> ConfigItem:
        check_content(content)
        try:
            revision = await self._conn().put(self.key_bytes(key), content.encode())
        except TRANSIENT as exc:
            raise ConfigSourceError(f"etcd put {key}: {exc!r}") from exc
        return ConfigItem(key, content, str(revision))

    async def delete(self, key: ConfigKey) -> bool:
        try:
            return await self._conn().delete(self.key_bytes(key))
        except TRANSIENT as exc:
            raise ConfigSourceError(f"etcd delete {key}: {exc!r}") from exc

    async def watch(self, key: ConfigKey) -> AsyncIterator[ConfigItem | None]:
        slot = LatestValue()
        follower = asyncio.ensure_future(self._follow(key, slot))
        try:
            while True:
                yield await slot.next()
        finally:
            follower.cancel()

    async def _follow(self, key: ConfigKey, slot: LatestValue) -> None:
        raw = self.key_bytes(key)
        shown: list[ConfigItem | None] = []  # empty until the first value is yielded
        while True:
            conn = await self._registry.wait_connection()
            stream = None
            try:
                kv, revision = await conn.get(raw)
                item = self._item(key, kv)
                if not shown or shown[0] != item:
                    shown[:] = [item]
                    slot.set(item)
                stream = conn.watch()
                await stream.create(raw, revision + 1, exact=True)
                while True:
                    reply = await stream.read()
                    if reply.canceled:  # compacted past our revision: read again
                        break
                    for event in reply.events:
                        item = None if event.kind == "delete" else self._item(key, event.kv)
                        shown[:] = [item]
                        slot.set(item)
            except TRANSIENT as exc:
                log.info("config watch %s: %r; resuming on the next session", key, exc)
                await asyncio.sleep(self._registry.config.reconnect.base_s)  # backoff floor
            finally:
                if stream is not None:
                    stream.close()
