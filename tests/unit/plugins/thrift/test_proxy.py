"""The Thrift listener's routes: built once per listener, checked against the config."""

from __future__ import annotations

import pytest

from agent.calls import Calls
from agent.cluster.cluster import Cluster
from agent.cluster.lb import RoundRobin
from agent.config import ListenerConfig, ServiceConfig
from agent.errors import ConfigError
from agent.runtime.protocols import ListenerContext
from plugins.thrift.config import ThriftConfig
from plugins.thrift.proxy import Routes
from tests.fixtures.thrift_server import IDL


def context(*services: ServiceConfig, app: str = "my-app") -> ListenerContext:
    clusters = {s.name: Cluster(s.name, RoundRobin()) for s in services}
    first = services[0]
    return ListenerContext(
        ListenerConfig(port=1, service=first.name, protocol="thrift"),
        first,
        clusters[first.name],
        services={s.name: s for s in services},
        clusters=clusters,
        calls=Calls(app=app),
    )


ECHO = ServiceConfig(name="echo", protocol="thrift", options={"idl": str(IDL)})
PLAIN = ServiceConfig(name="plain", protocol="thrift")
DUBBO = ServiceConfig(name="org.example.Svc", protocol="dubbo")


def test_methods_route_to_their_service_and_the_rest_to_the_default() -> None:
    ctx = context(PLAIN, ECHO)
    routes = Routes.build(ctx, ThriftConfig(routes={"context": "echo", "Echo:context": "echo"}))
    assert routes.default.name == "plain"
    assert routes.default.base_methods == frozenset()  # no IDL: bodies pass unread
    echo = routes.by_method["context"]
    assert echo.cluster is ctx.clusters["echo"]
    assert routes.by_method["Echo:context"] is echo  # one target per service
    assert echo.base_methods == frozenset({"context"})  # from the IDL
    assert routes.caller == "my-app"  # app.name unless the listener says otherwise
    assert Routes.build(ctx, ThriftConfig(caller="x")).caller == "x"


def test_base_off_reads_no_idl() -> None:
    routes = Routes.build(context(ECHO), ThriftConfig(base="off"))
    assert routes.default.base_methods == frozenset()


@pytest.mark.parametrize(
    ("target", "message"),
    [("nope", "not configured"), ("org.example.Svc", "speaks 'dubbo', not thrift")],
)
def test_a_bad_route_is_a_config_error(target: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Routes.build(context(PLAIN, DUBBO), ThriftConfig(routes={"m": target}))


def test_an_idl_that_does_not_load_is_a_config_error() -> None:
    broken = ServiceConfig(name="broken", protocol="thrift", options={"idl": "/nonexistent.thrift"})
    with pytest.raises(ConfigError, match="broken"):
        Routes.build(context(broken), ThriftConfig())
