from __future__ import annotations

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
