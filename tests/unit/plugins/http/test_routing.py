"""Which service a request goes to (Host and path prefix, in order), each service's
deadline and retries, the route cache, and the agent's own problem bodies."""

from __future__ import annotations

import json

from agent.cluster.cluster import Cluster
from agent.cluster.lb import RoundRobin
from agent.config import ListenerConfig, ServiceConfig
from agent.runtime.protocols import ListenerContext
from plugins.http.config import HttpRoute
from plugins.http.routing import Router, problem_body, problem_headers, service_target


def _context() -> ListenerContext:
    services = {
        "web": ServiceConfig(name="web", protocol="http"),
        "orders": ServiceConfig(name="orders", protocol="http", options={"timeout_ms": 2500}),
        "raw": ServiceConfig(name="raw", protocol="tcp", options={}),
    }
    clusters = {name: Cluster(name, RoundRobin()) for name in services}
    return ListenerContext(
        ListenerConfig(port=1, service="web", protocol="http"),
        services["web"],
        clusters["web"],
        services=services,
        clusters=clusters,
    )


def test_routes_in_order_then_the_listeners_service() -> None:
    router = Router(
        _context(),
        [
            HttpRoute(host="shop.local", path_prefix="/orders", service="orders"),
            HttpRoute(path_prefix="/raw", service="raw"),
        ],
    )
    assert router.route(b"shop.local:8080", b"/orders/1?x=/raw").service.name == "orders"
    assert router.route(b"SHOP.local", b"/orders").service.name == "orders"
    assert router.route(b"other", b"/orders").service.name == "web"  # host differs
    assert router.route(None, b"/raw/x").service.name == "raw"
    assert router.route(b"[::1]:80", b"/").service.name == "web"


def test_each_target_has_its_services_deadline_and_retries() -> None:
    context = _context()
    router = Router(context, [HttpRoute(path_prefix="/orders", service="orders")])
    assert router.route(None, b"/orders").timeout_s == 2.5
    assert router.route(None, b"/").timeout_s == 15.0  # HttpServiceOptions' default
    # A service of another protocol routed by path takes HTTP's defaults.
    raw = service_target(context.services["raw"], context.clusters["raw"])
    assert (raw.timeout_s, raw.retries) == (15.0, 0)


def test_the_call_route_is_made_once_per_service_and_method() -> None:
    router = Router(_context(), [])
    first = router.call_routes.route("web", b"GET")
    assert router.call_routes.route("web", b"GET") is first
    assert (first.method, first.target) == ("GET", "web")


def test_problem_bodies() -> None:
    body = problem_body(503, "no endpoint", "web", {"retries": 2})
    assert json.loads(body) == {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "no endpoint",
        "service": "web",
        "retries": 2,
    }
    assert problem_headers(body) == [
        (b"Content-Type", b"application/problem+json"),
        (b"Content-Length", str(len(body)).encode()),
    ]
