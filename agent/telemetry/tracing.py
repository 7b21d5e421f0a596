"""Tracing: a server span per call, a client span per attempt, exported over OTLP.

An observer on the :class:`agent.calls.Calls` hub. The call's parent is the trace context
that arrived (W3C ``traceparent``/``tracestate``, or B3; see propagation.py); each attempt
gets a client span whose context goes out as ``traceparent`` in the protocol's metadata, so
retries show as sibling spans under the call.

Export runs on the OpenTelemetry SDK's batch processor thread, never on the event loop: a
collector that is slow or gone fills a bounded queue whose overflow is dropped and counted
(:class:`TracingStats`), and calls go on as before. Sampling is parent-based with a ratio
for new traces, so an upstream's decision is kept across agents.

The SDK is imported only when tracing is enabled (the ``tracing`` extra).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from agent.calls import Attempt, Call, CallObserver, Outcome
from agent.errors import MeshAgentError
from agent.telemetry import propagation as p
from agent.telemetry.context import chain_of

if TYPE_CHECKING:
    from agent.config import TracingConfig

log = logging.getLogger(__name__)

NAME = "tracing"
# The call's trace id as hex, for the access log (call.state).
TRACE_ID = "trace_id"

# rpc.system by protocol (OpenTelemetry semantic conventions' registered values).
_RPC_SYSTEM = {"dubbo": "apache_dubbo", "grpc": "grpc", "thrift": "apache_thrift"}


# Ids need to be unique, not secret (the SDK uses the same generator).
_span_bits = random.getrandbits


class _Unsampled(NamedTuple):
    """An unsampled call's trace: ids are passed on, nothing is recorded (a tuple: most
    calls at a low ratio build one, and a frozen dataclass costs several times more).

    ``traceparent`` is what every attempt sends: the trace id and one span id made for
    the call. Nothing records an unsampled span, so retries need no ids of their own
    (and a downstream agent only reads the trace id and the sampled flag).
    """

    traceparent: str
    tracestate: str


def _new_unsampled_traceparent() -> str:
    """A new trace's ``traceparent``, not sampled: 192 random bits as the trace id and
    span id, hex-formatted in C (formatting two ints costs twice as much)."""
    bits = _span_bits(192)
    while not (bits >> 64 and bits & _SPAN_MASK):  # all-zero ids are invalid (W3C)
        bits = _span_bits(192)
    ids = bits.to_bytes(24).hex()
    return f"00-{ids[:32]}-{ids[32:]}-00"


_SPAN_MASK = (1 << 64) - 1


@dataclass
class TracingStats:
    """Read at scrape time; written from the loop and the export thread (plain ints)."""

    started: int = 0  # spans ended and handed to the processor
    handed: int = 0  # spans taken from the queue by the export thread
    exported: int = 0
    export_failed: int = 0  # spans in batches the collector did not take
    dropped: int = 0  # spans that found the queue full
    invalid_context: int = 0  # trace headers that arrived unreadable (a new trace began)


class _CountingExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, stats: TracingStats) -> None:
        self.inner = inner
        self.stats = stats

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.stats.handed += len(spans)  # out of the queue now
        try:
            result = self.inner.export(spans)
        except Exception:  # an exporter bug must not kill the export thread
            log.exception("span export failed")
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self.stats.exported += len(spans)
        else:
            self.stats.export_failed += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _CountingProcessor(SpanProcessor):
    """The batch processor, counting what its full queue drops (the SDK only logs it):
    spans ended, less those taken for export and those dropped, is what waits in the
    queue. Read without a lock across two threads, so the count may be off by a span or
    two under a race; it is a health signal, not an audit."""

    def __init__(self, inner: BatchSpanProcessor, stats: TracingStats, max_queue: int) -> None:
        self.inner = inner
        self.stats = stats
        self.max_queue = max_queue

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        stats = self.stats
        queued = stats.started - stats.handed - stats.dropped
        if queued >= self.max_queue:
            stats.dropped += 1  # the SDK's deque drops one to make room
        stats.started += 1
        self.inner.on_end(span)

    def shutdown(self) -> None:
        self.inner.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def build_exporter(config: TracingConfig) -> SpanExporter:
    """The OTLP exporter the config names (imported here: each pulls its own stack)."""
    if config.exporter == "otlp_grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter(
            endpoint=config.endpoint or "http://127.0.0.1:4317",
            insecure=True,
            timeout=config.export_timeout_s,
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter(
        endpoint=config.endpoint or "http://127.0.0.1:4318/v1/traces",
        timeout=config.export_timeout_s,
    )


def _parent(parent: p.TraceParent | None, stats: TracingStats) -> Any:
    """The OpenTelemetry context of the caller's span, or None for a new trace."""
    if parent is None:
        return None
    state = TraceState()
    if parent.tracestate:
        try:
            state = TraceState.from_header([parent.tracestate])
        except Exception:  # a malformed tracestate is dropped, the traceparent kept
            stats.invalid_context += 1
    context = SpanContext(
        int(parent.trace_id, 16),
        int(parent.span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if parent.sampled else TraceFlags.DEFAULT),
        trace_state=state,
    )
    return trace.set_span_in_context(NonRecordingSpan(context))


def traceparent_of(span: Span) -> tuple[str, str]:
    context = span.get_span_context()
    header = p.TraceParent(
        f"{context.trace_id:032x}", f"{context.span_id:016x}", bool(context.trace_flags & 1)
    ).header()
    return header, context.trace_state.to_header() if context.trace_state else ""


