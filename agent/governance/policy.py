"""The governance policy: applies the rule in force to each call as it starts.

Plugged into the agent's :class:`~agent.calls.Calls` hub both as a policy (``admit``) and
as an observer (to count calls in flight and pending per cluster for circuit breaking).
In ``admit``, in this order:

1. ``degrade: {when: always}``: answered by the agent (:class:`Degraded`), never sent;
2. the rate limit (token bucket): ``CallRejected("rate_limited")``, or degraded when the
   rule says ``degrade: {when: overloaded}``;
3. circuit breaking (the cluster's in-flight/pending limits): ``CallRejected("overloaded")``
   or degraded likewise;
4. fault injection: an abort (``CallRejected("fault")``) or a delay the protocol waits;
5. the rule's timeout shortens the call's deadline.

What the protocol path needs later (retries, the subset, the delay) is a
:class:`Decision` left in ``call.state["governance"]``; :func:`decision_of` reads it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mypy_extensions import mypyc_attr

from agent.call_hooks import CallHook
from agent.calls import Attempt, Call, CallRejected, Route
from agent.governance.breaker import ClusterLoad, connection_allowed, over_limit
from agent.governance.retry import Failure
from agent.governance.rules import Degrade, RuleSet
from agent.governance.split import E
from agent.governance.table import CompiledRule, RuleTable, set_share

STATE_KEY = "governance"


class Degraded(CallRejected):
    """The agent answers instead of the provider: with ``value`` (JSON, for the protocol to
    encode as its reply) when ``has_value``, else with the error ``status``/message."""

    def __init__(self, degrade: Degrade) -> None:
        super().__init__("degraded", degrade.message, degrade.status)
        self.has_value = degrade.mode == "value"
        self.value: Any = degrade.value


@dataclass
class Counters:
    """Totals since start, read by the API (and at scrape time)."""

    rate_limited: int = 0
    overloaded: int = 0
    fault_aborts: int = 0
    fault_delays: int = 0
    degraded: int = 0
    retries: int = 0
    retries_over_budget: int = 0
    # Calls a rule applied to (a matching rule or a cluster with breaker limits).
    governed: int = 0


@dataclass(eq=False, slots=True)
class Decision:
    """What governance decided for one call, for the protocol path to apply."""

    policy: GovernancePolicy
    rule: CompiledRule | None
    load: ClusterLoad | None
    delay_s: float = 0.0
    retries: int = 0
    counted: bool = False  # in load.in_flight
    pending: bool = False  # in load.pending
    _subset: Any = field(default=None)

    def retry_after(self, failure: Failure) -> float | None:
        """Seconds to wait before the next attempt, or None: do not retry."""
        rule = self.rule
        retry = rule.retry if rule is not None else None
        if retry is None or not retry.allows(failure, self.retries):
            return None
        counters = self.policy.counters
        if not retry.budget.try_retry():
            counters.retries_over_budget += 1
            return None
        counters.retries += 1
        delay = retry.backoff_s(self.retries, self.policy.rng)
        self.retries += 1
        return delay

    @property
    def retry_attempts(self) -> int | None:
        """The rule's retry count, or None when the rule says nothing about retries."""
        rule = self.rule
        if rule is None or rule.retry is None:
            return None
        return rule.retry.attempts

    def excluded(
        self,
        endpoints: Iterable[E],
        metadata: Callable[[E], Mapping[str, str]],
        header: Callable[[str], str | None] = lambda name: None,
    ) -> frozenset[str]:
        """Endpoint ids this call must not go to (traffic splitting); empty without a rule.

        The subset is drawn once per call, so a retry stays in the same subset."""
        rule = self.rule
        splitter = rule.splitter if rule is not None else None
        if splitter is None:
            return frozenset()
        if self._subset is None:
            self._subset = splitter.pick_subset(header, self.policy.rng) or False
        subset = self._subset or None
        return splitter.excluded(endpoints, metadata, subset, self.policy.clock())

    @property
    def splits(self) -> bool:
        """Does the rule split traffic (is :meth:`excluded` worth calling)?"""
        rule = self.rule
        return rule is not None and rule.splitter is not None

    @property
    def uses_headers(self) -> bool:
        rule = self.rule
        return rule is not None and rule.splitter is not None and rule.splitter.uses_headers


def decision_of(call: Call) -> Decision | None:
    decision = call.state.get(STATE_KEY)
    return decision if isinstance(decision, Decision) else None


def connection_refusal(call: Call, cluster: str, open_connections: Callable[[], int]) -> str | None:
    """Why a new provider connection may not be opened for ``call`` (the cluster's
    ``max_connections``), or None. Asked only on the slow path, when the protocol is about
    to connect: ``open_connections`` counts the cluster's open provider connections then,
    so the fast path pays nothing. A refusal is counted as an overflow."""
    decision = decision_of(call)
    if decision is None:
        return None
    policy = decision.policy
    limits = policy.table.breaker(cluster)
    if limits is None or limits.max_connections is None:
        return None
    load = policy.load(cluster)
    load.connections = open_connections()
    if connection_allowed(limits, load):
        return None
    load.overflows += 1
    policy.counters.overloaded += 1
    return (
        f"{cluster}: {load.connections} provider connections open "
        f"(max_connections {limits.max_connections})"
    )


@dataclass
class RulesState:
    """The rule set in force and where it came from."""

    rules: RuleSet
    source: str  # "static" or the config key
    # The source's version when the caller knows it (the API reads the watched
    # document's status, which is set once the version is in force).
    version: str | None
    applied_at: float


