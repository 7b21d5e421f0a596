from __future__ import annotations

import random

from agent.governance.retry import Failure, FailureKind, RetryBudget, RetryPolicy
from agent.governance.rules import Retry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_budget_caps_retries_at_the_ratio_of_calls() -> None:
    clock = Clock()
    budget = RetryBudget(0.2, 0.0, 10.0, clock)
    retries = 0
    for _ in range(1000):
        clock.now += 0.005
        budget.record_call()
        # every call fails and wants three retries
        retries += sum(budget.try_retry() for _ in range(3))
    assert retries <= 200
    assert retries >= 190  # the budget is used, not just refused


def test_budget_window_forgets_old_calls_and_min_per_s_allows_a_quiet_route() -> None:
    clock = Clock()
    budget = RetryBudget(0.5, 0.0, 2.0, clock)
    for _ in range(10):
        budget.record_call()
    clock.now += 5  # the calls are out of the window
    assert not budget.try_retry()
    quiet = RetryBudget(0.0, 1.0, 2.0, clock)
    assert quiet.try_retry() and quiet.try_retry() and not quiet.try_retry()


def test_policy_retries_sent_requests_only_when_idempotent() -> None:
    unsafe = RetryPolicy(Retry(attempts=2, retry_on=["connect_failure", "reset", "timeout"]))
    assert unsafe.allows(Failure(FailureKind.CONNECT, sent=False), 0)
    assert not unsafe.allows(Failure(FailureKind.RESET, sent=True), 0)
    safe = RetryPolicy(Retry(attempts=2, retry_on=["reset"], idempotent=True))
    assert safe.allows(Failure(FailureKind.RESET, sent=True), 1)
    assert not safe.allows(Failure(FailureKind.RESET, sent=True), 2)  # attempts used up
    assert not safe.allows(Failure(FailureKind.TIMEOUT, sent=True), 0)  # not listed
    assert not safe.allows(Failure(FailureKind.OTHER, sent=False), 0)


def test_backoff_is_jittered_under_an_exponential_ceiling() -> None:
    policy = RetryPolicy(Retry(backoff_base_ms=10, backoff_max_ms=50))
    rng = random.Random(1)
    for n, ceiling in ((0, 0.01), (1, 0.02), (2, 0.04), (5, 0.05)):
        draws = [policy.backoff_s(n, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in draws)
        assert max(draws) > ceiling * 0.8 and len(set(draws)) > 100
