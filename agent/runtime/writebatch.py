"""Write coalescing across the connections of one event loop.

While one ``data_received`` runs (a client's read of several requests, or a provider's
read of several answers), the frames it produces are queued on the connection they go to
instead of written one by one; when the read is handled, each connection that got frames
writes them with one ``write``/``writelines``, i.e. one send syscall instead of one per
frame (a syscall per message costs more than everything else on a proxy's path). Order on
each connection is the order the frames were produced. Outside a read (timers, connect
tasks) writes go straight to the transport.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Flushable(Protocol):
    """A connection that queues its frames while a :class:`WriteBatch` is active."""

    def flush(self) -> None: ...


class WriteBatch:
    """One per pool (shared with the listeners that use it): who is inside a read, and
    which connections have frames queued for the end of it.

    A reader does ``outer = not batch.active; batch.active = True`` before handling its
    bytes and ``if outer: batch.finish()`` after, so nested reads (a waiter that writes
    from inside a provider's read) join the outer batch.
    """

    __slots__ = ("active", "dirty")

    def __init__(self) -> None:
        self.active = False
        self.dirty: list[Flushable] = []

    def finish(self) -> None:
        """End the batch: every connection written to flushes its queue, in that order."""
        self.active = False
        dirty = self.dirty
        if dirty:
            self.dirty = []
            for writer in dirty:
                writer.flush()


def write_all(transport: asyncio.Transport, out: list[bytes]) -> None:
    """Write queued frames with one call (one send syscall on uvloop)."""
    if len(out) == 1:
        transport.write(out[0])
    else:
        transport.writelines(out)
