from __future__ import annotations

import json
from pathlib import Path

from agent.calls import Calls, Direction, Outcome
from agent.errors import ConnectError
from agent.telemetry import propagation as p
from agent.telemetry.access_log import AccessLog

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_one_json_line_per_call(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    calls = Calls("app-a", "c1")
    calls.observers.append(log)
    call = calls.start(
        "dubbo",
        Direction.OUTBOUND,
        calls.outbound_route("svc", "m"),
        {p.TRACEPARENT: f"00-{TRACE}-00f067aa0ba902b7-01"},
    )
    call.end_attempt(call.begin_attempt("10.0.0.1:20880"), Outcome.CONNECT_ERROR)
    call.fail(ConnectError("refused"))
    calls.start("http", Direction.INVOKE, calls.outbound_route("web", "GET"), None, 0.25).finish(
        Outcome.OK, "200"
    )
    log.close()
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert first["trace_id"] == TRACE
    assert (first["from"], first["from_cluster"], first["to"], first["method"]) == (
        "app-a",
        "c1",
        "svc",
        "m",
    )
    assert first["outcome"] == "connect_error" and first["error"] == "refused"
    assert first["endpoint"] == "10.0.0.1:20880"
    assert first["attempts"][0]["outcome"] == "connect_error"
    assert second["status"] == "200" and second["duration_ms"] >= 0
    assert second["budget_ms"] == 250.0 and "budget_ms" not in first


def test_sampled(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    draws = iter([0.05, 0.5, 0.09, 0.99])
    log = AccessLog(str(path), sample_ratio=0.1, rand=lambda: next(draws))
    calls = Calls("app-a")
    calls.observers.append(log)
    for _ in range(4):
        calls.start("tcp", Direction.OUTBOUND, calls.outbound_route("s", "")).finish(Outcome.OK)
    log.close()
    assert len(path.read_text().splitlines()) == 2
