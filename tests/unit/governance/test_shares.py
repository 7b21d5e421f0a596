"""Workers' shares of the limited rules, moved to where the calls are (sans-IO)."""

from __future__ import annotations

import pytest

from agent.governance.shares import RuleShares


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_shares_follow_the_calls_over_a_floor_and_sum_to_one() -> None:
    clock = Clock()
    shares = RuleShares(2, clock, floor_total=0.1)
    # Worker 0 has every call of rule 0: it gets all but the floor kept by worker 1.
    changed = shares.report(0, 0, {0: 90})
    assert changed == {0: {0: pytest.approx(0.95)}, 1: {0: pytest.approx(0.05)}}
    # Worker 1 now reports a third as many calls.
    changed = shares.report(1, 0, {0: 30})
    assert changed[0][0] == pytest.approx(0.05 + 0.9 * 90 / 120)
    assert changed[1][0] == pytest.approx(0.05 + 0.9 * 30 / 120)
    assert sum(shares.shares(0).values()) == pytest.approx(1.0)


def test_only_shares_that_moved_past_the_step_are_sent() -> None:
    shares = RuleShares(2, Clock(), step=0.02)
    shares.report(0, 0, {0: 50})
    shares.report(1, 0, {0: 50})
    assert shares.sent == {0: {0: 0.5}, 1: {0: 0.5}}
    assert shares.report(0, 0, {0: 51}) == {}  # 0.5 -> 0.504: not worth a message
    assert shares.report(0, 0, {0: 80}) != {}


def test_a_quiet_worker_s_old_report_counts_as_no_calls() -> None:
    clock = Clock()
    shares = RuleShares(2, clock, floor_total=0.1, stale_s=3)
    shares.report(1, 0, {0: 100})
    clock.now += 5  # worker 1 said nothing since
    changed = shares.report(0, 0, {0: 10})
    assert changed == {0: {0: pytest.approx(0.95)}, 1: {0: pytest.approx(0.05)}}


def test_reports_for_another_rule_set_or_worker_are_ignored() -> None:
    shares = RuleShares(2, Clock())
    shares.new_generation(3)
    assert shares.report(0, 2, {0: 10}) == {}  # about the rules before
    assert shares.report(5, 3, {0: 10}) == {}  # no such worker
    assert shares.report(0, 3, {0: 10}) != {}


def test_a_new_rule_set_or_a_restarted_worker_starts_from_even_shares() -> None:
    shares = RuleShares(2, Clock())
    shares.report(0, 0, {0: 10})
    shares.forget(1)  # worker 1 restarted: it holds 1/2 again, which must be corrected
    assert 1 not in shares.sent
    assert shares.report(0, 0, {0: 10}) == {1: {0: pytest.approx(0.05)}}
    shares.new_generation(1)
    assert shares.sent == {}
    assert shares.shares(0) == {0: 0.5, 1: 0.5}  # no calls known: even
