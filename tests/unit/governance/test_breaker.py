from __future__ import annotations

from agent.governance.breaker import ClusterLoad, connection_allowed, over_limit
from agent.governance.rules import BreakerLimits


def test_limits_refuse_at_the_limit_not_before() -> None:
    limits = BreakerLimits(max_in_flight=2, max_pending=1, max_connections=1)
    load = ClusterLoad(in_flight=1)
    assert over_limit(limits, load) is None
    load.in_flight = 2
    assert "max_in_flight 2" in (over_limit(limits, load) or "")
    load.in_flight, load.pending = 0, 1
    assert "max_pending 1" in (over_limit(limits, load) or "")
    assert connection_allowed(limits, ClusterLoad(connections=0))
    assert not connection_allowed(limits, ClusterLoad(connections=1))


def test_no_limits_never_refuse() -> None:
    load = ClusterLoad(in_flight=10**6, pending=10**6, connections=10**6)
    assert over_limit(None, load) is None and over_limit(BreakerLimits(), load) is None
    assert connection_allowed(BreakerLimits(), load)
