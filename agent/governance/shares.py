"""Each worker's part of the agent's rate limits and retry-budget floors, following where
the calls are (``workers: N``, docs/workers.md).

A worker enforces its share of a rule's limit locally (no counter is shared per call).
The kernel spreads connections, not calls, so an even split (1/N each) refuses calls on
a worker that a few busy connections landed on while the others' shares go unused. So
each worker reports, about once a second and only when it saw calls, how many calls met
each limited rule since its last report; the supervisor gives each worker a share in
proportion to its part of the calls, over a floor that every worker keeps (a new client
on an idle worker is not refused outright), and sends a worker its shares when they
moved by more than ``step``. Shares of one rule sum to 1, so the agent as a whole admits
what the rule says, give or take each worker's burst rounded up to a whole call.

Sans-IO: the supervisor feeds reports in and sends what comes out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

# Of every limited rule, this part is split evenly whatever the calls (the floor).
FLOOR_TOTAL = 0.1
# A worker's report older than this counts as no calls (it went quiet).
STALE_S = 3.0
# A share is sent again when it moved by more than this.
STEP = 0.02


class RuleShares:
    def __init__(
        self,
        workers: int,
        clock: Callable[[], float] = time.monotonic,
        floor_total: float = FLOOR_TOTAL,
        stale_s: float = STALE_S,
        step: float = STEP,
    ) -> None:
        self.workers = workers
        self.clock = clock
        self.floor = floor_total / workers
        self.stale_s = stale_s
        self.step = step
        # The rule set the positions refer to (the supervisor counts its rule versions).
        self.generation = 0
        # Per rule position: per worker, (when reported, calls in that report).
        self._demand: dict[int, dict[int, tuple[float, int]]] = {}
        # Per worker: the shares it was sent for this generation (absent: 1/N, as it starts).
        self.sent: dict[int, dict[int, float]] = {}

    def new_generation(self, generation: int) -> None:
        """A new rule set: positions mean other rules; demand starts again."""
        self.generation = generation
        self._demand.clear()
        self.sent.clear()

    def forget(self, worker: int) -> None:
        """A worker (re)started: it holds 1/N of everything again and has no demand."""
        self.sent.pop(worker, None)
        for per_worker in self._demand.values():
            per_worker.pop(worker, None)

    def report(
        self, worker: int, generation: int, calls: Mapping[int, int]
    ) -> dict[int, dict[int, float]]:
        """A worker's calls per rule position since its last report. Returns the shares
        to send, per worker: only those that changed by more than ``step``."""
        if generation != self.generation or not 0 <= worker < self.workers:
            return {}
        now = self.clock()
        for position, count in calls.items():
            self._demand.setdefault(position, {})[worker] = (now, max(0, count))
        changed: dict[int, dict[int, float]] = {}
        for position in calls:
            for target, share in self.shares(position, now).items():
                sent = self.sent.get(target, {}).get(position)
                if sent is None or abs(sent - share) > self.step:
                    self.sent.setdefault(target, {})[position] = share
                    changed.setdefault(target, {})[position] = share
        return changed

    def shares(self, position: int, now: float | None = None) -> dict[int, float]:
        """Every worker's share of the rule at ``position`` from the latest reports."""
        now = self.clock() if now is None else now
        reports = self._demand.get(position, {})
        demand = [0] * self.workers
        for worker, (at, count) in reports.items():
            if now - at <= self.stale_s:
                demand[worker] = count
        total = sum(demand)
        if total == 0:
            return {worker: 1 / self.workers for worker in range(self.workers)}
        rest = 1 - self.floor * self.workers
        return {worker: self.floor + rest * calls / total for worker, calls in enumerate(demand)}
