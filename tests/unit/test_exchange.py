"""The call driver's semantics with no sockets: sequences of what happened to a call's
attempts, and what the driver says to do next (agent/exchange.py)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from agent.calls import Call, Calls, Direction
from agent.exchange import Action, Exchange
from agent.governance.policy import GovernancePolicy
from agent.governance.retry import Failure, FailureKind
from agent.governance.rules import RuleSet

CONNECT = Failure(FailureKind.CONNECT, sent=False)
RESET = Failure(FailureKind.RESET, sent=True)
STATUS = Failure(FailureKind.STATUS, sent=True)
TIMEOUT = Failure(FailureKind.TIMEOUT, sent=True)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def governed(rules: list[dict[str, Any]], timeout_s: float | None = 5) -> tuple[Call, Clock]:
    clock = Clock()
    policy = GovernancePolicy(
        RuleSet.model_validate({"rules": rules}), "a", clock, random.Random(1)
    )
    calls = Calls("app", "", clock)
    calls.policies.append(policy)
    calls.observers.append(policy)
    route = calls.outbound_route("svc", "m")
    return calls.start("test", Direction.INVOKE, route, None, timeout_s), clock


def plain(timeout_s: float | None = 5) -> tuple[Call, Clock]:
    clock = Clock()
    calls = Calls("app", "", clock)
    route = calls.outbound_route("svc", "m")
    return calls.start("test", Direction.INVOKE, route, None, timeout_s), clock


def retry_rule(**retry: Any) -> dict[str, Any]:
    budget = {"ratio": 1.0, "min_per_s": 10}
    settings = {"attempts": 2, "budget": budget, "backoff_base_ms": 0, **retry}
    return {"retry": settings}


def test_connect_failure_then_another_provider() -> None:
    call, _ = plain()
    exchange = Exchange(call, retries=2)
    assert exchange.begin().action is Action.ATTEMPT
    assert exchange.excluded == frozenset()
    assert exchange.failed("a:1", CONNECT).action is Action.ATTEMPT
    assert exchange.excluded == {"a:1"}
    assert exchange.failed("b:1", CONNECT).action is Action.ATTEMPT
    assert exchange.excluded == {"a:1", "b:1"}
    assert exchange.failed("c:1", CONNECT).action is Action.GIVE_UP  # 1 + 2 retries


def test_without_a_rule_answers_and_timeouts_are_final() -> None:
    call, _ = plain()
    assert Exchange(call, retries=2, idempotent=True).failed("a", STATUS).action is Action.GIVE_UP
    assert Exchange(call, retries=2, idempotent=True).failed("a", TIMEOUT).action is Action.GIVE_UP
    # ... unless the protocol's own retries are for them (Dubbo's failover: statuses).
    dubbo = Exchange(call, retries=2, idempotent=True, retry_on=frozenset(FailureKind))
    assert dubbo.failed("a", STATUS).action is Action.ATTEMPT


def test_a_request_lost_after_sending_is_retried_only_when_idempotent() -> None:
    call, _ = plain()
    assert Exchange(call, retries=2).failed("a", RESET).action is Action.GIVE_UP
    assert Exchange(call, retries=2, idempotent=True).failed("a", RESET).action is Action.ATTEMPT
    # Under a rule the same: the rule's `idempotent: false` and a method that is not.
    ruled, _ = governed([retry_rule(retry_on=["reset"])])
    assert Exchange(ruled).failed("a", RESET).action is Action.GIVE_UP
    ruled, _ = governed([retry_rule(retry_on=["reset"])])
    assert Exchange(ruled, idempotent=True).failed("a", RESET).action is Action.ATTEMPT


def test_a_streamed_body_that_reached_a_provider_is_never_sent_again() -> None:
    call, _ = governed([retry_rule(retry_on=["reset", "connect_failure"], idempotent=True)])
    exchange = Exchange(call, idempotent=True, resendable=False)
    assert exchange.failed("a", CONNECT).action is Action.ATTEMPT  # nothing was sent
    assert exchange.failed("b", RESET).action is Action.GIVE_UP


def test_once_the_answer_head_is_relayed_nothing_is_retried() -> None:
    call, _ = governed([retry_rule(retry_on=["reset"], idempotent=True)])
    exchange = Exchange(call, retries=3, idempotent=True)
    exchange.answer_started()
    assert exchange.failed("a", RESET).action is Action.GIVE_UP
    assert exchange.stale("a").action is Action.GIVE_UP


def test_the_rule_replaces_the_protocols_retries_and_its_budget_binds() -> None:
    call, _ = governed([retry_rule(attempts=3, retry_on=["retryable_status"])])
    exchange = Exchange(call, retries=0, idempotent=True)  # a GET; its own retries: none
    assert [exchange.failed(h, STATUS).action for h in "abcd"] == [
        Action.ATTEMPT,
        Action.ATTEMPT,
        Action.ATTEMPT,
        Action.GIVE_UP,
    ]
    spent, _ = governed([retry_rule(attempts=3, budget={"ratio": 0.0, "min_per_s": 0})])
    assert Exchange(spent).failed("a", CONNECT).action is Action.GIVE_UP  # budget exhausted


def test_backoff_is_a_wait_and_never_ends_past_the_deadline() -> None:
    call, clock = governed([retry_rule(attempts=3, backoff_base_ms=200, backoff_max_ms=200)])
    exchange = Exchange(call)
    step = exchange.failed("a", CONNECT)
    assert step.action in (Action.WAIT, Action.ATTEMPT) and 0 <= step.delay_s <= 0.2
    clock.now += 4.9  # 100 ms left: a backoff of up to 200 ms may not fit
    late = [Exchange(governed_call).failed("a", CONNECT) for governed_call in _calls(clock)]
    assert all(step.action is Action.GIVE_UP or step.delay_s < 0.1 for step in late)
    clock.now += 1  # the deadline has passed: no retry, with or without a rule
    assert exchange.failed("b", CONNECT).action is Action.GIVE_UP
    no_rule, clock = plain(timeout_s=1)
    clock.now += 2
    assert Exchange(no_rule, retries=3).failed("a", CONNECT).action is Action.GIVE_UP


def _calls(clock: Clock) -> list[Call]:
    """Calls started 4.9 s ago with a 5 s deadline (the same rule)."""
    out = []
    for _ in range(50):
        call, own = governed([retry_rule(attempts=3, backoff_base_ms=200, backoff_max_ms=200)])
        own.now = clock.now
        call.deadline = clock.now + 0.1
        out.append(call)
    return out


def test_a_stale_keep_alive_connection_is_resent_once_without_counting() -> None:
    call, _ = plain()
    exchange = Exchange(call, retries=0)
    assert exchange.stale("a").action is Action.RESEND
    assert exchange.attempts == 0 and exchange.excluded == frozenset()
    assert exchange.stale("a").action is Action.GIVE_UP  # the second time it is a failure
    assert exchange.attempts == 1
    streamed = Exchange(call, retries=2, idempotent=True, resendable=False)
    assert streamed.stale("a").action is Action.GIVE_UP  # its body is not kept


def test_the_subset_and_the_tried_are_excluded_together() -> None:
    call, _ = plain()
    exchange = Exchange(call, retries=5)
    exchange.exclude_subset(frozenset({"c", "d"}))
    assert exchange.excluded == {"c", "d"}
    exchange.failed("a", CONNECT)
    exchange.failed("b", CONNECT)
    # Every provider excluded: the protocol's pick finds none and answers "no endpoint".
    assert exchange.excluded == {"a", "b", "c", "d"}


def test_an_injected_delay_comes_before_the_first_attempt() -> None:
    call, _ = governed([{"fault": {"delay": {"percent": 100, "ms": 150}}}])
    step = Exchange(call).begin()
    assert step.action is Action.WAIT and step.delay_s == pytest.approx(0.15)
    assert Exchange(plain()[0]).begin().action is Action.ATTEMPT


def test_an_attempts_timeout_is_its_share_of_the_deadline() -> None:
    call, clock = plain(timeout_s=2)
    exchange = Exchange(call)
    assert exchange.timeout_s(5.0) == pytest.approx(2.0)
    clock.now += 1.5
    assert exchange.timeout_s(5.0) == pytest.approx(0.5)
    assert exchange.timeout_s(0.1) == pytest.approx(0.1)
    assert Exchange(plain(timeout_s=None)[0]).timeout_s(5.0) == 5.0
    assert Exchange(None).timeout_s(5.0) == 5.0


def test_a_protocol_whose_own_retries_resend_does_not_lend_that_to_a_rule() -> None:
    # Dubbo's failover resends a call that reached a provider (its `retries`, by design);
    # a governance rule decides by its own `idempotent` (false: a timeout is not retried).
    call, _ = plain()
    dubbo = Exchange(call, retries=2, retry_on=frozenset(FailureKind), own_retries_resend=True)
    assert dubbo.failed("a", RESET).action is Action.ATTEMPT
    ruled, _ = governed([retry_rule(attempts=3, retry_on=["timeout"])])
    under_rule = Exchange(ruled, retries=2, own_retries_resend=True)
    assert under_rule.failed("a", TIMEOUT).action is Action.GIVE_UP
