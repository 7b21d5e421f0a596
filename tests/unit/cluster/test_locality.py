from __future__ import annotations

from collections import Counter

import pytest

from agent.cluster.cluster import Cluster, HealthPolicy
from agent.cluster.host import Host
from agent.cluster.lb import LeastRequest, PickContext, RoundRobin
from agent.cluster.locality import Locality, PriorityLevels, priority_loads
from agent.cluster.outlier import OutlierPolicy
from agent.discovery.types import Instance, Reset

HERE = Locality(dc="a", region="eu", zone="eu-1")


def host(name: str, **labels: str) -> Host:
    return Host(Instance(name, "127.0.0.1", 80, metadata=labels))


@pytest.mark.parametrize(
    ("labels", "level"),
    [
        ({"dc": "a", "region": "eu", "zone": "eu-1"}, 0),
        ({"dc": "a", "region": "eu", "zone": "eu-2"}, 1),
        ({"dc": "a", "region": "us", "zone": "us-1"}, 2),
        ({"dc": "b", "region": "eu", "zone": "eu-1"}, 3),
        ({}, 0),  # no labels: the agent's own place
        ({"zone": "eu-2"}, 1),
        ({"dc": "b"}, 3),
    ],
)
def test_an_endpoint_level_is_the_widest_place_it_shares(
    labels: dict[str, str], level: int
) -> None:
    assert HERE.level_of(labels) == level


def test_an_agent_without_a_place_puts_everything_in_level_0() -> None:
    assert Locality().level_of({"dc": "b", "region": "x", "zone": "y"}) == 0
    assert Locality(zone="eu-1").level_of({"dc": "b", "zone": "eu-1"}) == 0


def test_loads_follow_envoys_priority_load() -> None:
    assert priority_loads([(5, 5), (3, 3)], 1.4) == [1.0, 0.0]
    # 4 of 5 available: 1.4 * 0.8 ≥ 1, no spill (the overprovisioning factor)
    assert priority_loads([(5, 4), (3, 3)], 1.4) == [1.0, 0.0]
    # 1 of 5 available: health 0.28, the rest to the next level
    assert priority_loads([(5, 1), (3, 3)], 1.4) == pytest.approx([0.28, 0.72])
    # an empty level is skipped
    assert priority_loads([(0, 0), (2, 1), (4, 4)], 1.4) == pytest.approx([0, 0.7, 0.3])
    # healths below 1 in total are scaled up (normalised)
    assert priority_loads([(10, 1), (10, 2)], 1.0) == pytest.approx([1 / 3, 2 / 3])
    assert priority_loads([(3, 0), (2, 0)], 1.4) == [0.0, 0.0]


def picks(levels: PriorityLevels, count: int) -> Counter[str]:
    chosen = Counter[str]()
    for _ in range(count):
        picked = levels.choose()
        assert picked is not None
        chosen[picked.id] += 1
    return chosen


def test_traffic_stays_near_then_spills_in_proportion() -> None:
    local = [host(f"a{i}", dc="a", region="eu", zone="eu-1") for i in range(5)]
    remote = [host(f"b{i}", dc="b") for i in range(2)]
    levels = PriorityLevels(HERE, RoundRobin)
    levels.set_hosts(local + remote, now=0.0)
    assert set(picks(levels, 50)) == {h.id for h in local}

    for unhealthy in local[1:]:  # 80% of the local zone fails its checks
        unhealthy.healthy = False
    levels.set_hosts(local + remote, now=0.0)
    assert levels.loads == pytest.approx([0.28, 0, 0, 0.72])
    chosen = picks(levels, 100)  # smooth round robin: exact over any period (25 here)
    assert chosen == {"a0": 28, "b0": 36, "b1": 36}

    for recovered in local:
        recovered.healthy = True
    levels.set_hosts(local + remote, now=0.0)
    assert set(picks(levels, 50)) == {h.id for h in local}


def test_local_only_never_sends_to_another_data_center() -> None:
    local, remote = host("a0", zone="eu-1"), host("b0", dc="b")
    levels = PriorityLevels(HERE, RoundRobin, cross_dc=False)
    levels.set_hosts([local, remote], now=0.0)
    assert levels.level("b0") is None and levels.level("a0") == 0
    local.healthy = False
    levels.set_hosts([local, remote], now=0.0)
    # Panic among the local endpoints only: the remote one stays out.
    assert levels.panic and {levels.choose().id for _ in range(4)} == {"a0"}  # type: ignore[union-attr]
    levels.set_hosts([remote], now=0.0)
    assert levels.choose() is None and not levels.panic


def test_nothing_available_anywhere_balances_over_the_nearest_level() -> None:
    near = [host("a0", zone="eu-1"), host("a1", zone="eu-1")]
    far = [host("b0", dc="b")]
    for h in near + far:
        h.ejected_until = 10.0
    levels = PriorityLevels(HERE, RoundRobin)
    levels.set_hosts(near + far, now=1.0)
    assert levels.panic and levels.available == [0, 0, 0, 0]
    assert set(picks(levels, 4)) == {"a0", "a1"}


def test_a_retry_past_every_near_endpoint_goes_to_the_next_level() -> None:
    near, far = host("a0", zone="eu-1"), host("c0", zone="eu-3")
    levels = PriorityLevels(HERE, RoundRobin)
    levels.set_hosts([near, far], now=0.0)
    retry = levels.choose(PickContext(exclude=frozenset({"a0"})))
    assert retry is not None and retry.id == "c0"
    assert levels.choose(PickContext(exclude=frozenset({"a0", "c0"}))) is None


def test_each_level_has_its_own_balancer_of_the_cluster_policy() -> None:
    levels = PriorityLevels(HERE, LeastRequest)
    a0, a1 = host("a0"), host("a1")
    levels.set_hosts([a0, a1], now=0.0)
    a0.active_requests = 50
    assert {levels.choose().id for _ in range(10)} == {"a1"}  # type: ignore[union-attr]
    levels.set_balancer_factory(RoundRobin)
    levels.set_hosts([a0, a1], now=0.0)
    assert set(picks(levels, 4)) == {"a0", "a1"}


def test_a_cluster_with_levels_follows_ejections() -> None:
    now = [0.0]
    cluster = Cluster(
        "svc",
        RoundRobin(),
        OutlierPolicy(consecutive_failures=1, max_ejection_percent=100),
        HealthPolicy(1, 1),
        lambda: now[0],
        levels=PriorityLevels(HERE, RoundRobin),
    )
    cluster.apply(
        Reset(
            1,
            (
                Instance("a0", "127.0.0.1", 1, metadata={"zone": "eu-1"}, revision=1),
                Instance("b0", "127.0.0.1", 2, metadata={"dc": "b"}, revision=1),
            ),
        )
    )
    assert {cluster.choose().id for _ in range(5)} == {"a0"}  # type: ignore[union-attr]
    a0 = cluster.get("a0")
    assert a0 is not None
    cluster.report_failure(a0)  # ejected: the remote level takes the calls
    assert {cluster.choose().id for _ in range(5)} == {"b0"}  # type: ignore[union-attr]
    now[0] = 1000.0  # the ejection is over
    assert {cluster.choose().id for _ in range(5)} == {"a0"}  # type: ignore[union-attr]
    cluster.set_balancer(LeastRequest, "least_request")
    assert cluster.lb_policy == "least_request" and cluster.choose() is not None
