"""Two data centers as network namespaces joined only by their gateways (docs/gateway.md).

    namespace "a" (data center A)              namespace "b" (data center B)
    -----------------------------              -----------------------------
    app's agent: HTTP listener 127.0.0.1:8080  uvicorn provider 127.0.0.1:9000
      orders -> 127.0.0.1:16001 (dc: b)        gateway B: link 10.201.0.2:15443,
    gateway A: import 127.0.0.1:16001            exports orders (its embedded registry,
      peers b: 10.201.0.2:15443                  which only it can read)
    10.201.0.1 ------------- veth ------------- 10.201.0.2

B's provider and registry listen on B's loopback: from A nothing of B is reachable but
the link port, and a call from A's app reaches B's provider through the two gateways.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.gateways import make_certs, tls
from tests.fixtures.netns import Netns, Topology, unavailable
from tests.fixtures.processes import ManagedProcess, wait_until

pytestmark = pytest.mark.integration

HTTP_DIR = Path(__file__).resolve().parent / "http"  # upstream_app.py, the provider
A_ADDR, B_ADDR = "10.201.0.1", "10.201.0.2"
LINK, IMPORT, LISTENER, PROVIDER = 15443, 16001, 8080, 9000


@dataclass
class World:
    a: Netns
    b: Netns
    app: AgentProcess


def reachable(ns: Netns, host: str, port: int) -> bool:
    try:
        ns.connect(host, port, timeout=2).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    why = unavailable()
    if why is not None:
        pytest.fail(why)  # the suite runs as root on Linux: not a reason to skip
    workdir = tmp_path_factory.mktemp("gateway-netns")
    certs = make_certs(workdir)
    topology = Topology()
    processes: list[ManagedProcess] = []
    try:
        a, b = topology.add("a"), topology.add("b")
        topology.link(a, f"{A_ADDR}/30", b, f"{B_ADDR}/30")
        uvicorn = [sys.executable, "-m", "uvicorn", "upstream_app:app", "--host", "127.0.0.1"]
        provider = ManagedProcess(
            b.exec_argv(
                [*uvicorn, "--port", str(PROVIDER), "--http", "h11", "--log-level", "warning"]
            ),
            name="provider-b",
            log_path=workdir / "provider-b.log",
            env={"NAME": "b-orders"},
            cwd=HTTP_DIR,
        )
        provider.start()
        processes.append(provider)
        wait_until(lambda: reachable(b, "127.0.0.1", PROVIDER) or None, 30, what="provider")
        quiet: dict[str, Any] = {"health": {"enabled": False}}
        gateway_b = start_agent(
            workdir / "gateway-b",
            {
                "registries": [
                    {
                        "name": "local",
                        "type": "local",
                        "config": {
                            "services": {"orders": [{"host": "127.0.0.1", "port": PROVIDER}]}
                        },
                    }
                ],
                "services": [{"name": "orders", "protocol": "http", **quiet}],
                "gateway": {
                    "dc": "b",
                    "host": B_ADDR,
                    "port": LINK,
                    "tls": tls(certs, "b"),
                    "export": ["orders"],
                },
            },
            name="gateway-b",
            wrap=tuple(b.exec_argv([])),
        )
        processes.append(gateway_b.process)
        gateway_a = start_agent(
            workdir / "gateway-a",
            {
                "services": [{"name": "orders", "protocol": "http", **quiet}],
                "gateway": {
                    "dc": "a",
                    "port": 0,
                    "tls": tls(certs, "a"),
                    "peers": [{"dc": "b", "addresses": [f"{B_ADDR}:{LINK}"]}],
                    "imports": [{"service": "orders", "dc": "b", "port": IMPORT}],
                },
            },
            name="gateway-a",
            wrap=tuple(a.exec_argv([])),
        )
        processes.append(gateway_a.process)
        app = start_agent(
            workdir / "app-a",
            {
                "locality": {"dc": "a"},
                "registries": [
                    {
                        "name": "local",
                        "type": "local",
                        "config": {
                            "services": {
                                # What gateway A registers in a shared registry, written here:
                                # the embedded registry is this process's own.
                                "orders": [
                                    {"host": "127.0.0.1", "port": IMPORT, "metadata": {"dc": "b"}}
                                ]
                            }
                        },
                    }
                ],
                "services": [{"name": "orders", "protocol": "http", **quiet}],
                "listeners": [
                    {"host": "127.0.0.1", "port": LISTENER, "service": "orders", "protocol": "http"}
                ],
            },
            name="app-a",
            wrap=tuple(a.exec_argv([])),
        )
        processes.append(app.process)
        yield World(a, b, app)
    finally:
        for process in reversed(processes):
            process.stop()
        topology.close()


def http_get(ns: Netns, port: int) -> bytes:
    """GET /hello on 127.0.0.1:port from inside ``ns``; the whole answer."""
    with ns.connect("127.0.0.1", port, timeout=10) as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_b_is_reachable_from_a_only_through_the_gateways(world: World) -> None:
    # Nothing of B from A: not its provider, on either address, nor anything on its side of
    # the link but the link port.
    assert not reachable(world.a, B_ADDR, PROVIDER)
    assert not reachable(world.a, "127.0.0.1", PROVIDER)
    assert reachable(world.a, B_ADDR, LINK)
    assert reachable(world.b, "127.0.0.1", PROVIDER)  # (it is there, in B)
    # The app in A calls orders by name, through its agent and both gateways.
    answer = http_get(world.a, LISTENER)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b'"name":"b-orders"' in answer.replace(b" ", b"")


def test_the_link_port_refuses_a_plain_connection(world: World) -> None:
    # A client on A's side without TLS gets nothing from the link (it is mutual TLS).
    with world.a.connect(B_ADDR, LINK, timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n")
        try:
            answer = sock.recv(1024)
        except (TimeoutError, ConnectionResetError):
            answer = b""
    assert not answer.startswith(b"HTTP/")
