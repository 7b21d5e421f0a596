from __future__ import annotations

import random
from typing import Any

import pytest

from agent.calls import Call, CallRejected, Calls, Direction, Outcome
from agent.governance.policy import Degraded, GovernancePolicy, decision_of
from agent.governance.retry import Failure, FailureKind
from agent.governance.rules import RuleSet


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def hub(document: dict[str, Any], seed: int = 3) -> tuple[Calls, GovernancePolicy, Clock]:
    clock = Clock()
    policy = GovernancePolicy(RuleSet.model_validate(document), "a", clock, random.Random(seed))
    calls = Calls("app", "", clock)
    calls.policies.append(policy)
    calls.observers.append(policy)
    return calls, policy, clock


def start(calls: Calls, target: str = "svc", method: str = "m", timeout_s: float = 5) -> Call:
    return calls.start(
        "test", Direction.INVOKE, calls.outbound_route(target, method), None, timeout_s
    )


def test_no_rule_leaves_nothing_on_the_call() -> None:
    calls, policy, _ = hub({"rules": [{"match": {"to": "other"}, "timeout_ms": 1}]})
    call = start(calls)
    assert decision_of(call) is None and call.state == {}
    assert policy.counters.governed == 0


def test_rate_limit_refuses_past_the_burst_and_counts() -> None:
    calls, policy, clock = hub(
        {"rules": [{"match": {"to": "svc"}, "rate_limit": {"per_s": 2, "burst": 2}}]}
    )
    start(calls), start(calls)
    with pytest.raises(CallRejected) as caught:
        start(calls)
    assert caught.value.reason == "rate_limited" and "rules.0" in str(caught.value)
    assert policy.counters.rate_limited == 1
    clock.now += 0.5
    start(calls)
    # another service is not limited
    start(calls, target="other")


def test_circuit_breaker_counts_in_flight_and_pending_until_calls_finish() -> None:
    calls, policy, _ = hub({"circuit_breakers": {"svc": {"max_in_flight": 2, "max_pending": 1}}})
    first = start(calls)
    with pytest.raises(CallRejected, match="pending") as caught:
        start(calls)  # the first has no attempt yet: pending 1
    assert caught.value.reason == "overloaded"
    first.begin_attempt("h:1")
    second = start(calls)
    second.begin_attempt("h:2")
    with pytest.raises(CallRejected, match="in flight"):
        start(calls)
    first.finish(Outcome.OK)
    third = start(calls)
    assert policy.load("svc").in_flight == 2
    third.fail(RuntimeError("x"))
    second.finish(Outcome.OK)
    assert policy.load("svc").in_flight == 0 and policy.load("svc").pending == 0
    assert policy.counters.overloaded == 2 and policy.load("svc").overflows == 2


def test_degrade_always_or_only_when_overloaded() -> None:
    calls, policy, _ = hub({"rules": [{"match": {"method": "m"}, "degrade": {"value": {"v": 1}}}]})
    with pytest.raises(Degraded) as caught:
        start(calls)
    assert caught.value.has_value and caught.value.value == {"v": 1}
    calls, policy, _ = hub(
        {
            "rules": [
                {
                    "match": {"to": "svc"},
                    "rate_limit": {"per_s": 1, "burst": 1},
                    "degrade": {"when": "overloaded", "mode": "error", "status": 418},
                }
            ]
        }
    )
    start(calls)
    with pytest.raises(Degraded) as over:
        start(calls)
    assert not over.value.has_value and over.value.status == 418
    assert policy.counters.degraded == 1 and policy.counters.rate_limited == 1


def test_degraded_calls_are_recorded_as_degraded() -> None:
    calls, _, _ = hub({"rules": [{"degrade": {"value": None}}]})
    seen: list[Call] = []

    class Watch(GovernancePolicy):
        def call_finished(self, call: Call) -> None:
            seen.append(call)

    calls.observers.append(Watch())
    with pytest.raises(Degraded):
        start(calls)
    assert seen[0].outcome == Outcome.DEGRADED


