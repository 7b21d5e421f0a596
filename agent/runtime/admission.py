"""Budgets: how many client connections a listener, and the agent as a whole, keep open
at once (:class:`ConnectionBudget`), and how many bytes of partly received requests a
listener holds (:class:`BufferBudget`).

Every accepted connection costs a file descriptor (a relayed one, two). Without a bound a
client that opens connections and says nothing takes the agent to its open-file limit,
and then every listener, the API and the registry sessions fail together (issue 25). So:

- each listener has its own limit (``listeners[].max_connections``, the API's
  ``admin.max_connections``), so one flooded listener cannot take the others' share;
- all listeners draw on one agent-wide :class:`ConnectionBudget`, sized from the
  open-file limit less a headroom for what the agent opens itself (registry sessions,
  health checks, log files) and less the API's own ``admin.max_connections``: a flooded
  listener cannot take ``/healthz`` and the management API down with it;
- a connection over either limit is closed as soon as it is accepted, counted, and logged
  (at most once per listener every ``LOG_EVERY_S``), and the listener keeps accepting:
  the slot frees when any connection closes, and the others are served throughout.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from typing import Protocol, cast

log = logging.getLogger(__name__)

# Descriptors kept out of the client budget for the agent's own: registry sessions,
# health checks, config files, logs, and the process's standard streams.
HEADROOM = 128
# At most one log line per listener this often while connections are refused.
LOG_EVERY_S = 10.0


def default_budget(reserved: int, headroom: int = HEADROOM) -> int:
    """Listeners' client connections the open-file limit allows: half of what is left
    after the headroom and ``reserved`` (the API's), since a relayed client connection
    brings an upstream one with it."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(1, (soft - headroom - reserved) // 2)


class ConnectionBudget:
    """The client connections open across every listener, against one limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.refused = 0

    def full(self) -> bool:
        return self.open >= self.limit


class Refusals:
    """One listener's refused connections: counted always, logged at most once per
    ``LOG_EVERY_S`` with how many were refused since the last line."""

    def __init__(self, listener: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.listener = listener
        self.total = 0
        self._clock = clock
        self._logged_at: float | None = None
        self._unlogged = 0

    def refuse(self, transport: asyncio.BaseTransport, why: str, limit: int) -> None:
        self.total += 1
        self._unlogged += 1
        now = self._clock()
        if self._logged_at is None or now - self._logged_at >= LOG_EVERY_S:
            log.warning(
                "connection refused: %s",
                why,
                extra={
                    "listener": self.listener,
                    "limit": limit,
                    "refused_since_last_line": self._unlogged,
                    "refused_total": self.total,
                },
            )
            self._logged_at = now
            self._unlogged = 0
        cast(asyncio.Transport, transport).abort()


class AdmissionGate(asyncio.Protocol):
    """Decides an accepted connection: over a limit, closed at once; otherwise handed to
    the listener's protocol before any byte is read, so the gate costs nothing after.

    Decided in ``connection_made``, not in the protocol factory: the loop may accept a
    burst of connections before running any of their ``connection_made``, so only here
    are the counts exact (the protocols count themselves in on their ``connection_made``).
    """

    def __init__(
        self,
        open_now: Callable[[], int],
        limit: int,
        budget: ConnectionBudget,
        refusals: Refusals,
        factory: Callable[[], asyncio.Protocol],
    ) -> None:
        self.open_now = open_now
        self.limit = limit
        self.budget = budget
        self.refusals = refusals
        self.factory = factory

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.open_now() >= self.limit:
            self.refusals.refuse(transport, "the listener's max_connections are open", self.limit)
            return
        budget = self.budget
        if budget.full():
            budget.refused += 1
            self.refusals.refuse(transport, "the agent's connection budget is spent", budget.limit)
            return
        protocol = self.factory()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)


def gated(
    open_now: Callable[[], int],
    limit: int,
    budget: ConnectionBudget,
    refusals: Refusals,
    factory: Callable[[], asyncio.Protocol],
) -> Callable[[], asyncio.Protocol]:
    """A protocol factory for ``loop.create_server`` that admits by both limits."""
    return lambda: AdmissionGate(open_now, limit, budget, refusals, factory)


class BufferHolder(Protocol):
    """A connection that holds partly received requests (the Dubbo and Thrift listeners')."""

    def resume_buffers(self) -> None:
        """The listener's buffers have room again: read on."""

    def partial_timed_out(self, held_s: float) -> None:
        """A request has been arriving for longer than the listener allows: refuse it."""


class BufferBudget:
    """Bytes held in partly received requests across one listener's connections.

    Each connection's limit (max_message_bytes) bounds one client; this bounds their sum:
    past ``limit``, a connection that holds part of a request stops being read until
    others complete theirs (backpressure: its client's writes block, nothing is lost). A
    request still arriving ``timeout_s`` after it began closes its connection, so clients
    that start requests and never finish them cannot hold the budget (one sweep a second
    while any request is partly in).
    """

    def __init__(self, limit: int, timeout_s: float, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.timeout_s = timeout_s
        self.held = 0
        self.paused_total = 0
        self.timed_out_total = 0
        self._clock = clock
        self._since: dict[BufferHolder, float] = {}
        self._waiting: list[BufferHolder] = []
        self._sweeper: asyncio.TimerHandle | None = None

    def update(self, holder: BufferHolder, before: int, after: int) -> bool:
        """``holder`` held ``before`` bytes and holds ``after`` now; True when it must
        pause (it holds some, and the listener holds more than ``limit``)."""
        self.held += after - before
        if after and not before:
            self._since[holder] = self._clock()
            if self._sweeper is None:
                self._sweeper = asyncio.get_running_loop().call_later(1.0, self._sweep)
        elif before and not after:
            self._since.pop(holder, None)
        if after and self.held > self.limit:
            if holder not in self._waiting:
                self._waiting.append(holder)
                self.paused_total += 1
            return True
        if self._waiting and self.held <= self.limit:
            self._release()
        return False

    def forget(self, holder: BufferHolder, held: int) -> None:
        """``holder`` is gone with ``held`` bytes."""
        self.held -= held
        self._since.pop(holder, None)
        if holder in self._waiting:
            self._waiting.remove(holder)
        self._release()

    def _release(self) -> None:
        while self._waiting and self.held <= self.limit:
            self._waiting.pop(0).resume_buffers()

    def _sweep(self) -> None:
        self._sweeper = None
        now = self._clock()
        for holder, since in list(self._since.items()):
            if now - since > self.timeout_s:
                self.timed_out_total += 1
                self._since.pop(holder, None)
                holder.partial_timed_out(now - since)
        if self._since:
            self._sweeper = asyncio.get_running_loop().call_later(1.0, self._sweep)
