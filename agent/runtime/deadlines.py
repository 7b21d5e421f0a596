"""Request deadlines without a timer per request.

A proxy connection has many calls in flight, and nearly all of them are answered long
before their deadline: arming and cancelling a loop timer for each is a measurable share of
a call's cost. Calls are instead queued by their timeout (so each queue is in deadline
order: same timeout, later start, later deadline) and one timer is armed for the earliest
deadline. When it fires, the sweep expires what is due, drops what was answered meanwhile,
and re-arms for the next deadline.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from agent.runtime.writebatch import WriteBatch

_NEVER = float("inf")
# A timer may fire up to a millisecond early (the loop's timer resolution).
_TIMER_SLACK_S = 0.001


class Expiring(Protocol):
    """A call with a deadline (loop time). ``done`` once answered; ``expire`` answers it
    with a timeout."""

    @property
    def done(self) -> bool: ...

    @property
    def deadline(self) -> float: ...

    def expire(self) -> None: ...


class Deadlines:
    """The deadlines of one owner's calls (one client connection, say)."""

    __slots__ = ("_at", "_batch", "_queues", "_timer", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, batch: WriteBatch | None = None) -> None:
        self.loop = loop
        # Expiries answered in one sweep are written as one batch.
        self._batch = batch
        self._queues: dict[int, deque[Expiring]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._at = _NEVER

    @property
    def armed(self) -> bool:
        return self._timer is not None

    def __len__(self) -> int:
        """Calls queued, answered ones not yet swept included."""
        return sum(len(queue) for queue in self._queues.values())

    def add(self, call: Expiring, timeout_ms: int) -> None:
        """Watch ``call``, whose ``deadline`` is its start plus ``timeout_ms``."""
        queue = self._queues.get(timeout_ms)
        if queue is None:
            queue = self._queues[timeout_ms] = deque()
        else:
            while queue and queue[0].done:  # answered calls leave from the front
                queue.popleft()
        queue.append(call)
        deadline = call.deadline
        if deadline < self._at:
            self._arm(deadline)

    def clear(self) -> None:
        """Forget every call and disarm (the owner is gone)."""
        self._queues.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._at = _NEVER

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._at = when
        self._timer = self.loop.call_at(when, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        self._at = _NEVER
        now = self.loop.time() + _TIMER_SLACK_S
        next_at = _NEVER
        batch = self._batch
        outer = batch is not None and not batch.active
        if batch is not None:
            batch.active = True
        try:
            for timeout_ms, queue in list(self._queues.items()):
                while queue:
                    call = queue[0]
                    if call.done:
                        queue.popleft()
                    elif call.deadline <= now:
                        queue.popleft()
                        call.expire()
                    else:
                        next_at = min(next_at, call.deadline)
                        break
                if not queue:
                    self._queues.pop(timeout_ms, None)
        finally:
            if outer:
                assert batch is not None
                batch.finish()
        # An expiry may have cleared everything (the owner closed): then stay disarmed.
        if self._queues and next_at < self._at:
            self._arm(next_at)
