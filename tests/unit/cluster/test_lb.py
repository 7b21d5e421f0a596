from __future__ import annotations

import random
from collections import Counter

import pytest

from agent.cluster.host import Host
from agent.cluster.lb import (
    NO_CONTEXT,
    ConsistentHash,
    ConsistentHashConfig,
    LeastRequest,
    PickContext,
    RoundRobin,
    WeightedRandom,
)
from agent.discovery.types import Instance


def hosts(count: int, weights: list[int] | None = None) -> list[Host]:
    weights = weights or [100] * count
    return [Host(Instance(f"10.0.0.{i}:80", f"10.0.0.{i}", 80, weights[i])) for i in range(count)]


def picks(balancer: object, n: int, context: PickContext = NO_CONTEXT) -> Counter[str]:
    chosen = Counter[str]()
    for _ in range(n):
        host = balancer.choose(context)  # type: ignore[attr-defined]
        assert host is not None
        chosen[host.id] += 1
    return chosen


def test_round_robin_is_even_and_follows_membership() -> None:
    balancer = RoundRobin()
    members = hosts(3)
    balancer.set_hosts(members)
    assert set(picks(balancer, 300).values()) == {100}
    balancer.set_hosts(members[:2])
    assert set(picks(balancer, 200)) == {members[0].id, members[1].id}
    balancer.set_hosts([])
    assert balancer.choose() is None


def test_round_robin_skips_excluded_hosts() -> None:
    balancer = RoundRobin()
    members = hosts(3)
    balancer.set_hosts(members)
    context = PickContext(exclude=frozenset({members[0].id, members[1].id}))
    assert set(picks(balancer, 10, context)) == {members[2].id}
    all_out = PickContext(exclude=frozenset(h.id for h in members))
    assert balancer.choose(all_out) is None


def test_weighted_random_follows_weights() -> None:
    balancer = WeightedRandom(random.Random(7))
    members = hosts(3, [100, 300, 0])
    balancer.set_hosts(members)
    chosen = picks(balancer, 20000)
    assert members[2].id not in chosen  # weight 0 takes no traffic
    ratio = chosen[members[1].id] / chosen[members[0].id]
    assert 2.7 < ratio < 3.3


def test_least_request_prefers_the_less_loaded() -> None:
    balancer = LeastRequest(random.Random(1))
    members = hosts(2)
    members[0].active_requests = 10
    balancer.set_hosts(members)
    # With two hosts, both are always sampled: the idle one always wins.
    assert picks(balancer, 100) == Counter({members[1].id: 100})


def test_least_request_spreads_load_over_many_hosts() -> None:
    balancer = LeastRequest(random.Random(3))
    members = hosts(10)
    balancer.set_hosts(members)
    for _ in range(1000):
        host = balancer.choose()
        assert host is not None
        host.active_requests += 1  # requests that never finish: P2C must keep them level
    loads = [h.active_requests for h in members]
    assert max(loads) - min(loads) <= 10


def test_least_request_honours_exclude() -> None:
    balancer = LeastRequest()
    members = hosts(3)
    balancer.set_hosts(members)
    context = PickContext(exclude=frozenset({members[0].id, members[1].id}))
    assert set(picks(balancer, 20, context)) == {members[2].id}


def keyed(balancer: ConsistentHash, keys: list[bytes]) -> dict[bytes, str]:
    result = {}
    for key in keys:
        host = balancer.choose(PickContext(hash_key=key))
        assert host is not None
        result[key] = host.id
    return result


def test_consistent_hash_is_sticky_and_balanced() -> None:
    balancer = ConsistentHash(ConsistentHashConfig())
    members = hosts(4)
    balancer.set_hosts(members)
    keys = [f"client-{i}".encode() for i in range(4000)]
    first = keyed(balancer, keys)
    assert keyed(balancer, keys) == first
    shares = Counter(first.values())
    assert min(shares.values()) > 4000 / 4 * 0.7


def test_consistent_hash_moves_only_the_leaving_hosts_keys() -> None:
    balancer = ConsistentHash(ConsistentHashConfig())
    members = hosts(4)
    balancer.set_hosts(members)
    keys = [f"k{i}".encode() for i in range(4000)]
    before = keyed(balancer, keys)
    balancer.set_hosts(members[:3])
    after = keyed(balancer, keys)
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k] == members[3].id for k in moved)
    # A host joining takes about its share and nothing else moves between the others.
    balancer.set_hosts(members)
    assert keyed(balancer, keys) == before


def test_consistent_hash_retry_goes_to_another_host() -> None:
    balancer = ConsistentHash(ConsistentHashConfig(virtual_nodes=10))
    members = hosts(3)
    balancer.set_hosts(members)
    first = balancer.choose(PickContext(hash_key=b"x"))
    assert first is not None
    second = balancer.choose(PickContext(hash_key=b"x", exclude=frozenset({first.id})))
    assert second is not None and second.id != first.id
    assert balancer.choose(PickContext(b"x", frozenset(h.id for h in members))) is None


@pytest.mark.parametrize("balancer", [RoundRobin(), WeightedRandom(), LeastRequest()])
def test_empty_cluster_chooses_nothing(balancer: object) -> None:
    assert balancer.choose() is None  # type: ignore[attr-defined]
