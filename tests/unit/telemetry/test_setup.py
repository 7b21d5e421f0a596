from __future__ import annotations

from pathlib import Path

from agent.calls import CallRejected, Calls, Direction
from agent.config import TelemetryConfig
from agent.telemetry.access_log import AccessLog
from agent.telemetry.call_metrics import CallMetrics
from agent.telemetry.context import CallContext
from agent.telemetry.setup import install
from agent.telemetry.tracing import Tracing


def test_defaults_are_context_and_metrics_only() -> None:
    calls = Calls("app")
    telemetry = install(calls, TelemetryConfig())
    assert isinstance(telemetry.context, CallContext)
    assert isinstance(telemetry.metrics, CallMetrics)
    assert telemetry.tracing is None and telemetry.access_log is None
    assert calls.policies == [telemetry.context]
    assert calls.observers == [telemetry.context, telemetry.metrics]


def test_everything_on_and_context_first_among_policies(tmp_path: Path) -> None:
    calls = Calls("app")

    class Governance(CallContext):
        pass

    governance = Governance()
    calls.policies.append(governance)
    config = TelemetryConfig.model_validate(
        {
            "tracing": {"enabled": True, "exporter": "otlp_http", "export_timeout_s": 0.2},
            "access_log": {"enabled": True, "path": str(tmp_path / "a.log")},
            "context": {"max_hops": 2},
        }
    )
    telemetry = install(calls, config)
    try:
        assert isinstance(telemetry.tracing, Tracing)
        assert isinstance(telemetry.access_log, AccessLog)
        assert calls.policies == [telemetry.context, governance]
        try:
            calls.start(
                "dubbo", Direction.INVOKE, calls.outbound_route("s", "m"), {"x-meshagent-hops": "2"}
            )
        except CallRejected as exc:
            assert exc.reason == "loop"
        else:
            raise AssertionError("a call at max_hops was admitted")
    finally:
        telemetry.close()


def test_context_off_reads_and_sends_nothing() -> None:
    calls = Calls("app")
    telemetry = install(calls, TelemetryConfig.model_validate({"context": {"enabled": False}}))
    assert telemetry.context is None and calls.policies == []
    call = calls.start(
        "dubbo", Direction.INVOKE, calls.outbound_route("s", "m"), {"x-meshagent-hops": "999"}
    )
    assert call.outgoing(call.begin_attempt("h:1")) == {}
