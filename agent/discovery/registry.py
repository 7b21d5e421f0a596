"""The registry plugin interface and the subscription stream every registry hands out."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable

from agent.discovery.config_source import ConfigSource
from agent.discovery.types import Registration, RegistryStatus, ServiceKey, Update


class Subscription:
    """An ordered, unbounded stream of updates for one service.

    The registry pushes from its own callbacks (on the loop); the cluster consumes with
    ``async for``. Unbounded on purpose: a registry must never block on a slow consumer,
    and updates are small and collapse at the consumer.
    """

    def __init__(self, key: ServiceKey, on_close: Callable[[Subscription], None]) -> None:
        self.key = key
        self._queue: asyncio.Queue[Update | None] = asyncio.Queue()
        self._on_close = on_close
        self._closed = False

    def push(self, update: Update) -> None:
        if not self._closed:
            self._queue.put_nowait(update)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(None)
            self._on_close(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def __aiter__(self) -> AsyncIterator[Update]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Update]:
        while True:
            update = await self._queue.get()
            if update is None:
                return
            yield update


class Registry(ABC):
    """A registry plugin's product.

    Contract:
    - ``subscribe`` returns at once; the first update is a ``Reset`` once the registry has
      answered (possibly with no instances), then ``Add``/``Remove`` in registry order.
    - Losing the registry connection never emits an empty ``Reset``: the last known
      instances stay, and ``status()`` reports the loss and since when.
    - ``register`` keeps the registration alive (session, lease, heartbeat) across
      reconnects until ``deregister`` or ``close``.
    """

    name: str

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None:
        """Remove this agent's registrations and close every subscription."""

    @abstractmethod
    def subscribe(self, key: ServiceKey) -> Subscription: ...

    @abstractmethod
    async def register(self, registration: Registration) -> None: ...

    @abstractmethod
    async def deregister(self, service: str, instance_id: str) -> None: ...

    @abstractmethod
    def status(self) -> RegistryStatus: ...

    def known_services(self) -> list[str]:
        """Services this registry can name without a subscription (may be empty)."""
        return []

    def config_source(self) -> ConfigSource | None:
        """The configuration this registry's server also stores, or None (the default).

        Valid after ``start``; it shares the registry's connection (one session, lease or
        gRPC channel per server, not two).
        """
        return None
