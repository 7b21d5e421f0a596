"""One call's attempts, decided once for every protocol (sans-IO).

A protocol path moves bytes with its engine (the multiplex pool, an HTTP/1.1 upstream, h11,
h2, grpc.aio) and tells its :class:`Exchange` what happened to each attempt; the exchange
answers what to do next: attempt now (on a provider outside :attr:`Exchange.excluded`),
wait and then attempt, or give up and answer the client with the last failure. What is
decided here, and nowhere else:

- which providers an attempt may go to: not one already tried, not one outside the subset
  a traffic-splitting rule drew for the call (the protocol computes the subset: it knows
  its endpoints' metadata and the request's headers);
- whether to retry: under a governance retry rule (agent/governance/retry.py: which
  failures, how many, backoff, the budget), else the protocol's own retries (the HTTP
  route's ``retries``, Dubbo's failover ``retries``) for the failures it names;
- what may never be retried: a request that reached a provider when it is not safe to run
  twice (not idempotent) or cannot be sent again (its body was streamed and not kept), and
  anything once part of the answer reached the client;
- the deadline: no attempt starts, and no backoff ends, past the call's deadline;
- a kept-alive connection found closed as it was reused (the request never reached the
  provider): sent again once, at once, without counting as a retry;
- the injected delay of a fault rule, before the first attempt.

The protocol keeps what is its own: how to classify an answer or error as a
:class:`~agent.governance.retry.Failure`, how to render a refusal, how to write the
outgoing context fields (``Call.outgoing``), when its bytes are kept.
"""

from __future__ import annotations

import enum

from agent.calls import Call
from agent.governance.policy import Decision, decision_of
from agent.governance.retry import Failure, FailureKind


class Action(enum.IntEnum):
    ATTEMPT = 0  # send to a provider outside ``excluded`` now
    WAIT = 1  # wait ``delay_s``, then attempt
    GIVE_UP = 2  # answer the client with the last failure
    RESEND = 3  # send again at once on a new connection (a stale one failed): not a retry


class Next:
    """What the protocol does next."""

    __slots__ = ("action", "delay_s")

    def __init__(self, action: Action, delay_s: float = 0.0) -> None:
        self.action = action
        self.delay_s = delay_s

    def __repr__(self) -> str:
        return f"Next({self.action.name}, {self.delay_s:g})"


ATTEMPT = Next(Action.ATTEMPT)
GIVE_UP = Next(Action.GIVE_UP)
RESEND = Next(Action.RESEND)

_NONE: frozenset[str] = frozenset()
# Without a rule, protocols retry only what never reached a provider or was lost on the
# way back, unless they say otherwise (Dubbo's failover also retries error statuses).
DEFAULT_RETRY_ON = frozenset({FailureKind.CONNECT, FailureKind.RESET})


class Exchange:
    """The attempts of one call. ``call`` is None where no call is opened (a health check).

    ``retries``: the protocol's own retries, used when no governance retry rule applies;
    ``retry_on``: the failures those retries are for; ``idempotent``: the request may run
    twice (an HTTP GET); ``resendable``: its bytes are kept, so it can be sent again once
    sent; ``own_retries_resend``: the protocol's own retries resend a request that reached
    a provider even when it is not known to be idempotent (Dubbo's failover, by design);
    a governance rule decides that by its own ``idempotent``.
    """

    __slots__ = (
        "answering",
        "attempts",
        "call",
        "decision",
        "idempotent",
        "own_retries_resend",
        "resendable",
        "retries",
        "retry_on",
        "stale_resent",
        "subset_out",
        "tried",
    )

    def __init__(
        self,
        call: Call | None,
        retries: int = 0,
        idempotent: bool = False,
        resendable: bool = True,
        retry_on: frozenset[FailureKind] = DEFAULT_RETRY_ON,
        own_retries_resend: bool = False,
    ) -> None:
        self.call = call
        self.decision: Decision | None = decision_of(call) if call is not None else None
        self.retries = retries
        self.retry_on = retry_on
        self.idempotent = idempotent
        self.resendable = resendable
        self.own_retries_resend = own_retries_resend
        # A frozenset, replaced on a failure (rare): no set allocated per call.
        self.tried: frozenset[str] = _NONE
        self.subset_out: frozenset[str] = _NONE
        self.attempts = 0  # attempts that failed (a stale connection's resend not counted)
        self.stale_resent = False
        self.answering = False  # part of the answer reached the client

    # -- before the first attempt ----------------------------------------------------------

    def begin(self) -> Next:
        """The first step: an injected delay (a fault rule), or attempt now."""
        decision = self.decision
        if decision is not None and decision.delay_s > 0:
            return Next(Action.WAIT, decision.delay_s)
        return ATTEMPT

    def exclude_subset(self, subset_out: frozenset[str]) -> None:
        """Endpoints outside the subset a traffic-splitting rule drew (``Decision.excluded``)."""
        self.subset_out = subset_out

    @property
    def excluded(self) -> frozenset[str]:
        """Endpoints the next attempt may not go to."""
        if not self.tried:
            return self.subset_out
        return self.subset_out | self.tried

    # -- what happened ---------------------------------------------------------------------

    def answer_started(self) -> None:
        """Part of the answer went to the client: nothing can be retried any more."""
        self.answering = True

    def stale(self, endpoint: str) -> Next:
        """A reused keep-alive connection to ``endpoint`` was found closed as the request
        went out: the provider had closed it, so the request did not reach it. Sent again
        on a fresh connection, once per call, at once, when its bytes are kept; otherwise
        (or the second time) a failure like any connection lost."""
        if self.stale_resent or self.answering or not self.resendable:
            return self.failed(endpoint, Failure(FailureKind.RESET, sent=True))
        self.stale_resent = True
        return RESEND

    def failed(self, endpoint: str, failure: Failure) -> Next:
        """An attempt on ``endpoint`` failed (``failure.sent``: it may have reached it)."""
        if endpoint:
            self.tried = self.tried | {endpoint}
        self.attempts += 1
        if self.answering:
            return GIVE_UP
        if failure.sent and not self.resendable:
            return GIVE_UP  # what was sent is gone: it cannot be sent again
        decision = self.decision
        if decision is not None and decision.retry_attempts is not None:
            # The rule decides (which failures, how many, budget, backoff); a request that
            # reached the provider counts as safe to repeat when the protocol says so.
            sent = failure.sent and not self.idempotent
            delay = decision.retry_after(
                failure if sent == failure.sent else Failure(failure.kind, sent)
            )
            if delay is None or self._past_deadline(delay):
                return GIVE_UP
            return Next(Action.WAIT, delay) if delay > 0 else ATTEMPT
        if failure.kind not in self.retry_on or self.attempts > self.retries:
            return GIVE_UP
        if failure.sent and not (self.idempotent or self.own_retries_resend):
            return GIVE_UP
        if self._past_deadline(0.0):
            return GIVE_UP
        return ATTEMPT

    def timeout_s(self, configured: float) -> float:
        """An attempt's timeout: the configured one, within what is left of the deadline."""
        call = self.call
        if call is None or call.deadline is None:
            return configured
        remaining = call.remaining_s()
        return configured if remaining is None else min(configured, remaining)

    def _past_deadline(self, delay_s: float) -> bool:
        call = self.call
        remaining = call.remaining_s() if call is not None else None
        return remaining is not None and remaining <= delay_s
