"""What a protocol plugin (``meshagent.protocols``) gives the runtime.

A protocol plugin's factory returns a :class:`ProtocolSupport`. The runtime binds the
listener socket and hands each accepted connection to the asyncio protocol the plugin
makes; the plugin's own parsing stays in its sans-IO codec. ``tcp`` is the built-in raw
relay; ``dubbo``, ``thrift``, ``grpc`` and ``http`` add request awareness.
"""

from __future__ import annotations

import asyncio
from abc import ABC
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
)
from dataclasses import dataclass, field
from typing import Any

from agent.calls import Calls, Direction, Route
from agent.cluster.cluster import Cluster
from agent.config import ListenerConfig, ServiceConfig
from agent.discovery.registry import Registry
from agent.errors import InvokeNotSupported
from agent.runtime.admission import BufferBudget, ConnectionBudget


@dataclass
class RouteStats:
    """Per service a request-routing listener (http) sent requests to."""

    requests: int = 0
    # The requests as forwarded to providers, and the responses as written to clients.
    bytes_in: int = 0
    bytes_out: int = 0


@dataclass
class ListenerStats:
    """Counters read at scrape time: the hot path only adds to plain ints."""

    accepted: int = 0
    active: int = 0
    rejected: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    # Request-aware listeners only (dubbo, ...): requests read from clients, and those
    # the agent answered with an error of its own (no provider, timeout, bad input).
    requests: int = 0
    request_errors: int = 0
    # Listeners that route each request to a service of its own (http), by service.
    routes: dict[str, RouteStats] = field(default_factory=dict)

    def route(self, service: str) -> RouteStats:
        stats = self.routes.get(service)
        if stats is None:
            stats = self.routes[service] = RouteStats()
        return stats


@dataclass
class ListenerContext:
    listener: ListenerConfig
    service: ServiceConfig
    cluster: Cluster
    stats: ListenerStats = field(default_factory=ListenerStats)
    # Open connections' transports, so that a drain can wait for them and then cut them.
    connections: set[asyncio.Transport] = field(default_factory=set)
    # Set while no connection is open.
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    # The plugin's validated listener config (ListenerConfig.config through its model).
    protocol_config: Any = None
    # Every configured service and its cluster, for listeners that route each request
    # to a service of its own (HTTP by Host and path); others use ``service``/``cluster``.
    services: Mapping[str, ServiceConfig] = field(default_factory=dict)
    clusters: Mapping[str, Cluster] = field(default_factory=dict)
    # The agent's call hub: every request read on the listener opens a Call on it.
    calls: Calls = field(default_factory=Calls)
    # Outbound (the local app calls a service) or inbound (a caller calls the local app,
    # on the inbound listener): the calls' direction and whose five-tuple they get.
    direction: Direction = Direction.OUTBOUND
    # The agent-wide budget that every open connection counts against (admission.py).
    budget: ConnectionBudget = field(default_factory=lambda: ConnectionBudget(1 << 30))
    # Bytes of partly received requests across this listener's connections (Dubbo, Thrift).
    buffers: BufferBudget = field(default_factory=lambda: BufferBudget(1 << 62, 3600.0))

    def __post_init__(self) -> None:
        self.idle.set()

    def call_route(self, target: str, method: str) -> Route:
        """The five-tuple of a call read on this listener. Outbound: the local app calls
        ``target``. Inbound: the local app is called (``target`` is whatever the protocol
        names, kept as the method's prefix); the caller is filled in per call from what it
        says (:meth:`Calls.start`)."""
        if self.direction is Direction.INBOUND:
            calls = self.calls
            return Route("", "", calls.app or "local", calls.app_cluster, method)
        return self.calls.outbound_route(target, method)

    def track(self, transport: asyncio.Transport) -> None:
        if transport not in self.connections:
            self.connections.add(transport)
            self.budget.open += 1
        self.idle.clear()

    def untrack(self, transport: asyncio.Transport) -> None:
        if transport in self.connections:
            self.connections.remove(transport)
            self.budget.open -= 1
        if not self.connections:
            self.idle.set()


