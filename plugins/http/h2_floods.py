"""HTTP/2 flood limits of the HTTP listener's HTTP/2 side (plugins/http/h2_listener.py),
which runs python-h2; the gRPC ``relay: h2`` runs the agent's own engine, which counts the
same floods itself at the same default limits (agent/h2/connection.py).

The 2023 rapid-reset attack (CVE-2023-44487) opens streams and resets them at once, so
that the server starts work for each and the client pays nothing; control-frame floods
(SETTINGS, PING) make the server answer each. Streams the client resets and SETTINGS and
PING frames are counted per second; past either limit the connection is refused
(GOAWAY ENHANCE_YOUR_CALM, then closed) by the caller, which logs why.
"""

from __future__ import annotations

import time

import h2.events

DEFAULT_MAX_RESETS_PER_S = 100
DEFAULT_MAX_CONTROL_FRAMES_PER_S = 100


class RateLimit:
    """Counts events in the current one-second window."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.window = 0
        self.count = 0

    def exceeded(self) -> bool:
        now = int(time.monotonic())
        if now != self.window:
            self.window = now
            self.count = 0
        self.count += 1
        return self.count > self.limit


class FloodGuard:
    """One connection's counters; :meth:`check` says why to refuse it, or None."""

    def __init__(
        self,
        max_resets_per_s: int = DEFAULT_MAX_RESETS_PER_S,
        max_control_frames_per_s: int = DEFAULT_MAX_CONTROL_FRAMES_PER_S,
    ) -> None:
        self.resets = RateLimit(max_resets_per_s)
        self.control = RateLimit(max_control_frames_per_s)

    def check(self, event: h2.events.Event) -> str | None:
        if isinstance(event, h2.events.StreamReset):
            if event.remote_reset and self.resets.exceeded():
                return f"over {self.resets.limit} stream resets per second (rapid reset)"
            return None
        control = isinstance(event, h2.events.RemoteSettingsChanged | h2.events.PingReceived)
        if control and self.control.exceeded():
            return f"over {self.control.limit} SETTINGS/PING frames per second"
        return None
