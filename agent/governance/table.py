"""A rule set compiled for the hot path: the index, and per rule its bucket, retry policy
and splitter. Built once per version; lookups never allocate beyond the route cache."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.calls import Route
from agent.governance.index import Key, RuleIndex
from agent.governance.ratelimit import TokenBucket
from agent.governance.retry import RetryPolicy
from agent.governance.rules import WILDCARD, BreakerLimits, Match, Rule, RuleSet
from agent.governance.split import Splitter


def match_key(match: Match) -> Key:
    return (match.target, match.method, match.target_cluster, match.source, match.source_cluster)


@dataclass(eq=False, slots=True)
class CompiledRule:
    position: int  # index in the document's ``rules``
    rule: Rule
    bucket: TokenBucket | None
    retry: RetryPolicy | None
    splitter: Splitter | None
    timeout_s: float | None
    # Calls that met this rule since the worker last reported them (its share follows them).
    calls: int = 0


class RuleTable:
    def __init__(
        self,
        rules: RuleSet,
        local_zone: str = "",
        clock: Callable[[], float] = time.monotonic,
        previous: RuleTable | None = None,
        share: float = 1.0,
        local_dc: str = "",
    ) -> None:
        """``share``: this process's part of the agent's limits (1/workers, docs/workers.md):
        a rate limit's rate and burst and a retry budget's floor start split evenly; the
        supervisor then moves each rule's shares to where its calls are (:func:`set_share`).
        A rule carried over from ``previous`` keeps the share it had."""
        self.rules = rules
        self.share = share
        old: dict[Key, CompiledRule] = {}
        if previous is not None:
            old = {match_key(c.rule.match): c for c in previous.compiled}
        self.compiled: list[CompiledRule] = [
            _compile(i, rule, local_zone, clock, old.get(match_key(rule.match)), share, local_dc)
            for i, rule in enumerate(rules.rules)
        ]
        # The rules whose limits are split among workers (rate limit, retry floor).
        self.limited = [c for c in self.compiled if c.bucket is not None or c.retry is not None]
        self.index: RuleIndex[CompiledRule] = RuleIndex(
            self.compiled, lambda c: match_key(c.rule.match)
        )
        self._breakers = dict(rules.circuit_breakers)
        self._default_breaker = self._breakers.get(WILDCARD)

    def lookup(self, route: Route) -> CompiledRule | None:
        return self.index.lookup(route)

    def breaker(self, cluster: str) -> BreakerLimits | None:
        return self._breakers.get(cluster, self._default_breaker)


def _compile(
    position: int,
    rule: Rule,
    local_zone: str,
    clock: Callable[[], float],
    old: CompiledRule | None,
    share: float = 1.0,
    local_dc: str = "",
) -> CompiledRule:
    """Compile one rule; state (tokens, the retry budget's window) carries over from the
    previous version of the same rule when its settings are unchanged, so republishing a
    rule set does not refill buckets or empty budgets."""
    bucket = None
    if rule.rate_limit is not None:
        if old is not None and old.bucket is not None and old.rule.rate_limit == rule.rate_limit:
            bucket = old.bucket
        else:
            limit = rule.rate_limit
            bucket = TokenBucket(
                limit.per_s * share, max(1, math.ceil(limit.capacity * share)), clock
            )
    retry = None
    if rule.retry is not None:
        retry = RetryPolicy(rule.retry, clock, share)
        if (
            old is not None
            and old.retry is not None
            and old.rule.retry is not None
            and old.rule.retry.budget == rule.retry.budget
        ):
            retry.budget = old.retry.budget
    splitter = None
    if rule.traffic is not None:
        splitter = Splitter(rule.traffic, local_zone, local_dc)
    timeout_s = rule.timeout_ms / 1000 if rule.timeout_ms is not None else None
    return CompiledRule(position, rule, bucket, retry, splitter, timeout_s)


def set_share(compiled: CompiledRule, share: float) -> None:
    """This process's part of a rule's rate limit and retry-budget floor (the supervisor's
    split, agent/governance/shares.py). The burst is rounded up to a whole call."""
    rule = compiled.rule
    limit = rule.rate_limit
    if compiled.bucket is not None and limit is not None:
        compiled.bucket.resize(limit.per_s * share, max(1, math.ceil(limit.capacity * share)))
    if compiled.retry is not None and rule.retry is not None:
        compiled.retry.budget.min_per_s = rule.retry.budget.min_per_s * share
