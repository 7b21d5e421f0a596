"""Thrift's side of traffic governance on the listener (agent/governance).

Thrift has no overload status: a call a rule refuses is answered with a
TApplicationException (INTERNAL_ERROR, the kind the listener uses for every answer of its
own) whose message names the reason (``meshagent: rate_limited: ...``). Plain Thrift has
no request headers, so traffic-split rules use weights and zones only.

Retries (plugins/thrift/proxy.py): Thrift has no retryable status either (an exception in
the reply is the provider's answer), so a rule retries connect failures (nothing sent)
and connections lost after sending (``reset``: the provider may have run the method, so
only under ``idempotent: true``). A timeout is the end of the call (the listener's
timeout, or the budget that arrived, is the deadline of the whole call).
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.calls import Call, CallRejected, Direction
from agent.cluster.cluster import Cluster
from agent.governance.policy import decision_of
from agent.runtime.protocols import ListenerContext


def start(
    context: ListenerContext,
    service: str,
    method: str,
    timeout_ms: int,
    incoming: Mapping[str, str] | None = None,
) -> Call | CallRejected | None:
    """The call record for a call to ``service`` (the listener's, or a per-method route's),
    the refusal to answer with, or None (nothing plugged in). ``incoming``: the propagation
    fields that arrived in the call's Base.Extra (plain Thrift has nowhere else to carry
    them)."""
    calls = context.calls
    if not (calls.policies or calls.observers):
        return None
    route = calls.outbound_route(service, method)
    try:
        return calls.start("thrift", Direction.OUTBOUND, route, incoming, timeout_ms / 1000)
    except CallRejected as exc:
        return exc


def excluded(cluster: Cluster, record: Call | None) -> frozenset[str]:
    """Endpoints outside the subset a traffic-splitting rule drew for the call."""
    decision = decision_of(record) if record is not None else None
    if decision is None or not decision.splits:
        return _NONE
    return decision.excluded(cluster.hosts(), lambda h: h.instance.metadata)


_NONE: frozenset[str] = frozenset()
