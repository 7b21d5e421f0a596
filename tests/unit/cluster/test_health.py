from __future__ import annotations

from agent.cluster.health import record_probe
from agent.cluster.host import Host
from agent.discovery.types import Instance


def test_thresholds_decide_each_flip() -> None:
    host = Host(Instance("a", "127.0.0.1", 1))
    assert host.healthy
    assert not record_probe(host, False, healthy_threshold=2, unhealthy_threshold=3)
    assert not record_probe(host, False, 2, 3)
    assert record_probe(host, False, 2, 3)
    assert not host.healthy
    assert not record_probe(host, True, 2, 3)
    assert record_probe(host, True, 2, 3)
    assert host.healthy


def test_an_agreeing_probe_resets_the_streak() -> None:
    host = Host(Instance("a", "127.0.0.1", 1))
    record_probe(host, False, 1, 2)
    record_probe(host, True, 1, 2)
    assert not record_probe(host, False, 1, 2)
    assert host.healthy
