from __future__ import annotations

from agent.discovery.registry import Subscription
from agent.discovery.types import Add, Registration, Remove, Reset, ServiceKey
from plugins.local import PLUGIN, LocalRegistry


def registry() -> LocalRegistry:
    config = {"services": {"echo": [{"host": "127.0.0.1", "port": 9000, "weight": 50}]}}
    built = PLUGIN.build(config, "registries[0].config")
    assert isinstance(built, LocalRegistry)
    return built


def drain(subscription: Subscription) -> list[object]:
    updates = []
    while not subscription._queue.empty():
        updates.append(subscription._queue.get_nowait())
    return updates


async def test_declared_services_arrive_as_the_first_reset() -> None:
    local = registry()
    await local.start()
    (reset,) = drain(local.subscribe(ServiceKey("echo")))
    assert isinstance(reset, Reset)
    (instance,) = reset.instances
    assert (instance.id, instance.port, instance.weight) == ("127.0.0.1:9000", 9000, 50)
    assert local.known_services() == ["echo"]
    assert local.status().connected


async def test_registrations_are_added_and_removed_with_growing_revisions() -> None:
    local = registry()
    subscription = local.subscribe(ServiceKey("echo"))
    other = local.subscribe(ServiceKey("other"))
    await local.register(Registration("echo", "app-1", "127.0.0.1", 9100, protocol="http"))
    await local.deregister("echo", "app-1")
    await local.deregister("echo", "never-registered")
    reset, add, remove = drain(subscription)
    assert isinstance(add, Add) and isinstance(remove, Remove)
    assert add.instance.metadata["protocol"] == "http"
    assert reset.revision < add.revision < remove.revision
    assert remove.registration_revision == add.instance.revision
    assert [type(u) for u in drain(other)] == [Reset]


async def test_close_ends_every_subscription() -> None:
    local = registry()
    subscription = local.subscribe(ServiceKey("echo"))
    await local.close()
    assert subscription.closed
    assert [type(u) async for u in subscription] == [Reset]
