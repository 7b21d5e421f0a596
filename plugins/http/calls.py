"""The HTTP plugin's side of the call record (agent/calls.py), shared by the HTTP/1.1
listener and HTTP/2 client streams.

An HTTP request on a listener is one :class:`~agent.calls.Call`: its route is the
service and the HTTP method (``GET``...), as for HTTP invocation, so governance rules and
metrics address HTTP calls the same way whichever door they came in by. What crosses hops
(trace context, the remaining budget, the hop count) travels as request headers: those
that arrived are read into ``Call.incoming``, and what observers want sent on an attempt
replaces the caller's field of that name.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from agent.calls import Call, CallRejected, Outcome
from agent.exchange import Exchange
from agent.governance.policy import Degraded
from plugins.http.headers import Headers
from plugins.http.routing import IDEMPOTENT, Target, problem_body

# Provider answers a retry rule may retry (Envoy's "gateway-error" plus 503).
RETRYABLE_STATUSES = frozenset({502, 503, 504})


def outcome_of_status(status: int) -> Outcome:
    """A provider's response: a 5xx is the provider's failure, anything else an answer."""
    return Outcome.OK if status < 500 else Outcome.APP_ERROR


def with_outgoing(fields: Headers, outgoing: Mapping[str, str]) -> Headers:
    """``fields`` with what the call's observers want sent on this attempt, replacing the
    caller's fields of those names (a client's traceparent becomes the agent's span)."""
    added: Headers = []
    names: set[bytes] = set()
    for key, value in outgoing.items():
        name = key.encode("latin-1")
        names.add(name)
        added.append((name, value.encode("latin-1")))
    kept = [(n, v) for n, v in fields if n.lower() not in names]
    kept += added
    return kept


def exchange_for(
    call: Call | None, target: Target, method: bytes, has_body: bool, headers: Headers
) -> Exchange:
    """The driver of an HTTP request's attempts (agent/exchange.py): the route's retries
    for an idempotent method without a body (RFC 9110 9.2.2), which may be sent again
    whatever reached the provider; a body streams to the provider and is not kept; a
    traffic-splitting rule's subset, drawn by the request's headers when it matches them."""
    idempotent = method in IDEMPOTENT
    exchange = Exchange(
        call,
        retries=target.retries if idempotent and not has_body else 0,
        idempotent=idempotent,
        resendable=not has_body,
    )
    decision = exchange.decision
    if decision is not None and decision.splits:
        exchange.exclude_subset(
            decision.excluded(
                target.cluster.hosts(),
                lambda host: host.instance.metadata,
                header_lookup(headers) if decision.uses_headers else no_header,
            )
        )
    return exchange


def no_header(name: str) -> str | None:
    """The header lookup of a rule that does not split by header (nothing to look at)."""
    return None


def header_lookup(headers: Headers) -> Callable[[str], str | None]:
    """A request header by lower-case name, for traffic-splitting rules that match on it."""
    found: dict[str, str] = {}
    for name, value in headers:
        found.setdefault(name.lower().decode("latin-1"), value.decode("latin-1"))
    return found.get


def refusal(rejected: CallRejected, service: str) -> tuple[int, bytes, bytes]:
    """What the agent answers for a refused call: status, content type, body.

    A degradation with a value answers 200 with it as JSON; every other refusal is problem
    details (429 rate limited, 503 overloaded or a fault, 508 a loop, or the rule's own
    status) carrying the reason and, for a loop, the chain of apps."""
    if isinstance(rejected, Degraded) and rejected.has_value:
        try:
            return 200, b"application/json", json.dumps(rejected.value).encode()
        except (TypeError, ValueError) as exc:  # the rule model keeps values JSON; guard
            rejected = CallRejected("degraded", f"fallback value not encodable: {exc}")
    status = rejected.http_status()
    extensions: dict[str, object] = {"reason": rejected.reason}
    if rejected.chain:
        extensions["chain"] = list(rejected.chain)
    body = problem_body(status, str(rejected), service, extensions)
    return status, b"application/problem+json", body


def chain_of(call: Call | None) -> dict[str, object]:
    """The error chain of a failed call as problem-details extensions (or nothing)."""
    error = call.error if call is not None else None
    chain = getattr(error, "chain", None)
    return {"chain": list(chain)} if chain else {}
