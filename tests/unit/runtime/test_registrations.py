from __future__ import annotations

import asyncio
import time

from agent.discovery.types import Registration, ServiceKey
from agent.runtime.registrations import Registrations
from plugins.local import LocalRegistry, LocalRegistryConfig


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_ttl_registrations_expire_unless_renewed() -> None:
    clock = Clock()
    registry = LocalRegistry(LocalRegistryConfig())
    registrations = Registrations(clock)
    kept = Registration("svc", "kept", "127.0.0.1", 1)
    lapsing = Registration("svc", "lapsing", "127.0.0.1", 2)
    forever = Registration("svc", "forever", "127.0.0.1", 3)
    assert await registrations.put(kept, registry, ttl_s=10)
    assert await registrations.put(lapsing, registry, ttl_s=10)
    assert await registrations.put(forever, registry, ttl_s=None)
    clock.now = 8
    assert not await registrations.put(kept, registry, ttl_s=10)  # a renewal, not new
    clock.now = 15
    expired = await registrations.expire()
    assert [e.registration.instance_id for e in expired] == ["lapsing"]
    assert sorted(e.registration.instance_id for e in registrations.entries()) == [
        "forever",
        "kept",
    ]
    subscription = registry.subscribe(ServiceKey("svc"))
    reset = subscription._queue.get_nowait()
    assert sorted(i.id for i in reset.instances) == ["forever", "kept"]  # type: ignore[union-attr]


async def test_delete_all_deregisters_everything() -> None:
    registry = LocalRegistry(LocalRegistryConfig())
    registrations = Registrations()
    await registrations.put(Registration("svc", "a", "127.0.0.1", 1), registry, None)
    assert not await registrations.delete("svc", "missing")
    await registrations.delete_all()
    assert registrations.entries() == []
    assert registry.known_services() == []


async def test_the_expiry_timer_sleeps_without_ttls_and_wakes_for_a_new_one() -> None:
    registry = LocalRegistry(LocalRegistryConfig())
    registrations = Registrations()
    await registrations.put(Registration("svc", "forever", "127.0.0.1", 1), registry, None)
    assert registrations.next_expiry() is None
    waiting = asyncio.create_task(registrations.until_expiry())
    await asyncio.sleep(0)  # the task is now parked on no timer at all
    assert not waiting.done()
    # A short TTL arrives: the task wakes for it and returns once it may have run out.
    await registrations.put(Registration("svc", "brief", "127.0.0.1", 2), registry, 0.01)
    at = registrations.next_expiry()
    assert at is not None
    await asyncio.wait_for(waiting, 5)
    assert time.monotonic() > at
    assert [e.registration.instance_id for e in await registrations.expire()] == ["brief"]
