from __future__ import annotations

from agent.cluster.host import Host
from agent.discovery.types import Instance


def test_available_needs_healthy_and_not_ejected() -> None:
    host = Host(Instance("a", "127.0.0.1", 1, weight=7))
    assert host.id == "a" and host.weight == 7
    assert host.available(0)
    host.ejected_until = 5
    assert not host.available(4) and host.available(5)
    host.healthy = False
    assert not host.available(6)
