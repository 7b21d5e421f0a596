"""Deadlines: one timer per owner, expiries in deadline order, answered calls dropped."""

from __future__ import annotations

import asyncio
from typing import Any

from agent.runtime.deadlines import Deadlines
from agent.runtime.writebatch import WriteBatch
from tests.fixtures.net import async_wait_until


class Call:
    def __init__(self, name: str, deadline: float, expired: list[str]) -> None:
        self.name = name
        self.deadline = deadline
        self.done = False
        self._expired = expired

    def expire(self) -> None:
        self.done = True
        self._expired.append(self.name)


class CountingLoop:
    """The running loop, counting the timers armed on it."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.armed: list[float] = []

    def time(self) -> float:
        return self.loop.time()

    def call_at(self, when: float, callback: Any) -> asyncio.TimerHandle:
        self.armed.append(when)
        return self.loop.call_at(when, callback)


async def test_calls_expire_in_deadline_order_with_one_timer_at_a_time() -> None:
    loop = CountingLoop()
    deadlines = Deadlines(loop)  # type: ignore[arg-type]
    expired: list[str] = []
    now = loop.time()
    slow = [Call(f"slow{i}", now + 0.2 + i * 0.01, expired) for i in range(3)]
    fast = [Call(f"fast{i}", now + 0.05 + i * 0.01, expired) for i in range(3)]
    for call in slow:
        deadlines.add(call, 200)
    for call in fast:
        deadlines.add(call, 50)
    fast[1].done = True  # answered: never expired
    slow[0].done = True
    await async_wait_until(lambda: len(expired) == 4, within=5)
    assert expired == ["fast0", "fast2", "slow1", "slow2"]
    assert len(deadlines) == 0 and not deadlines.armed
    # Armed for slow0, re-armed for fast0 (earlier), then as the sweeps went: not six.
    assert len(loop.armed) <= 5
    assert loop.armed[:2] == [slow[0].deadline, fast[0].deadline]


async def test_answered_calls_leave_the_queue_as_new_ones_come() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    expired: list[str] = []
    now = asyncio.get_running_loop().time()
    for i in range(100):
        call = Call(str(i), now + 10, expired)
        deadlines.add(call, 10_000)
        call.done = True
    # Each add first drops the answered calls at the front: the queue stays short.
    assert len(deadlines) == 1
    deadlines.clear()
    assert not deadlines.armed and len(deadlines) == 0


async def test_expiries_of_one_sweep_are_written_as_one_batch() -> None:
    batch = WriteBatch()
    seen: list[bool] = []

    class Flushing(Call):
        def expire(self) -> None:
            seen.append(batch.active)
            super().expire()

    deadlines = Deadlines(asyncio.get_running_loop(), batch)
    expired: list[str] = []
    now = asyncio.get_running_loop().time()
    for i in range(3):
        deadlines.add(Flushing(str(i), now + 0.02, expired), 20)
    await async_wait_until(lambda: len(expired) == 3, within=5)
    assert seen == [True, True, True]
    assert not batch.active
