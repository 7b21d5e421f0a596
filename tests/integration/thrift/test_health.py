"""The thrift health checker against real thriftpy2 servers."""

from __future__ import annotations

import pytest

from agent.cluster.host import Host
from agent.discovery.types import Instance
from agent.runtime.health import probe
from plugins.thrift.health import ThriftHealthChecker, ThriftHealthConfig
from tests.fixtures.processes import LOOPBACK, free_port
from tests.fixtures.thrift_server import FORMS, ThriftServer

pytestmark = pytest.mark.integration


def host(port: int) -> Host:
    return Host(Instance(f"{LOOPBACK}:{port}", LOOPBACK, port))


def checker(form: str, method: str | None) -> ThriftHealthChecker:
    proto, transport = FORMS[form]
    return ThriftHealthChecker(
        ThriftHealthConfig(method=method, protocol=proto, transport=transport)  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("form", list(FORMS))
async def test_a_cheap_call_answers(
    thrift_servers: dict[str, list[ThriftServer]], form: str
) -> None:
    target = host(thrift_servers[form][0].port)
    assert await probe(checker(form, "ping"), target, 5.0)
    assert await probe(checker(form, None), target, 5.0)
    # An unknown method: the server answers with a TApplicationException, a failed probe.
    assert not await probe(checker(form, "nosuch"), target, 5.0)


async def test_closed_port_and_wrong_protocol(
    thrift_servers: dict[str, list[ThriftServer]],
) -> None:
    assert not await probe(checker("framed-binary", None), host(free_port()), 5.0)
    # A framed call to a buffered server: no valid reply, the probe fails (or times out).
    buffered = host(thrift_servers["buffered-binary"][0].port)
    assert not await probe(checker("framed-binary", "ping"), buffered, 2.0)
