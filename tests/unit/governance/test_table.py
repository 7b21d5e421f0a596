from __future__ import annotations

import pytest

from agent.calls import Route
from agent.governance.rules import RuleSet
from agent.governance.table import RuleTable, set_share

ROUTE = Route("app", "", "svc", "", "m")


def rules(per_s: float = 1, ratio: float = 0.2) -> RuleSet:
    return RuleSet.model_validate(
        {
            "rules": [
                {
                    "match": {"to": "svc"},
                    "rate_limit": {"per_s": per_s, "burst": 1},
                    "retry": {"budget": {"ratio": ratio}},
                    "timeout_ms": 250,
                }
            ],
            "circuit_breakers": {"*": {"max_in_flight": 5}, "other": {"max_pending": 1}},
        }
    )


def test_compiles_rules_and_breakers() -> None:
    table = RuleTable(rules())
    compiled = table.lookup(ROUTE)
    assert compiled is not None and compiled.position == 0 and compiled.timeout_s == 0.25
    assert table.breaker("svc") == rules().circuit_breakers["*"]
    assert table.breaker("other") == rules().circuit_breakers["other"]


def test_unchanged_rules_keep_their_state_across_versions() -> None:
    first = RuleTable(rules())
    old = first.lookup(ROUTE)
    assert old is not None and old.bucket is not None and old.bucket.take()  # now empty
    same = RuleTable(rules(), previous=first).lookup(ROUTE)
    assert same is not None and same.bucket is old.bucket and not same.bucket.take()
    assert same.retry is not None and old.retry is not None
    assert same.retry.budget is old.retry.budget
    changed = RuleTable(rules(per_s=2, ratio=0.5), previous=first).lookup(ROUTE)
    assert changed is not None and changed.bucket is not old.bucket
    assert changed.retry is not None and changed.retry.budget is not old.retry.budget


def test_a_share_resizes_the_bucket_and_the_retry_floor_of_a_rule() -> None:
    document = rules(per_s=100).model_dump(mode="json")
    document["rules"][0]["rate_limit"]["burst"] = 10
    document["rules"][0]["retry"]["budget"]["min_per_s"] = 20
    table = RuleTable(RuleSet.model_validate(document), share=0.5)
    (compiled,) = table.limited
    assert compiled.bucket is not None and compiled.retry is not None
    assert (compiled.bucket.rate, compiled.bucket.capacity) == (50, 5)
    set_share(compiled, 0.95)
    assert compiled.bucket.rate == pytest.approx(95) and compiled.bucket.capacity == 10
    assert compiled.retry.budget.min_per_s == pytest.approx(19)
    set_share(compiled, 0.01)  # the burst never below one call
    assert compiled.bucket.capacity == 1


def test_rules_without_limits_are_not_split() -> None:
    document = {"rules": [{"match": {"to": "svc"}, "timeout_ms": 5}]}
    table = RuleTable(RuleSet.model_validate(document))
    assert table.limited == []
