"""Bounded waits and a consumer-side model, for the registry integration and contract tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from agent.discovery.registry import Subscription
from agent.discovery.types import Add, Instance, Remove, Reset, Update

WAIT_S = 15.0


async def next_update(subscription: Subscription, within_s: float = WAIT_S) -> Update:
    return await asyncio.wait_for(anext(aiter(subscription)), within_s)


async def no_update(subscription: Subscription, within: float = 0.5) -> None:
    """Nothing arrives within ``within`` seconds (a bound on absence, not a sync point)."""
    try:
        update = await asyncio.wait_for(anext(aiter(subscription)), within)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected update {update}")


async def eventually(check: Callable[[], bool], within_s: float = WAIT_S, what: str = "") -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.02)


class Consumer:
    """What the cluster does with updates: the contract of agent.discovery.types."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.instances: dict[str, Instance] = {}
        self.updates: list[Update] = []
        self.resets = 0

    def apply(self, update: Update) -> None:
        self.updates.append(update)
        if isinstance(update, Reset):
            self.resets += 1
            self.instances = {i.id: i for i in update.instances}
        elif isinstance(update, Add):
            known = self.instances.get(update.instance.id)
            if known is None or update.instance.revision >= known.revision:
                self.instances[update.instance.id] = update.instance
        elif isinstance(update, Remove):
            known = self.instances.get(update.instance_id)
            if known is not None and known.revision <= update.registration_revision:
                del self.instances[update.instance_id]

    async def until(self, check: Callable[[Consumer], bool], within_s: float = WAIT_S) -> None:
        deadline = time.monotonic() + within_s
        while not check(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out; instances {sorted(self.instances)}")
            try:
                self.apply(await next_update(self.subscription, remaining))
            except TimeoutError:
                raise AssertionError(
                    f"timed out; instances {sorted(self.instances)}, updates {self.updates}"
                ) from None