# Compiled (agent/compiled.py); tests subclass it.
@mypyc_attr(allow_interpreted_subclasses=True)
class GovernancePolicy(CallHook):
    name = "governance"

    def __init__(
        self,
        rules: RuleSet | None = None,
        local_zone: str = "",
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        share: float = 1.0,
        local_dc: str = "",
    ) -> None:
        self.clock = clock
        self.local_dc = local_dc
        # This process's part of the agent's rate limits (1/workers; agent/governance/table.py).
        self.share = share
        self.rng = rng or random.Random()
        self.local_zone = local_zone
        self.counters = Counters()
        self.loads: dict[str, ClusterLoad] = {}
        self.table = RuleTable(
            rules or RuleSet(), local_zone, clock, share=share, local_dc=local_dc
        )
        self.state = RulesState(self.table.rules, "static", None, time.time())

    # -- rules -------------------------------------------------------------------------

    def set_rules(self, rules: RuleSet, source: str, version: str | None) -> None:
        """Put a validated rule set in force. The swap is one assignment: a call sees the
        old table or the new one, never a mix, and calls in flight keep their decision."""
        self.table = RuleTable(
            rules,
            self.local_zone,
            self.clock,
            previous=self.table,
            share=self.share,
            local_dc=self.local_dc,
        )
        self.state = RulesState(rules, source, version, time.time())

    def demand(self) -> dict[int, int]:
        """Calls per limited rule (by position) since the last reading, which resets them:
        what a worker reports so that its share follows its calls (docs/workers.md)."""
        calls: dict[int, int] = {}
        for compiled in self.table.limited:
            if compiled.calls:
                calls[compiled.position] = compiled.calls
                compiled.calls = 0
        return calls

    def set_shares(self, shares: dict[int, float]) -> None:
        """This worker's part of each limited rule, by position in the rules in force."""
        for compiled in self.table.limited:
            share = shares.get(compiled.position)
            if share is not None:
                set_share(compiled, share)

    def effective(self, route: Route) -> CompiledRule | None:
        return self.table.lookup(route)

    def load(self, cluster: str) -> ClusterLoad:
        load = self.loads.get(cluster)
        if load is None:
            load = self.loads[cluster] = ClusterLoad()
        return load

    def may_connect(self, cluster: str) -> bool:
        """For a protocol's pool: may it open one more connection to ``cluster``?"""
        return connection_allowed(self.table.breaker(cluster), self.load(cluster))

    # -- CallPolicy ----------------------------------------------------------------------

    def admit(self, call: Call) -> None:
        table = self.table
        rule = table.lookup(call.route)
        limits = table.breaker(call.route.target)
        if rule is None and limits is None:
            return  # the common case: nothing to do, nothing left on the call
        counters = self.counters
        counters.governed += 1
        if rule is not None:
            rule.calls += 1
        degrade = rule.rule.degrade if rule is not None else None
        if degrade is not None and degrade.when == "always":
            counters.degraded += 1
            raise Degraded(degrade)
        if rule is not None and rule.bucket is not None and not rule.bucket.take():
            counters.rate_limited += 1
            self._overloaded(
                degrade,
                CallRejected(
                    "rate_limited",
                    f"rate limit of {rule.bucket.rate:g}/s (rules.{rule.position}) exceeded",
                ),
            )
        load = None
        if limits is not None:
            load = self.load(call.route.target)
            why = over_limit(limits, load)
            if why is not None:
                load.overflows += 1
                counters.overloaded += 1
                self._overloaded(degrade, CallRejected("overloaded", f"{call.route.target}: {why}"))
        decision = Decision(self, rule, load)
        if rule is not None:
            fault = rule.rule.fault
            if fault is not None:
                abort = fault.abort
                if abort is not None and self.rng.random() * 100 < abort.percent:
                    counters.fault_aborts += 1
                    raise CallRejected("fault", abort.message, abort.status)
                delay = fault.delay
                if delay is not None and self.rng.random() * 100 < delay.percent:
                    counters.fault_delays += 1
                    decision.delay_s = delay.ms / 1000
            if rule.timeout_s is not None:
                deadline = call.started + rule.timeout_s
                if call.deadline is None or deadline < call.deadline:
                    call.deadline = deadline
            if rule.retry is not None:
                rule.retry.budget.record_call()
        if load is not None:
            load.in_flight += 1
            load.pending += 1
            decision.counted = decision.pending = True
        call.state[STATE_KEY] = decision

    def _overloaded(self, degrade: Degrade | None, rejection: CallRejected) -> None:
        if degrade is not None:  # when: overloaded (always was handled before)
            self.counters.degraded += 1
            raise Degraded(degrade)
        raise rejection

    # -- CallObserver --------------------------------------------------------------------

    # (No-ops of its own: the base's, interpreted, would run as Python on every call.)
    def call_started(self, call: Call) -> None:
        return None

    def attempt_finished(self, call: Call, attempt: Attempt) -> None:
        return None

    def attempt_started(self, call: Call, attempt: Attempt) -> None:
        decision = call.state.get(STATE_KEY)
        if isinstance(decision, Decision) and decision.pending:
            decision.pending = False
            assert decision.load is not None
            decision.load.pending -= 1

    def call_finished(self, call: Call) -> None:
        decision = call.state.get(STATE_KEY)
        if isinstance(decision, Decision) and decision.counted:
            decision.counted = False
            load = decision.load
            assert load is not None
            load.in_flight -= 1
            if decision.pending:
                decision.pending = False
                load.pending -= 1
