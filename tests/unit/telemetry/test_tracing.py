from __future__ import annotations

import threading
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from agent.calls import Calls, Direction, Outcome
from agent.config import TracingConfig
from agent.errors import UpstreamTimeout
from agent.telemetry import propagation as p
from agent.telemetry.context import CallContext
from agent.telemetry.tracing import Tracing

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def traced(exporter: SpanExporter, **config: object) -> tuple[Calls, Tracing]:
    calls = Calls("app-a", "c1")
    context = CallContext()
    calls.policies.append(context)
    calls.observers.append(context)
    tracing = Tracing(TracingConfig(enabled=True, **config), "app-a", exporter)  # type: ignore[arg-type]
    calls.observers.append(tracing)
    return calls, tracing


def test_server_span_per_call_client_span_per_attempt_under_the_callers_trace() -> None:
    exporter = InMemorySpanExporter()
    calls, tracing = traced(exporter)
    call = calls.start(
        "dubbo",
        Direction.OUTBOUND,
        calls.outbound_route("org.Demo", "sayHello"),
        {p.TRACEPARENT: f"00-{TRACE}-{SPAN}-01", p.TRACESTATE: "vendor=x"},
    )
    first = call.begin_attempt("10.0.0.1:20880")
    call.end_attempt(first, Outcome.CONNECT_ERROR)
    second = call.begin_attempt("10.0.0.2:20880")
    sent = p.parse_traceparent(call.outgoing(second)[p.TRACEPARENT])
    call.end_attempt(second, Outcome.OK, "20")
    call.finish(Outcome.OK, "20")
    tracing.shutdown()
    spans = {s.context.span_id: s for s in exporter.get_finished_spans()}
    assert len(spans) == 3
    server = next(s for s in spans.values() if s.kind is SpanKind.SERVER)
    clients = [s for s in spans.values() if s.kind is SpanKind.CLIENT]
    assert server.context.trace_id == int(TRACE, 16)
    assert server.parent is not None and server.parent.span_id == int(SPAN, 16)
    assert server.attributes is not None
    assert server.attributes["rpc.system"] == "apache_dubbo"
    assert server.attributes["rpc.service"] == "org.Demo"
    assert server.attributes["rpc.method"] == "sayHello"
    assert server.attributes["meshagent.retries"] == 1
    assert {c.parent.span_id for c in clients if c.parent} == {server.context.span_id}
    assert sorted(str(c.attributes["server.address"]) for c in clients if c.attributes) == [
        "10.0.0.1",
        "10.0.0.2",
    ]
    # What went on the wire is the second attempt's own span, sampled, tracestate kept.
    assert sent is not None and sent.trace_id == TRACE and sent.sampled
    assert int(sent.span_id, 16) in spans
    assert spans[int(sent.span_id, 16)].kind is SpanKind.CLIENT
    assert call.outgoing(second)[p.TRACESTATE] == "vendor=x"


def test_failed_call_span_has_error_status_and_chain() -> None:
    exporter = InMemorySpanExporter()
    calls, tracing = traced(exporter)
    call = calls.start("dubbo", Direction.INVOKE, calls.outbound_route("svc", "m"), {})
    call.end_attempt(call.begin_attempt("h:1"), Outcome.TIMEOUT)
    call.fail(UpstreamTimeout("slow provider"))
    tracing.shutdown()
    server = next(s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER)
    assert server.status.status_code is StatusCode.ERROR
    assert server.attributes is not None
    chain = server.attributes["meshagent.error_chain"]
    assert isinstance(chain, tuple) and "endpoint=h:1" in chain[-1] and "svc" in chain[-1]


def test_malformed_traceparent_starts_a_new_trace_and_is_counted() -> None:
    exporter = InMemorySpanExporter()
    calls, tracing = traced(exporter)
    call = calls.start(
        "dubbo", Direction.INVOKE, calls.outbound_route("svc", "m"), {p.TRACEPARENT: "junk"}
    )
    call.finish(Outcome.OK)
    tracing.shutdown()
    (span,) = exporter.get_finished_spans()
    assert span.parent is None
    assert tracing.stats.invalid_context == 1


def test_ratio_zero_samples_nothing_but_propagates_ids_and_keeps_parent_decision() -> None:
    exporter = InMemorySpanExporter()
    calls, tracing = traced(exporter, sample_ratio=0.0)
    call = calls.start("dubbo", Direction.INVOKE, calls.outbound_route("svc", "m"), {})
    sent = p.parse_traceparent(call.outgoing(call.begin_attempt("h:1"))[p.TRACEPARENT])
    call.finish(Outcome.OK)
    assert sent is not None and not sent.sampled
    # A caller that sampled is followed (parent-based).
    parented = calls.start(
        "dubbo",
        Direction.INVOKE,
        calls.outbound_route("svc", "m"),
        {p.TRACEPARENT: f"00-{TRACE}-{SPAN}-01"},
    )
    parented.finish(Outcome.OK)
    tracing.shutdown()
    assert [s.context.trace_id for s in exporter.get_finished_spans()] == [int(TRACE, 16)]


class _Stuck(SpanExporter):
    """A collector that never answers (until released)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(10)
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self.release.set()


def test_full_queue_drops_and_counts_without_blocking_calls() -> None:
    stuck = _Stuck()
    calls, tracing = traced(stuck, max_queue=8, batch_size=2, schedule_delay_s=0.01)
    for _ in range(200):
        call = calls.start("dubbo", Direction.INVOKE, calls.outbound_route("svc", "m"), {})
        call.finish(Outcome.OK)
    stats = tracing.stats
    assert stats.started == 200
    assert stats.dropped >= 200 - 8 - 2 * 2  # at most a queue and a batch or two in flight
    stuck.release.set()
    tracing.shutdown()
    assert stats.export_failed + stats.exported + stats.dropped == 200


def test_no_collector_calls_go_on_and_failures_are_counted() -> None:
    import socket
    import time

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    calls = Calls("app-a")
    tracing = Tracing(
        TracingConfig(
            enabled=True,
            exporter="otlp_http",
            endpoint=f"http://127.0.0.1:{port}/v1/traces",
            export_timeout_s=0.5,
            schedule_delay_s=0.05,
        ),
        "app-a",
    )
    calls.observers.append(tracing)
    started = time.monotonic()
    for _ in range(50):
        call = calls.start("dubbo", Direction.INVOKE, calls.outbound_route("svc", "m"), {})
        call.end_attempt(call.begin_attempt("h:1"), Outcome.OK)
        call.finish(Outcome.OK)
    assert time.monotonic() - started < 0.5  # export is off the caller's path
    tracing.shutdown()
    assert tracing.stats.exported == 0
    assert tracing.stats.export_failed + tracing.stats.dropped == 100
