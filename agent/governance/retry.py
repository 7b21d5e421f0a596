"""Retry decisions: which failures, how many, how long to back off, and a budget.

Protocols classify a failed attempt as a :class:`Failure` (what happened, and whether the
request may have reached the provider); :class:`RetryPolicy` says whether to try again and
after how long. The :class:`RetryBudget` caps retries at a share of calls, so that when a
provider fails every call the retries cannot multiply the load on it (an outage made
worse by its clients).
"""

from __future__ import annotations

import enum
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from agent.governance.rules import Retry


class FailureKind(enum.StrEnum):
    CONNECT = "connect_failure"  # no connection: nothing was sent
    RESET = "reset"  # the connection broke after sending
    TIMEOUT = "timeout"
    STATUS = "retryable_status"  # the protocol's retryable statuses (overload, unavailable)
    OTHER = "other"  # an answer (an application error): never retried


@dataclass(frozen=True, slots=True)
class Failure:
    kind: FailureKind
    # Whether the provider may have received (and run) the request.
    sent: bool


class RetryBudget:
    """Retries allowed: ``ratio`` of the calls seen in the last ``window_s`` plus
    ``min_per_s * window_s``, minus the retries already made in that window.

    Counts are kept in one-second slots, so memory is ``window_s`` slots whatever the rate.
    """

    __slots__ = ("_clock", "_slots", "min_per_s", "ratio", "window_s")

    def __init__(
        self,
        ratio: float,
        min_per_s: float = 0.0,
        window_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ratio = ratio
        self.min_per_s = min_per_s
        self.window_s = window_s
        self._clock = clock
        # [second, calls, retries]
        self._slots: deque[list[int]] = deque()

    def _slot(self) -> list[int]:
        second = int(self._clock())
        slots = self._slots
        oldest = second - int(self.window_s) + 1
        while slots and slots[0][0] < oldest:
            slots.popleft()
        if not slots or slots[-1][0] != second:
            slots.append([second, 0, 0])
        return slots[-1]

    def record_call(self) -> None:
        self._slot()[1] += 1

    def try_retry(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        current = self._slot()
        calls = sum(slot[1] for slot in self._slots)
        retries = sum(slot[2] for slot in self._slots)
        if retries + 1 > calls * self.ratio + self.min_per_s * self.window_s:
            return False
        current[2] += 1
        return True


class RetryPolicy:
    __slots__ = ("attempts", "base_s", "budget", "idempotent", "max_s", "on")

    def __init__(
        self, config: Retry, clock: Callable[[], float] = time.monotonic, share: float = 1.0
    ) -> None:
        """``share``: this process's part of the agent's calls (1/workers): the budget's
        ratio holds per worker as it does for the sum, its floor is split."""
        self.attempts = config.attempts
        self.on = frozenset(FailureKind(kind) for kind in config.retry_on)
        self.idempotent = config.idempotent
        self.base_s = config.backoff_base_ms / 1000
        self.max_s = config.backoff_max_ms / 1000
        budget = config.budget
        self.budget = RetryBudget(budget.ratio, budget.min_per_s * share, budget.window_s, clock)

    def allows(self, failure: Failure, retries_done: int) -> bool:
        """Does the rule allow another attempt (before asking the budget)?"""
        if retries_done >= self.attempts or failure.kind not in self.on:
            return False
        return self.idempotent or not failure.sent

    def backoff_s(self, retries_done: int, rng: random.Random) -> float:
        """Exponential with full jitter (AWS' "full jitter"): uniform in [0, min(max,
        base * 2^n)], so clients that failed together do not retry together."""
        ceiling = min(self.max_s, self.base_s * (2**retries_done))
        return rng.uniform(0.0, ceiling) if ceiling > 0 else 0.0
