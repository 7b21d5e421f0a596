from __future__ import annotations

import logging

import pytest

from agent.cluster.cluster import Cluster, HealthPolicy
from agent.cluster.lb import RoundRobin
from agent.cluster.outlier import OutlierPolicy
from agent.discovery.types import Add, Instance, Remove, Reset


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def inst(name: str, revision: int, port: int = 80) -> Instance:
    return Instance(name, "127.0.0.1", port, revision=revision)


def make(clock: Clock | None = None, **outlier: object) -> Cluster:
    policy = OutlierPolicy(**outlier) if outlier else OutlierPolicy()  # type: ignore[arg-type]
    return Cluster("svc", RoundRobin(), policy, HealthPolicy(1, 1), clock or Clock())


def chosen_ids(cluster: Cluster, n: int = 20) -> set[str]:
    ids = set()
    for _ in range(n):
        host = cluster.choose()
        assert host is not None
        ids.add(host.id)
    return ids


def test_reset_add_remove_follow_the_registry() -> None:
    cluster = make()
    assert not cluster.initialized
    cluster.apply(Reset(5, (inst("a", 1), inst("b", 2))))
    assert cluster.initialized and cluster.revision == 5
    assert chosen_ids(cluster) == {"a", "b"}
    cluster.apply(Add(6, inst("c", 6)))
    cluster.apply(Remove(7, "a", registration_revision=1))
    assert chosen_ids(cluster) == {"b", "c"}
    assert cluster.revision == 7


def test_a_stale_remove_never_drops_the_live_registration() -> None:
    # A provider restarted on the same ip:port registers again, then its old node goes.
    cluster = make()
    cluster.apply(Reset(1, (inst("10.0.0.1:20880", 1),)))
    cluster.apply(Add(9, inst("10.0.0.1:20880", 9)))
    cluster.apply(Remove(10, "10.0.0.1:20880", registration_revision=1))
    host = cluster.get("10.0.0.1:20880")
    assert host is not None and host.instance.revision == 9
    cluster.apply(Remove(11, "10.0.0.1:20880", registration_revision=9))
    assert cluster.get("10.0.0.1:20880") is None


def test_a_stale_add_does_not_replace_a_newer_registration() -> None:
    cluster = make()
    cluster.apply(Reset(9, (inst("a", 9),)))
    cluster.apply(Add(10, inst("a", 3)))
    host = cluster.get("a")
    assert host is not None and host.instance.revision == 9


def test_reset_keeps_the_state_of_unchanged_registrations() -> None:
    cluster = make()
    cluster.apply(Reset(1, (inst("a", 1), inst("b", 2))))
    a = cluster.get("a")
    assert a is not None
    a.times_ejected = 2
    cluster.apply(Reset(3, (inst("a", 1), inst("b", 3))))
    assert cluster.get("a") is a
    b = cluster.get("b")
    assert b is not None and b.instance.revision == 3


def test_ejected_host_leaves_rotation_and_comes_back_by_itself(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "agent.cluster.cluster")
    clock = Clock()
    cluster = make(clock, consecutive_failures=2, base_ejection_s=30)
    cluster.apply(Reset(1, (inst("a", 1), inst("b", 2))))
    a = cluster.get("a")
    assert a is not None
    cluster.report_failure(a, connect=True)
    assert chosen_ids(cluster) == {"a", "b"}
    cluster.report_failure(a, connect=True)
    assert chosen_ids(cluster) == {"b"}
    assert a.stats.connect_failures == 2 and a.stats.ejections == 1
    clock.now = 29.9
    assert chosen_ids(cluster) == {"b"}
    assert cluster.available_count() == 1
    clock.now = 30.0
    assert chosen_ids(cluster) == {"a", "b"}
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("endpoint ejected") == 1
    assert messages.count("endpoint back from ejection") == 1


def test_panic_mode_balances_over_all_when_none_is_available() -> None:
    cluster = make()
    cluster.apply(Reset(1, (inst("a", 1), inst("b", 2))))
    for host in cluster.hosts():
        cluster.report_probe(host, ok=False)
    assert cluster.panic
    assert chosen_ids(cluster) == {"a", "b"}
    a = cluster.get("a")
    assert a is not None
    cluster.report_probe(a, ok=True)
    assert not cluster.panic
    assert chosen_ids(cluster) == {"a"}


def test_outcomes_of_a_replaced_host_are_ignored() -> None:
    cluster = make(consecutive_failures=1)
    cluster.apply(Reset(1, (inst("a", 1), inst("b", 1))))
    old = cluster.get("a")
    assert old is not None
    cluster.apply(Add(2, inst("a", 2)))
    cluster.report_failure(old)
    new = cluster.get("a")
    assert new is not None and new is not old and not new.ejected(0)


def test_listeners_hear_every_rebalance() -> None:
    cluster = make()
    seen: list[int] = []
    cluster.listeners.append(lambda c: seen.append(len(c.hosts())))
    cluster.apply(Reset(1, (inst("a", 1),)))
    cluster.apply(Add(2, inst("b", 2)))
    assert seen == [1, 2]


def test_a_draining_endpoint_gets_no_new_requests_until_its_process_is_gone() -> None:
    # Issue 27: a provider that said READONLY is out of the choice for every path at once.
    cluster = make()
    cluster.apply(Reset(1, (inst("a", 1), inst("b", 1))))
    (a,) = [host for host in cluster.hosts() if host.id == "a"]
    a.set_draining(True)
    assert chosen_ids(cluster) == {"b"}
    assert a.stats.drains == 1 and cluster.available_count() == 1
    a.set_draining(False)  # the process that said it is gone: its address starts fresh
    assert chosen_ids(cluster) == {"a", "b"}
    # A host the registry added later is watched the same way.
    cluster.apply(Add(2, inst("c", 2)))
    (c,) = [host for host in cluster.hosts() if host.id == "c"]
    c.set_draining(True)
    assert "c" not in chosen_ids(cluster)
    # Every endpoint draining: balanced over all rather than failing (panic mode).
    for host in cluster.hosts():
        host.set_draining(True)
    assert chosen_ids(cluster, 30) == {"a", "b", "c"}
