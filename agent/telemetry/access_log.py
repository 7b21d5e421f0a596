"""The access log: one JSON line per finished call, off by default, sampled when on.

An observer on the :class:`agent.calls.Calls` hub. Lines go to a file (appended, one
``write`` per line so concurrent writers of the same file do not interleave) or to stdout
(``path: "-"``), never through the logging module, whose handlers and formatting would cost
more than the line and mix it with the agent's own logs.
"""

from __future__ import annotations

import json
import random
import sys
import time
from typing import IO, Any

from agent.calls import Call, CallObserver
from agent.telemetry import propagation as p

NAME = "access_log"
TRACE_ID = "trace_id"  # set by tracing in call.state when it is on


class AccessLog(CallObserver):
    name = NAME

    def __init__(
        self,
        path: str = "-",
        sample_ratio: float = 1.0,
        rand: Any = random.random,
        worker: str = "",
    ) -> None:
        self.sample_ratio = sample_ratio
        # With workers (docs/workers.md) each line says which process served the call.
        self.worker = worker
        self.rand = rand
        self.stream: IO[str]
        if path == "-":
            self.stream = sys.stdout
            self._owned = False
        else:
            self.stream = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            self._owned = True
        self.written = 0
        self.failed = 0

    def call_finished(self, call: Call) -> None:
        if self.sample_ratio < 1.0 and self.rand() >= self.sample_ratio:
            return
        try:
            line = entry(call)
            if self.worker:
                line["worker"] = self.worker
            self.stream.write(json.dumps(line, separators=(",", ":")) + "\n")
            self.stream.flush()
            self.written += 1
        except (OSError, ValueError):
            # A full disk must not fail calls: the line is lost and counted.
            self.failed += 1

    def close(self) -> None:
        if self._owned:
            self.stream.close()


def entry(call: Call) -> dict[str, Any]:
    route = call.route
    hub = call.hub
    now = hub.clock() if hub is not None else call.started
    trace_id = call.state.get(TRACE_ID)
    if trace_id is None:
        parent, _ = p.incoming_trace(call.incoming)
        trace_id = parent.trace_id if parent is not None else ""
    line: dict[str, Any] = {
        "time": round(time.time() - (now - call.started), 6),
        "trace_id": trace_id,
        "protocol": call.protocol,
        "direction": call.direction.value,
        "from": route.source,
        "from_cluster": route.source_cluster,
        "to": route.target,
        "to_cluster": route.target_cluster,
        "method": route.method,
        "outcome": call.outcome.value if call.outcome is not None else "",
        "status": call.status,
        "duration_ms": round((now - call.started) * 1000, 3),
        "attempts": [
            {
                "endpoint": a.endpoint,
                "outcome": a.outcome.value if a.outcome is not None else "",
                "status": a.status,
                "duration_ms": round(((a.ended or now) - a.started) * 1000, 3),
            }
            for a in call.attempts
        ],
    }
    if call.deadline is not None:
        # The budget the call had when it arrived (what the caller sent, bounded).
        line["budget_ms"] = round((call.deadline - call.started) * 1000, 3)
    if call.attempts:
        line["endpoint"] = call.attempts[-1].endpoint
    if call.error is not None:
        line["error"] = str(call.error)[:512]
    return line
