"""Registrations the local app makes through the agent.

The agent publishes them in the service's registry, which keeps them alive by its own
means (session, lease, heartbeat). A registration made with a TTL must be renewed by the
app (another PUT) within the TTL, or the agent withdraws it: an app that dies stops
heartbeating and stops getting traffic. Without a TTL it stays until DELETE or shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.discovery.registry import Registry
from agent.discovery.types import Registration

log = logging.getLogger(__name__)

_EXPIRY_SLACK_S = 0.05


@dataclass
class Entry:
    registration: Registration
    registry: Registry
    ttl_s: float | None
    renewed_at: float

    def expired(self, now: float) -> bool:
        return self.ttl_s is not None and now - self.renewed_at > self.ttl_s

    def expires_at(self) -> float | None:
        return None if self.ttl_s is None else self.renewed_at + self.ttl_s


class Registrations:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: dict[tuple[str, str], Entry] = {}
        self._clock = clock
        # Set when a TTL may now run out sooner than the expiry task is sleeping for.
        self._sooner = asyncio.Event()

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    async def put(
        self, registration: Registration, registry: Registry, ttl_s: float | None
    ) -> bool:
        """Publish or renew; returns True when it was new (or changed)."""
        key = (registration.service, registration.instance_id)
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None and entry.registration == registration and entry.registry is registry:
            if ttl_s is not None and (entry.ttl_s is None or ttl_s < entry.ttl_s):
                self._sooner.set()
            entry.renewed_at = now
            entry.ttl_s = ttl_s
            return False
        await registry.register(registration)
        self._entries[key] = Entry(registration, registry, ttl_s, now)
        if ttl_s is not None:
            self._sooner.set()
        log.info(
            "registered",
            extra={"service": registration.service, "instance": registration.instance_id},
        )
        return True

    async def delete(self, service: str, instance_id: str) -> bool:
        entry = self._entries.pop((service, instance_id), None)
        if entry is None:
            return False
        await entry.registry.deregister(service, instance_id)
        log.info("deregistered", extra={"service": service, "instance": instance_id})
        return True

    def next_expiry(self) -> float | None:
        """When the earliest TTL runs out (on the clock), None when no entry has one."""
        return min(
            (at for entry in self._entries.values() if (at := entry.expires_at()) is not None),
            default=None,
        )

    async def until_expiry(self) -> None:
        """Returns once a TTL may have run out. Sleeps on one timer for the earliest (an
        agent without TTL registrations never wakes for them), and sooner when a
        registration with an earlier expiry arrives."""
        while True:
            self._sooner.clear()
            at = self.next_expiry()
            # A little past the expiry: ``expired`` is strict.
            timeout = None if at is None else max(0.0, at - self._clock()) + _EXPIRY_SLACK_S
            try:
                await asyncio.wait_for(self._sooner.wait(), timeout)
            except TimeoutError:
                return

    async def expire(self) -> list[Entry]:
        now = self._clock()
        expired = [entry for entry in self._entries.values() if entry.expired(now)]
        for entry in expired:
            log.warning(
                "registration expired: the app did not renew it within its TTL",
                extra={
                    "service": entry.registration.service,
                    "instance": entry.registration.instance_id,
                },
            )
            await self.delete(entry.registration.service, entry.registration.instance_id)
        return expired

    async def delete_all(self) -> None:
        for service, instance_id in list(self._entries):
            try:
                await self.delete(service, instance_id)
            except Exception:  # one failing registry must not keep the others registered
                log.exception("deregistration failed", extra={"service": service})
