from __future__ import annotations

from agent.cluster.host import Host
from agent.cluster.outlier import OutlierPolicy, record_failure, record_success
from agent.discovery.types import Instance

POLICY = OutlierPolicy(consecutive_failures=3, base_ejection_s=10, max_ejection_s=25)


def make(n: int) -> list[Host]:
    return [Host(Instance(f"h{i}", "127.0.0.1", 1000 + i)) for i in range(n)]


def test_consecutive_failures_eject_then_host_returns_by_itself() -> None:
    hosts = make(2)
    host = hosts[0]
    assert record_failure(host, hosts, POLICY, now=0) is None
    assert record_failure(host, hosts, POLICY, now=0) is None
    assert record_failure(host, hosts, POLICY, now=0) == 10
    assert host.ejected(5) and not host.available(5)
    assert not host.ejected(10) and host.available(10)


def test_a_success_resets_the_count() -> None:
    hosts = make(2)
    for _ in range(2):
        record_failure(hosts[0], hosts, POLICY, now=0)
    record_success(hosts[0])
    for _ in range(2):
        assert record_failure(hosts[0], hosts, POLICY, now=0) is None
    assert not hosts[0].ejected(0)


def test_ejection_grows_with_each_ejection_and_is_capped() -> None:
    hosts = make(2)
    host = hosts[0]
    ends = []
    now = 0.0
    for _ in range(3):
        for _ in range(3):
            until = record_failure(host, hosts, POLICY, now)
        assert until is not None
        ends.append(until - now)
        now = until
    assert ends == [10, 20, 25]


def test_never_more_than_max_percent_but_at_least_one() -> None:
    hosts = make(4)
    policy = OutlierPolicy(consecutive_failures=1, max_ejection_percent=10)
    assert record_failure(hosts[0], hosts, policy, now=0) is not None
    # 10% of 4 hosts rounds down to 0; one is allowed anyway, a second is not.
    assert record_failure(hosts[1], hosts, policy, now=0) is None
    wide = OutlierPolicy(consecutive_failures=1, max_ejection_percent=50)
    assert record_failure(hosts[1], hosts, wide, now=0) is not None
    assert record_failure(hosts[2], hosts, wide, now=0) is None


def test_disabled_policy_never_ejects() -> None:
    hosts = make(2)
    policy = OutlierPolicy(enabled=False, consecutive_failures=1)
    for _ in range(10):
        assert record_failure(hosts[0], hosts, policy, now=0) is None
    # Counted (the cluster counts failures in its statistics), never ejected.
    assert hosts[0].consecutive_failures == 10
    assert hosts[0].stats.ejections == 0
