from __future__ import annotations

from agent.discovery.registry import Subscription
from agent.discovery.types import Add, Instance, Remove, Reset, ServiceKey


async def test_subscription_yields_updates_in_order_until_closed() -> None:
    closed: list[Subscription] = []
    subscription = Subscription(ServiceKey("svc"), closed.append)
    updates = [Reset(1, ()), Add(2, Instance("a", "h", 1, revision=2)), Remove(3, "a", 2)]
    for update in updates:
        subscription.push(update)
    subscription.close()
    subscription.push(Reset(4, ()))  # after close: dropped
    assert [u async for u in subscription] == updates
    assert closed == [subscription] and subscription.closed


def test_service_keys_compare_by_name_and_attributes() -> None:
    a = ServiceKey("svc", {"version": "1.0"})  # type: ignore[arg-type]
    b = ServiceKey("svc", {"version": "1.0"})  # type: ignore[arg-type]
    assert a == b and hash(a) == hash(b)
    assert a != ServiceKey("svc")
