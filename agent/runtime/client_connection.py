"""What the request-aware listeners (Dubbo, Thrift) share about a client's connection:
accepting it into the listener's stats and drain set, writing answers through the pool's
:class:`WriteBatch` (queued during a read, one send at its end), pausing reading for any
of several reasons at once, and holding partly received requests within the listener's
:class:`~agent.runtime.admission.BufferBudget`.

The protocols keep everything about their frames; this is only the transport side.
"""

from __future__ import annotations

import asyncio
from typing import cast

from agent.runtime.protocols import ListenerContext
from agent.runtime.writebatch import WriteBatch, write_all

# Why reading is paused; a bit each, reading resumes when none is left.
PAUSE_CLIENT_WRITE = 1  # the client does not read its responses fast enough
PAUSE_UPSTREAM = 2  # a provider connection's write buffer is over its high-water mark
PAUSE_BUFFERS = 4  # the listener holds more partly received requests than it may
PAUSE_YIELD = 8  # one chunk of a large request per turn of the loop


class BatchedClientConnection(asyncio.Protocol):
    def __init__(self, context: ListenerContext, batch: WriteBatch) -> None:
        self.context = context
        self.transport: asyncio.Transport | None = None
        # lost: connection_lost ran (the subclass sets it); nothing is written after.
        self.lost = False
        self.peer = ""
        self.batch = batch
        self._out: list[bytes] = []
        self.paused = 0
        # Bytes of partly received requests this connection holds, as last accounted.
        self.held = 0

    # -- reading: paused for any of several reasons ------------------------------------

    def pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    # -- partly received requests ------------------------------------------------------

    def hold(self, buffered: int) -> None:
        """After a read: the decoder holds ``buffered`` bytes of requests not yet whole."""
        if buffered == self.held:
            return
        before, self.held = self.held, buffered
        if self.context.buffers.update(self, before, buffered):
            self.pause(PAUSE_BUFFERS)

    def resume_buffers(self) -> None:
        self.resume(PAUSE_BUFFERS)

    def partial_timed_out(self, held_s: float) -> None:
        """A request has been arriving for too long; the protocol answers and closes."""
        if self.transport is not None:
            self.transport.close()

    def release_held(self) -> None:
        """On connection_lost: what this connection held is no longer held."""
        if self.held:
            held, self.held = self.held, 0
            self.context.buffers.forget(self, held)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        stats = self.context.stats
        stats.accepted += 1
        stats.active += 1
        self.context.track(self.transport)

    def write(self, data: bytes) -> None:
        if self.lost or self.transport is None:
            return
        self.context.stats.bytes_out += len(data)
        batch = self.batch
        if batch.active:
            out = self._out
            if not out:
                batch.dirty.append(self)
            out.append(data)
        else:
            self.transport.write(data)

    def flush(self) -> None:
        """Write what the current batch queued for this client (in one send)."""
        out = self._out
        if not out:
            return
        self._out = []
        if not self.lost and self.transport is not None and not self.transport.is_closing():
            write_all(self.transport, out)
