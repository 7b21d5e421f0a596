"""Which service a request goes to, and the agent's own error bodies.

Shared by the HTTP/1.1 listener, HTTP/2 client streams and HTTP invocation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus

from agent.calls import Route
from agent.cluster.cluster import Cluster
from agent.config import ServiceConfig
from agent.runtime.protocols import ListenerContext, RouteStats
from plugins.http.config import HttpRoute, HttpServiceOptions
from plugins.http.headers import Headers


@dataclass(frozen=True)
class Target:
    service: ServiceConfig
    cluster: Cluster
    timeout_s: float
    retries: int
    h2: bool = False  # the providers speak HTTP/2 (upstream_protocol: h2)


# Methods a retry may send twice (RFC 9110 9.2.2).
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


def service_target(service: ServiceConfig, cluster: Cluster) -> Target:
    # Services of another protocol (a tcp service routed by path) take HTTP's defaults.
    options = (
        service.protocol_options(HttpServiceOptions)
        if service.protocol == "http"
        else HttpServiceOptions()
    )
    return Target(
        service,
        cluster,
        options.timeout_ms / 1000,
        options.retries,
        options.upstream_protocol == "h2",
    )


_ROUTES_MAX = 1024


class RouteCache:
    """One :class:`Route` per (service, method), bounded: the route is part of every
    call's metrics labels and rule lookup, and HTTP has few methods."""

    __slots__ = ("_context", "_routes")

    def __init__(self, context: ListenerContext) -> None:
        self._context = context
        self._routes: dict[tuple[str, bytes], Route] = {}

    def route(self, service: str, method: bytes) -> Route:
        key = (service, method)
        route = self._routes.get(key)
        if route is None:
            route = self._context.call_route(service, method.decode("latin-1"))
            if len(self._routes) < _ROUTES_MAX:
                self._routes[key] = route
        return route


class Router:
    """Routes in order; a request matching none goes to the listener's own service."""

    def __init__(self, context: ListenerContext, routes: list[HttpRoute]) -> None:
        self.routes = routes
        self.call_routes = RouteCache(context)
        self.direction = context.direction
        self._stats = context.stats
        # The listener's per-service counters, by service (one lookup per request).
        self._route_stats: dict[str, RouteStats] = {}
        self.default = service_target(context.service, context.cluster)
        self.targets = {
            route.service: service_target(
                context.services[route.service], context.clusters[route.service]
            )
            for route in routes
        }

    def route_stats(self, target: Target) -> RouteStats:
        """The listener's counters of requests routed to ``target``'s service."""
        name = target.service.name
        stats = self._route_stats.get(name)
        if stats is None:
            stats = self._route_stats[name] = self._stats.route(name)
        return stats

    def route(self, host: bytes | None, target: bytes) -> Target:
        if not self.routes:
            return self.default
        name = (host or b"").decode("latin-1").lower()
        # Host may carry a port; a bracketed IPv6 literal keeps its colons.
        if name.rfind(":") > name.rfind("]"):
            name = name[: name.rfind(":")]
        path = target.split(b"?", 1)[0].decode("latin-1")
        for route in self.routes:
            if route.matches(name, path):
                return self.targets[route.service]
        return self.default


def problem_body(
    status: int, detail: str, service: str, extensions: Mapping[str, object] | None = None
) -> bytes:
    body: dict[str, object] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "service": service,
    }
    if extensions:
        body.update(extensions)
    return json.dumps(body).encode()


def problem_headers(body: bytes) -> Headers:
    return [
        (b"Content-Type", b"application/problem+json"),
        (b"Content-Length", str(len(body)).encode()),
    ]