class Tracing(CallObserver):
    name = NAME

    def __init__(
        self,
        config: TracingConfig,
        app: str,
        exporter: SpanExporter | None = None,
        rand: Callable[[], float] = random.random,
        worker: str = "",
    ) -> None:
        self.stats = TracingStats()
        self.sample_ratio = config.sample_ratio
        self.rand = rand
        attributes = {"service.name": app or "meshagent"}
        if worker:
            # Which worker process served the span's call (docs/workers.md).
            attributes["meshagent.worker"] = worker
        resource = Resource.create(attributes)
        # Calls reach the SDK only once sampled (call_started decides: parent-based, else
        # the ratio), so the SDK records everything it is given.
        self.provider = TracerProvider(resource=resource, sampler=ALWAYS_ON)
        batch = BatchSpanProcessor(
            _CountingExporter(exporter or build_exporter(config), self.stats),
            max_queue_size=config.max_queue,
            max_export_batch_size=min(config.batch_size, config.max_queue),
            schedule_delay_millis=config.schedule_delay_s * 1000,
            export_timeout_millis=config.export_timeout_s * 1000,
        )
        self.provider.add_span_processor(_CountingProcessor(batch, self.stats, config.max_queue))
        self.tracer = self.provider.get_tracer("meshagent")

    def call_started(self, call: Call) -> None:
        route = call.route
        parent: p.TraceParent | None = None
        if call.incoming:  # most calls from an app bring no trace context
            parent, invalid = p.incoming_trace(call.incoming)
            if invalid:
                self.stats.invalid_context += 1
        # The sampling decision is made here, before the SDK: an unsampled call (most of
        # them at 1%) only passes ids on, which costs a fraction of a non-recording span.
        if parent is None:
            if self.rand() >= self.sample_ratio:
                traceparent = _new_unsampled_traceparent()
                call.state[NAME] = _Unsampled(traceparent, "")
                call.state[TRACE_ID] = traceparent[3:35]
                return
        elif not parent.sampled:
            traceparent = f"00-{parent.trace_id}-{_span_bits(64) or 1:016x}-00"
            call.state[NAME] = _Unsampled(traceparent, parent.tracestate)
            call.state[TRACE_ID] = parent.trace_id
            return
        # The agent serves the request it read (an invocation, a listener's request) and is
        # the client of each attempt: SERVER here, CLIENT per attempt.
        span = self.tracer.start_span(
            f"{route.target}/{route.method}",
            context=_parent(parent, self.stats),
            kind=SpanKind.SERVER,
            attributes={
                "rpc.system": _RPC_SYSTEM.get(call.protocol, call.protocol),
                "rpc.service": route.target,
                "rpc.method": route.method,
                "meshagent.direction": call.direction.value,
                "meshagent.source": route.source,
                "meshagent.source_cluster": route.source_cluster,
                "meshagent.target_cluster": route.target_cluster,
            },
        )
        call.state[NAME] = span
        call.state[TRACE_ID] = f"{span.get_span_context().trace_id:032x}"

    def attempt_started(self, call: Call, attempt: Attempt) -> None:
        parent = call.state.get(NAME)
        if parent is None:
            return
        if type(parent) is _Unsampled:
            attempt.headers[p.TRACEPARENT] = parent.traceparent
            if parent.tracestate:
                attempt.headers[p.TRACESTATE] = parent.tracestate
            return
        host, _, port = attempt.endpoint.rpartition(":")
        attributes: dict[str, Any] = {
            "rpc.system": _RPC_SYSTEM.get(call.protocol, call.protocol),
            "rpc.service": call.route.target,
            "rpc.method": call.route.method,
            "server.address": host or attempt.endpoint,
            "meshagent.attempt": len(call.attempts),
        }
        if port.isdigit():
            attributes["server.port"] = int(port)
        span = self.tracer.start_span(
            f"{call.route.target}/{call.route.method}",
            context=trace.set_span_in_context(parent),
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        attempt.state[NAME] = span
        header, state = traceparent_of(span)
        attempt.headers[p.TRACEPARENT] = header
        if state:
            attempt.headers[p.TRACESTATE] = state

    def attempt_finished(self, call: Call, attempt: Attempt) -> None:
        if not attempt.state:
            return  # unsampled
        span = attempt.state.pop(NAME, None)
        if span is None:
            return
        outcome = attempt.outcome
        span.set_attribute("meshagent.outcome", outcome.value if outcome else "")
        if attempt.status:
            span.set_attribute("meshagent.status", attempt.status)
        if outcome is not None and outcome is not Outcome.OK:
            span.set_status(Status(StatusCode.ERROR, outcome.value))
            span.set_attribute("error.type", outcome.value)
        span.end()

    def call_finished(self, call: Call) -> None:
        span = call.state.pop(NAME, None)
        if span is None or type(span) is _Unsampled:
            return
        # Attempts a protocol left open (a cancelled call) end with it.
        for attempt in call.attempts:
            leftover = attempt.state.pop(NAME, None)
            if leftover is not None:
                leftover.end()
        outcome = call.outcome
        span.set_attribute("meshagent.outcome", outcome.value if outcome else "")
        span.set_attribute("meshagent.retries", call.retries)
        if call.status:
            span.set_attribute("meshagent.status", call.status)
        if call.attempts:
            span.set_attribute("meshagent.endpoint", call.attempts[-1].endpoint)
        if outcome is not None and outcome is not Outcome.OK:
            span.set_status(
                Status(StatusCode.ERROR, str(call.error)[:256] if call.error else outcome.value)
            )
            span.set_attribute("error.type", type(call.error).__name__ if call.error else "")
            chain = call.error.chain if isinstance(call.error, MeshAgentError) else ()
            span.set_attribute(
                "meshagent.error_chain",
                [" ".join(f"{k}={v}" for k, v in hop.items()) for hop in chain or chain_of(call)],
            )
        span.end()

    def shutdown(self) -> None:
        """Export what is queued (bounded by the export timeout) and stop the thread."""
        self.provider.shutdown()
