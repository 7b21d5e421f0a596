"""What the request-aware listeners (Dubbo, Thrift) share about a client's connection:
accepting it into the listener's stats and drain set, and writing answers through the
pool's :class:`WriteBatch` (queued during a read, one send at its end).

The protocols keep everything about their frames; this is only the transport side.
"""

from __future__ import annotations

import asyncio
from typing import cast

from agent.runtime.protocols import ListenerContext
from agent.runtime.writebatch import WriteBatch, write_all


class BatchedClientConnection(asyncio.Protocol):
    def __init__(self, context: ListenerContext, batch: WriteBatch) -> None:
        self.context = context
        self.transport: asyncio.Transport | None = None
        # lost: connection_lost ran (the subclass sets it); nothing is written after.
        self.lost = False
        self.peer = ""
        self.batch = batch
        self._out: list[bytes] = []

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
