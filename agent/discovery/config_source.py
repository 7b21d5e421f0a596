"""Dynamic configuration: keyed documents the agent and the local app read and watch.

A registry plugin whose server also stores configuration (Nacos' config service, a
ZooKeeper node, an etcd key) offers it through :meth:`Registry.config_source`. The agent's
own dynamic settings (routes, weights, timeouts, governance rules) and the OpenAPI's
``/v1/config/{group}/{data_id}`` both read through this one interface, so any of the
registries can hold them.

Keys are Nacos' (group, dataId) pair; ZooKeeper and etcd map them to a path or key of
their own (``{root}/{group}/{data_id}``, documented in docs/registries.md).
"""

from __future__ import annotations

import asyncio
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass

from agent.errors import MeshAgentError

# Nacos' own rule for dataId and group (ParamUtils.isValid): letters, digits and "_-.:".
# Also safe as a ZooKeeper node name and an etcd key segment: no "/", nothing to escape.
_VALID_PART = re.compile(r"[A-Za-z0-9_\-.:]{1,256}")
# Larger than any rule set we expect; Nacos' own default limit is 100 KiB.
MAX_CONTENT_BYTES = 1024 * 1024


class ConfigSourceError(MeshAgentError):
    """The config source refused or could not answer (unreachable, read-only, too large)."""


def check_part(what: str, value: str) -> str:
    if not _VALID_PART.fullmatch(value) or value in {".", ".."}:
        raise ValueError(f"{what} {value!r}: 1 to 256 of letters, digits and '_-.:'")
    return value


@dataclass(frozen=True, slots=True)
class ConfigKey:
    group: str
    data_id: str

    def __post_init__(self) -> None:
        check_part("group", self.group)
        check_part("data_id", self.data_id)

    def __str__(self) -> str:
        return f"{self.group}/{self.data_id}"


@dataclass(frozen=True, slots=True)
class ConfigItem:
    key: ConfigKey
    content: str
    # The source's own revision of this value (Nacos md5, ZooKeeper mzxid, etcd
    # mod_revision), as text: equal versions mean the same content.
    version: str


class ConfigSource(ABC):
    """Keyed text documents with change notification.

    Contract (tests/contract runs it over every implementation):
    - ``get`` of an absent key is None; ``put`` creates or replaces; ``delete`` of an
      absent key is False.
    - ``watch`` yields the current value first (None when absent), then each change, in
      order. Changes coalesce: a reader slower than the writes sees the latest value, not
      a backlog, and never a value older than one it has seen.
    - Losing the server does not end a watch: it resumes when the server is back and
      yields the value then if it changed meanwhile.
    """

    name: str

    @abstractmethod
    async def get(self, key: ConfigKey) -> ConfigItem | None: ...

    @abstractmethod
    async def put(self, key: ConfigKey, content: str) -> ConfigItem: ...

    @abstractmethod
    async def delete(self, key: ConfigKey) -> bool: ...

    @abstractmethod
    def watch(self, key: ConfigKey) -> AsyncIterator[ConfigItem | None]: ...


def check_content(content: str) -> None:
    size = len(content.encode())
    if size > MAX_CONTENT_BYTES:
        raise ConfigSourceError(
            f"config content of {size} bytes is over the {MAX_CONTENT_BYTES} limit"
        )


class LatestValue:
    """One watcher's slot: holds only the newest value, wakes the reader when it changes.

    The building block of coalescing watches: a source sets the slot from its callbacks
    (on the loop) and the watcher's generator waits on it.
    """

    def __init__(self) -> None:
        self._value: ConfigItem | None = None
        self._pending = False
        self._changed = asyncio.Event()

    def set(self, value: ConfigItem | None) -> None:
        self._value = value
        self._pending = True
        self._changed.set()

    async def next(self) -> ConfigItem | None:
        while not self._pending:
            self._changed.clear()
            await self._changed.wait()
        self._pending = False
        return self._value


class MemoryConfigSource(ConfigSource):
    """Configuration held in the agent's memory: the embedded (local) registry's source."""

    def __init__(self, name: str = "local") -> None:
        self.name = name
        self._items: dict[ConfigKey, ConfigItem] = {}
        self._watchers: dict[ConfigKey, set[LatestValue]] = {}
        self._revision = 0

    async def get(self, key: ConfigKey) -> ConfigItem | None:
        return self._items.get(key)

    async def put(self, key: ConfigKey, content: str) -> ConfigItem:
        check_content(content)
        self._revision += 1
        item = ConfigItem(key, content, str(self._revision))
        self._items[key] = item
        self._notify(key, item)
        return item

    async def delete(self, key: ConfigKey) -> bool:
        if self._items.pop(key, None) is None:
            return False
        self._notify(key, None)
        return True

    def _notify(self, key: ConfigKey, value: ConfigItem | None) -> None:
        for slot in self._watchers.get(key, ()):
            slot.set(value)

    async def watch(self, key: ConfigKey) -> AsyncIterator[ConfigItem | None]:
        slot = LatestValue()
        slot.set(self._items.get(key))
        self._watchers.setdefault(key, set()).add(slot)
        try:
            while True:
                yield await slot.next()
        finally:
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.discard(slot)
                if not watchers:
                    del self._watchers[key]
