"""gRPC's side of traffic governance on the listener (agent/governance).

A call a rule refuses ends with the status gRPC clients treat as overload:
RESOURCE_EXHAUSTED for a rate limit (Envoy's local rate limit answers the same), else
UNAVAILABLE (circuit breaking, an injected abort, a degradation without a value). A
degradation's fallback value is answered as the method's reply: the listener relays bytes
without protos, so the reply type is read by server reflection from a provider (or the
service's ``descriptor_set``); when it cannot be had or the value does not fit it, the
call is answered UNAVAILABLE and the log says why.
Rules see the method as ``package.Service/Method`` (the path without its leading slash)
on the listener, and as written in the URL on the JSON invocation
(``/v1/invoke/grpc/{service}/{method}``: ``Method`` or ``package.Service.Method``), where a
degradation's fallback value is the JSON result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import grpc  # type: ignore[import-untyped]

from agent.calls import Call, CallRejected, Direction, Outcome
from agent.cluster.cluster import Cluster
from agent.cluster.lb import NO_CONTEXT, PickContext
from agent.governance.policy import Degraded, decision_of
from agent.governance.retry import Failure, FailureKind
from agent.runtime.protocols import ListenerContext
from agent.telemetry.propagation import propagation_headers


def status_code(rejected: CallRejected) -> Any:
    if rejected.reason == "rate_limited":
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return grpc.StatusCode.UNAVAILABLE


async def admit(
    context: ListenerContext, method: str, server_context: Any
) -> Call | Degraded | None:
    """Open the call record; a refused call is aborted here with its status. A degradation
    with a fallback value is returned, for the listener to answer with."""
    calls = context.calls
    if not (calls.policies or calls.observers):
        return None
    route = calls.outbound_route(context.service.name, method.lstrip("/"))
    try:
        metadata = server_context.invocation_metadata() or ()
        incoming = propagation_headers({k: v for k, v in metadata if isinstance(v, str)})
        record = calls.start(
            "grpc", Direction.OUTBOUND, route, incoming, server_context.time_remaining()
        )
    except Degraded as exc:
        if exc.has_value:
            return exc
        context.stats.request_errors += 1
        await server_context.abort(status_code(exc), f"meshagent: {exc.reason}: {exc}")
        raise AssertionError("abort raises") from None
    except CallRejected as exc:
        context.stats.request_errors += 1
        await server_context.abort(status_code(exc), f"meshagent: {exc.reason}: {exc}")
        raise AssertionError("abort raises") from None
    decision = decision_of(record)
    if decision is not None and decision.delay_s > 0:
        await asyncio.sleep(decision.delay_s)  # an injected delay
    return record


def pick_context(context: ListenerContext, record: Call | None, server_context: Any) -> PickContext:
    """The endpoints a rule's traffic split leaves to this call (metadata as headers)."""
    decision = decision_of(record) if record is not None else None
    if decision is None or not decision.splits:
        return NO_CONTEXT
    metadata = {
        str(key).lower(): value
        for key, value in server_context.invocation_metadata() or ()
        if isinstance(value, str)
    }
    cluster = context.cluster
    excluded = decision.excluded(cluster.hosts(), lambda h: h.instance.metadata, metadata.get)
    return PickContext(exclude=excluded) if excluded else NO_CONTEXT


def subset_out(record: Call, cluster: Cluster, metadata: Mapping[str, str]) -> frozenset[str]:
    """For the JSON invocation: the endpoints the rule's traffic split leaves out of the
    call (the request's ``metadata`` as headers); none without a split."""
    decision = decision_of(record)
    if decision is None or not decision.splits:
        return frozenset()
    lowered = {key.lower(): value for key, value in metadata.items()}
    return decision.excluded(cluster.hosts(), lambda h: h.instance.metadata, lowered.get)


# What grpc reports when no HTTP/2 connection to the endpoint could be made: nothing
# was sent.
_NOT_CONNECTED = "failed to connect"
# grpc's words for a connection lost under a call (anything else UNAVAILABLE is the
# provider's own status).
_TRANSPORT_LOST = ("socket closed", "connection reset", "broken pipe", "goaway", "stream removed")


def failure_of(code: Any, details: str | None) -> Failure:
    """What kind of failure an upstream call's status is, for a retry rule. UNAVAILABLE
    and RESOURCE_EXHAUSTED are gRPC's retryable statuses (gRFC A6, Envoy's ``retry-on``);
    the provider may have run the method unless grpc never connected."""
    text = (details or "").lower()
    if code == grpc.StatusCode.UNAVAILABLE:
        if text.startswith(_NOT_CONNECTED):
            return Failure(FailureKind.CONNECT, sent=False)
        if any(words in text for words in _TRANSPORT_LOST):
            return Failure(FailureKind.RESET, sent=True)
        return Failure(FailureKind.STATUS, sent=True)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return Failure(FailureKind.STATUS, sent=True)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Failure(FailureKind.TIMEOUT, sent=True)
    return Failure(FailureKind.OTHER, sent=True)


def attempt_outcome(code: Any) -> Outcome:
    if code == grpc.StatusCode.OK:
        return Outcome.OK
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Outcome.TIMEOUT
    if code == grpc.StatusCode.UNAVAILABLE:
        return Outcome.UPSTREAM_ERROR
    return Outcome.APP_ERROR


def finish(record: Call | None, code: Any) -> None:
    if record is None:
        return
    if code is None:
        outcome, status = Outcome.CANCELLED, ""
    elif code == grpc.StatusCode.OK:
        outcome, status = Outcome.OK, code.name
    else:
        outcome, status = Outcome.APP_ERROR, code.name
    if record.attempts:
        record.end_attempt(record.attempts[-1], outcome, status)
    record.finish(outcome, status)