def test_fault_injection_aborts_and_delays_a_share() -> None:
    calls, policy, _ = hub(
        {
            "rules": [
                {
                    "fault": {
                        "abort": {"percent": 25, "status": 503},
                        "delay": {"percent": 50, "ms": 100},
                    }
                }
            ]
        }
    )
    aborted = delayed = 0
    for _ in range(2000):
        try:
            call = start(calls)
        except CallRejected as exc:
            assert exc.reason == "fault" and exc.status == 503
            aborted += 1
            continue
        decision = decision_of(call)
        assert decision is not None
        delayed += decision.delay_s == 0.1
    assert 440 < aborted < 560
    assert 0.45 < delayed / (2000 - aborted) < 0.55
    assert policy.counters.fault_aborts == aborted and policy.counters.fault_delays == delayed


def test_timeout_shortens_but_never_lengthens_the_deadline() -> None:
    calls, _, clock = hub({"rules": [{"timeout_ms": 200}]})
    assert start(calls, timeout_s=5).deadline == pytest.approx(clock.now + 0.2)
    assert start(calls, timeout_s=0.1).deadline == pytest.approx(clock.now + 0.1)


def test_retries_follow_the_rule_and_the_budget() -> None:
    calls, policy, _ = hub(
        {"rules": [{"retry": {"attempts": 3, "budget": {"ratio": 0.2}, "backoff_base_ms": 0}}]}
    )
    failure = Failure(FailureKind.CONNECT, sent=False)
    retries = 0
    for _ in range(100):
        decision = decision_of(start(calls))
        assert decision is not None and decision.retry_attempts == 3
        while (delay := decision.retry_after(failure)) is not None:
            assert delay == 0
            retries += 1
        assert decision.retries <= 3
    assert retries == 20  # 0.2 x 100 calls
    assert policy.counters.retries == 20 and policy.counters.retries_over_budget == 100


def test_set_rules_swaps_the_table_and_keeps_loads() -> None:
    calls, policy, _ = hub({"circuit_breakers": {"svc": {"max_in_flight": 1}}})
    held = start(calls)
    policy.set_rules(
        RuleSet.model_validate({"rules": [{"match": {"to": "svc"}, "timeout_ms": 10}]}),
        "meshagent/app.rules",
        "7",
    )
    assert policy.state.version == "7" and policy.state.source == "meshagent/app.rules"
    effective = policy.effective(calls.outbound_route("svc", "m"))
    assert effective is not None and effective.timeout_s == 0.01
    start(calls)  # no breaker any more
    held.finish(Outcome.OK)
    assert policy.load("svc").in_flight == 0


def test_subset_is_drawn_once_per_call() -> None:
    calls, _, _ = hub(
        {
            "rules": [
                {
                    "traffic": {
                        "subsets": [
                            {"name": "a", "labels": {"v": "1"}, "weight": 50},
                            {"name": "b", "labels": {"v": "2"}, "weight": 50},
                        ]
                    }
                }
            ]
        }
    )

    class Ep:
        def __init__(self, id: str, v: str) -> None:
            self.id, self.v = id, v

        def available(self, now: float) -> bool:
            return True

    eps = [Ep("x", "1"), Ep("y", "2")]
    decision = decision_of(start(calls))
    assert decision is not None
    first = decision.excluded(eps, lambda e: {"v": e.v})  # type: ignore[attr-defined]
    assert first in ({"x"}, {"y"})
    assert all(decision.excluded(eps, lambda e: {"v": e.v}) == first for _ in range(20))  # type: ignore[attr-defined]


def test_demand_counts_calls_of_limited_rules_including_refused_ones_and_resets() -> None:
    calls, policy, _ = hub(
        {
            "rules": [
                {"match": {"to": "other"}, "timeout_ms": 5},  # not limited: not reported
                {"match": {"to": "svc"}, "rate_limit": {"per_s": 1, "burst": 2}},
            ]
        }
    )
    start(calls, target="other")
    start(calls), start(calls)
    with pytest.raises(CallRejected):
        start(calls)
    # Refused calls count: a share must follow the calls offered, not those let through.
    assert policy.demand() == {1: 3}
    assert policy.demand() == {}


def test_set_shares_resizes_the_rules_at_their_positions() -> None:
    calls, policy, _ = hub(
        {"rules": [{"match": {"to": "svc"}, "rate_limit": {"per_s": 100, "burst": 10}}]}
    )
    policy.set_shares({0: 0.2, 7: 0.5})  # a position the rules do not have is ignored
    (compiled,) = policy.table.limited
    assert compiled.bucket is not None
    assert compiled.bucket.rate == pytest.approx(20) and compiled.bucket.capacity == 2
    start(calls), start(calls)
    with pytest.raises(CallRejected):
        start(calls)