@dataclass(frozen=True)
class InvokeRequest:
    """A JSON invocation from the OpenAPI: ``POST /v1/invoke/{protocol}/{service}/{method}``.

    ``body`` is the protocol's own JSON request shape (for Dubbo: types, args, version,
    group, attachments, timeout_ms); the protocol validates it.
    """

    service: ServiceConfig
    cluster: Cluster
    method: str
    body: dict[str, Any]
    # The agent's call hub (tracing, metrics, governance); the invocation opens a Call on it.
    calls: Calls = field(default_factory=Calls)
    # Propagation headers that came with the OpenAPI request (traceparent, deadline, ...),
    # lower-case names.
    incoming: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InvokeResult:
    result: Any
    attachments: dict[str, Any] = field(default_factory=dict)
    # Which endpoint answered, for the caller's logs.
    endpoint: str = ""
    # Streamed replies (gRPC server streaming), instead of ``result``: the API writes them
    # as NDJSON, one line each. A MeshAgentError raised while streaming becomes a last
    # ``{"error": problem}`` line; an error before the first item is raised by invoke.
    stream: AsyncGenerator[Any, None] | None = None


@dataclass(frozen=True)
class HttpInvokeRequest:
    """An HTTP invocation from the OpenAPI: ``ANY /v1/invoke/http/{service}/{path}``.

    Forwarded as it came (Dapr's service invocation): method, path, query, headers and a
    body streamed from the caller. Hop-by-hop headers are the plugin's to drop.
    """

    service: ServiceConfig
    cluster: Cluster
    method: str
    # Starts with '/'; percent-encoding kept as the caller sent it.
    path: str
    query: str
    headers: list[tuple[bytes, bytes]]
    body: AsyncIterator[bytes]
    calls: Calls = field(default_factory=Calls)


@dataclass(frozen=True)
class HttpInvokeResult:
    """The provider's response, passed through.

    ``body`` releases the connection at its end; ``close`` (idempotent) releases it when
    the caller stops before the end (the caller went away).
    """

    status: int
    headers: list[tuple[bytes, bytes]]
    body: AsyncIterable[bytes]
    close: Callable[[], Awaitable[None]]
    endpoint: str = ""


class ProtocolSupport(ABC):
    name: str

    def outbound_listener(self, context: ListenerContext) -> Callable[[], asyncio.Protocol]:
        """The protocol factory for connections accepted on an outbound listener."""
        raise NotImplementedError(f"protocol {self.name!r} has no listener")

    async def invoke(self, request: InvokeRequest) -> InvokeResult:
        """Call ``request.method`` of the service from JSON; errors are MeshAgentErrors."""
        raise InvokeNotSupported(f"protocol {self.name!r} has no JSON invocation")

    async def invoke_http(self, request: HttpInvokeRequest) -> HttpInvokeResult:
        """Forward an HTTP request to the service; errors are MeshAgentErrors."""
        raise InvokeNotSupported(f"protocol {self.name!r} has no HTTP invocation")

    def attach_registry(self, registry: Registry) -> None:
        """Offer discovery hooks to a registry that serves this protocol's services.

        Called before the registry starts. Dubbo uses it to answer the ZooKeeper plugin's
        question "which services does this instance have?" (MetadataService), which only a
        plugin that speaks Dubbo can ask. Registries without such a hook are left alone.
        """
        return None

    def drain(self) -> None:
        """The agent is draining (its listeners no longer accept): end client connections
        between requests, e.g. close idle keep-alive ones now and let busy ones finish
        their response. The default does nothing; the drain timeout cuts what is left."""
        return None

    async def close(self) -> None:
        """Release upstream connections and tasks; called once when the agent stops."""
        return None
