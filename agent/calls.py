"""The call: what every protocol path records about one request, and who gets told.

Each protocol plugin opens a :class:`Call` where a request enters the agent (an OpenAPI
invocation, a request read on an outbound listener, an inbound request for the local
app), opens an :class:`Attempt` for each try on an endpoint, and finishes the call with its
outcome. Everything that is not the protocol's own business hangs off these few points:

- observers (:class:`CallObserver`): tracing, metrics, the access log;
- policies (:class:`CallPolicy`): governance rules that may refuse a call before it is
  sent (rate limits, circuit breaking, fault injection, degradation) or bound it.

Protocols stay ignorant of what is plugged in; observers and policies stay ignorant of the
protocols' wire formats. What crosses a hop (trace context, remaining deadline, hop count)
travels as text headers in the protocol's own metadata (HTTP headers, gRPC metadata, Dubbo
attachments, Thrift Base.Extra): :attr:`Call.incoming` holds what arrived and
:meth:`Call.outgoing` what to send on an attempt.

The hot path pays for this only when something is plugged in: with no observer and no
policy, a call is one small object and a few attribute writes.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

from mypy_extensions import mypyc_attr

from agent.call_hooks import CallObserver as CallObserver
from agent.call_hooks import CallPolicy as CallPolicy
from agent.call_hooks import CallRejected as CallRejected
from agent.errors import (
    ConnectError,
    InvalidRequest,
    NoEndpointError,
    RemoteApplicationError,
    UpstreamTimeout,
)
from agent.telemetry.propagation import PATH


class Route(NamedTuple):
    """The call's five-tuple: who calls whom, which method.

    ``source``/``source_cluster`` name the calling app and its cluster (the agent's own
    ``app`` config for outbound calls; the caller's, as far as it says, for inbound ones);
    ``target``/``target_cluster`` the service called and the cluster it is asked of.
    Rules (governance) and metrics (observability) are both addressed by it. A tuple: it
    keys the rule index and the metrics on every call, and a tuple's hash is C's (a frozen
    dataclass's ran as Python on every lookup).
    """

    source: str
    source_cluster: str
    target: str
    target_cluster: str
    method: str


class Direction(enum.StrEnum):
    INVOKE = "invoke"  # a JSON/HTTP invocation through the OpenAPI
    OUTBOUND = "outbound"  # a request read on an outbound or capture listener
    INBOUND = "inbound"  # a request for the local app, read on the inbound port


class Outcome(enum.StrEnum):
    """How a call or attempt ended, protocol-independently (a metrics label)."""

    OK = "ok"
    # The provider answered with an error of its own (an exception, a non-OK status).
    APP_ERROR = "app_error"
    TIMEOUT = "timeout"
    NO_ENDPOINT = "no_endpoint"
    CONNECT_ERROR = "connect_error"
    # Sent, then the connection broke or the reply could not be read.
    UPSTREAM_ERROR = "upstream_error"
    # Refused by the agent before anything was sent: a policy (rate limit, circuit open,
    # loop), or a request the agent could not read.
    REJECTED = "rejected"
    INVALID = "invalid"
    # Answered by the agent instead of the provider (a fallback value).
    DEGRADED = "degraded"
    CANCELLED = "cancelled"


def outcome_of(error: BaseException) -> Outcome:
    """The outcome a failed attempt or call records for ``error``."""
    if isinstance(error, CallRejected):
        # A degraded call (governance) is answered by the agent, not refused.
        return Outcome.DEGRADED if error.reason == "degraded" else Outcome.REJECTED
    if isinstance(error, UpstreamTimeout | TimeoutError):
        return Outcome.TIMEOUT
    if isinstance(error, NoEndpointError):
        return Outcome.NO_ENDPOINT
    if isinstance(error, ConnectError):
        return Outcome.CONNECT_ERROR
    if isinstance(error, RemoteApplicationError):
        return Outcome.APP_ERROR
    if isinstance(error, InvalidRequest):
        return Outcome.INVALID
    if isinstance(error, asyncio.CancelledError):
        return Outcome.CANCELLED
    return Outcome.UPSTREAM_ERROR


class Attempt:
    """One try of a call on one endpoint. (Plain classes with an ``__init__`` of their own,
    Attempt and Call: compiled, a dataclass's generated ``__init__`` ran as Python on every
    call.)"""

    __slots__ = ("ended", "endpoint", "headers", "outcome", "started", "state", "status")

    def __init__(self, endpoint: str, started: float) -> None:
        self.endpoint = endpoint  # the host id, "host:port"
        self.started = started
        self.ended: float | None = None
        self.outcome: Outcome | None = None
        # The protocol's own status as text (HTTP "503", gRPC "UNAVAILABLE", Dubbo "70").
        self.status = ""
        # What the attempt sends in the protocol's metadata (see Call.outgoing).
        self.headers: dict[str, str] = {}
        # Observers' per-attempt state (a client span), keyed by the observer's name.
        self.state: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Attempt({self.endpoint!r}, outcome={self.outcome}, status={self.status!r})"


# Tests subclass calls; compiled, a class allows that only when it says so.
@mypyc_attr(allow_interpreted_subclasses=True)
class Call:
    """One call as its caller sees it: opened once (Calls.start), finished once."""

    __slots__ = (
        "attempts",
        "deadline",
        "direction",
        "error",
        "hub",
        "incoming",
        "outcome",
        "protocol",
        "route",
        "started",
        "state",
        "status",
    )

    def __init__(
        self,
        protocol: str,
        direction: Direction,
        route: Route,
        started: float,
        deadline: float | None = None,
        incoming: Mapping[str, str] | None = None,
        hub: Calls | None = None,
    ) -> None:
        self.protocol = protocol
        self.direction = direction
        self.route = route
        self.started = started
        # Absolute time (on the Calls clock) past which nobody waits; None: no deadline.
        self.deadline = deadline
        # The propagation headers that arrived with the request, lower-case names.
        self.incoming: Mapping[str, str] = incoming if incoming is not None else {}
        self.attempts: list[Attempt] = []
        self.outcome: Outcome | None = None
        self.status = ""
        self.error: BaseException | None = None
        # Observers' and policies' per-call state (a server span, a rule), by their name.
        self.state: dict[str, Any] = {}
        self.hub = hub

    def __repr__(self) -> str:
        return f"Call({self.protocol!r}, {self.route!r}, outcome={self.outcome})"

    def remaining_s(self) -> float | None:
        """Seconds left before the deadline (never negative), or None without one."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - self._now())

    def _now(self) -> float:
        return self.hub.clock() if self.hub is not None else time.monotonic()

    def begin_attempt(self, endpoint: str) -> Attempt:
        attempt = Attempt(endpoint, self._now())
        self.attempts.append(attempt)
        hub = self.hub
        if hub is not None:
            for observer in hub.observers:
                observer.attempt_started(self, attempt)
        return attempt

    def end_attempt(
        self,
        attempt: Attempt,
        outcome: Outcome,
        status: str = "",
    ) -> None:
        if attempt.ended is not None:
            return
        attempt.ended = self._now()
        attempt.outcome = outcome
        attempt.status = status
        hub = self.hub
        if hub is not None:
            for observer in hub.observers:
                observer.attempt_finished(self, attempt)

    def outgoing(self, attempt: Attempt) -> dict[str, str]:
        """Headers to send with ``attempt`` in the protocol's metadata.

        Filled by observers and policies when the attempt began (``traceparent``, the
        remaining deadline, the hop count); the protocol only copies them onto the wire.
        """
        return attempt.headers

    def finish(
        self, outcome: Outcome, status: str = "", error: BaseException | None = None
    ) -> None:
        """End the call; idempotent (the first outcome stands)."""
        if self.outcome is not None:
            return
        self.outcome = outcome
        self.status = status
        self.error = error
        hub = self.hub
        if hub is not None:
            for observer in hub.observers:
                observer.call_finished(self)

    def fail(self, error: BaseException, status: str = "") -> None:
        self.finish(outcome_of(error), status, error)

    @property
    def retries(self) -> int:
        return max(0, len(self.attempts) - 1)


class Observer(Protocol):
    """A :class:`CallObserver` as the hub sees it. The hub's lists are typed with these
    protocols, not the classes: compiled by mypyc, a value typed with a class that is not
    native is checked by its exact type, which refuses subclasses (CallContext)."""

    @property
    def name(self) -> str: ...

    def call_started(self, call: Call) -> None: ...

    def attempt_started(self, call: Call, attempt: Attempt) -> None: ...

    def attempt_finished(self, call: Call, attempt: Attempt) -> None: ...

    def call_finished(self, call: Call) -> None: ...


class Policy(Protocol):
    """A :class:`CallPolicy` as the hub sees it (see :class:`Observer`)."""

    @property
    def name(self) -> str: ...

    def admit(self, call: Call) -> None: ...


# Distinct (caller, route) pairs of inbound calls kept; beyond, the caller is ``_other``.
MAX_CALLERS = 256


class Calls:
    """The agent's call hub: opens calls and tells the observers and policies plugged in.

    ``app``/``app_cluster`` are the local app's identity (the ``app`` config): the source
    of outbound calls and the target of inbound ones.
    """

    def __init__(
        self,
        app: str = "",
        app_cluster: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.app_cluster = app_cluster
        self.clock = clock
        self.observers: list[Observer] = []
        self.policies: list[Policy] = []
        # Inbound routes by caller: what callers say of themselves is outside input, so
        # the distinct names kept (metrics labels, rule lookups) are bounded.
        self._callers: dict[tuple[str, Route], Route] = {}

    def _caller(self, route: Route, incoming: Mapping[str, str]) -> Route:
        """An inbound route with the caller the call's path names (its last app), as far
        as the caller says; past :data:`MAX_CALLERS` names, ``_other``."""
        path = incoming.get(PATH, "")
        caller = path[path.rfind(",") + 1 :].strip()[:64] if path else ""
        if not caller:
            return route
        key = (caller, route)
        found = self._callers.get(key)
        if found is None:
            if len(self._callers) >= MAX_CALLERS:
                caller = "_other"
            found = Route(caller, "", route.target, route.target_cluster, route.method)
            if len(self._callers) < MAX_CALLERS:
                self._callers[key] = found
        return found

    def outbound_route(self, target: str, method: str, target_cluster: str = "") -> Route:
        return Route(self.app, self.app_cluster, target, target_cluster, method)

    def start(
        self,
        protocol: str,
        direction: Direction,
        route: Route,
        incoming: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Call:
        """Open a call; raises CallRejected when a policy refuses it (the call is then
        already finished as rejected, so observers count it)."""
        now = self.clock()
        if direction is Direction.INBOUND and incoming and not route.source:
            route = self._caller(route, incoming)
        call = Call(
            protocol,
            direction,
            route,
            now,
            None if timeout_s is None else now + timeout_s,
            incoming if incoming is not None else {},
            hub=self,
        )
        for observer in self.observers:
            observer.call_started(call)
        try:
            for policy in self.policies:
                policy.admit(call)
        except CallRejected as exc:
            call.fail(exc)
            raise
        return call
