"""Worker heartbeats in shared memory: the supervisor's watchdog without a message.

One 8-byte slot per worker in an anonymous shared mapping made before the zygote forks
(so every worker inherits it): a worker writes ``time.monotonic()`` into its slot on each
event-loop tick it already runs (agent/telemetry/loop_lag.py), and the supervisor reads
the slots on its own tick. A wedged loop stops writing, and the supervisor sees the slot
age; nothing wakes the supervisor in between (a ping and its answer would, twice a tick,
and a wake-up is what an idle process pays for most). CLOCK_MONOTONIC is one clock for
every process of a host, so the times compare.
"""

from __future__ import annotations

import mmap
import struct
import time

_SLOT = struct.Struct("d")


class Heartbeats:
    def __init__(self, count: int) -> None:
        self.count = count
        # MAP_SHARED (the default for an anonymous mapping here): forks share the pages.
        self._memory = mmap.mmap(-1, _SLOT.size * max(1, count))

    def beat(self, worker: int, now: float | None = None) -> None:
        _SLOT.pack_into(self._memory, _SLOT.size * worker, time.monotonic() if now is None else now)

    def last(self, worker: int) -> float:
        return float(_SLOT.unpack_from(self._memory, _SLOT.size * worker)[0])

    def close(self) -> None:
        self._memory.close()
