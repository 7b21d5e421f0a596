"""Two data centers joined by gateways, as real processes (docs/gateway.md).

Data center A runs on ZooKeeper: an app's agent (``locality.dc: a``) and gateway A; data
center B on its embedded registry: gateway B and an HTTP provider (uvicorn). Gateway B
exports ``orders``; gateway A imports it and registers the import in ZooKeeper labelled
``dc: b``; the app's agent calls ``orders`` by name and reaches B's provider over the
mutual-TLS link. Certificates come from a test CA (tests/fixtures/tls.py).
"""

from __future__ import annotations

import socket
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.processes import LOOPBACK, free_port
from tests.fixtures.tls import issue, make_ca
from tests.fixtures.zookeeper import ZooKeeperServer
from tests.integration.http.conftest import start_uvicorn

pytestmark = pytest.mark.integration

SERVER_NAME = "meshagent-gateway"


@dataclass
class Mesh:
    app: AgentProcess
    gateway_a: AgentProcess
    gateway_b: AgentProcess
    link_b: int
    certs: Path
    zk_config: dict[str, Any]


def zk_registry(zookeeper: ZooKeeperServer, root: str) -> dict[str, Any]:
    return {
        "name": "zk",
        "type": "zookeeper",
        "config": {
            "hosts": zookeeper.hosts,
            "root": f"{root}/dubbo",
            "services_root": f"{root}/services",
            "plain_root": f"{root}/plain",
        },
    }


def tls(directory: Path) -> dict[str, str]:
    return {
        "cert_file": str(directory / "tls.crt"),
        "key_file": str(directory / "tls.key"),
        "ca_file": str(directory.parent / "ca.pem"),
    }


@pytest.fixture(scope="module")
def mesh(
    tmp_path_factory: pytest.TempPathFactory, zookeeper_server: ZooKeeperServer
) -> Iterator[Mesh]:
    zookeeper = zookeeper_server
    if not zookeeper.process.running:
        zookeeper.start()
    workdir = tmp_path_factory.mktemp("gateway")
    certs = workdir / "certs"
    ca = make_ca("gateways")
    certs.mkdir()
    (certs / "ca.pem").write_bytes(ca.pem)
    for name in ("a", "b"):
        issue(ca, certs / name, hosts=(SERVER_NAME,))
    provider, provider_port = start_uvicorn(workdir, "b-orders")
    secret, secret_port = start_uvicorn(workdir, "b-secret")
    root = f"/gw-{uuid.uuid4().hex[:8]}"
    link_b, imported = free_port(), free_port()
    started: list[AgentProcess] = []
    try:
        gateway_b = start_agent(
            workdir / "gateway-b",
            {
                "registries": [
                    {
                        "name": "local",
                        "type": "local",
                        "config": {
                            "services": {
                                "orders": [{"host": LOOPBACK, "port": provider_port}],
                                "secret": [{"host": LOOPBACK, "port": secret_port}],
                            }
                        },
                    }
                ],
                "services": [
                    {"name": "orders", "protocol": "http", "health": {"enabled": False}},
                    {"name": "secret", "protocol": "http", "health": {"enabled": False}},
                ],
                "gateway": {"dc": "b", "port": link_b, "tls": tls(certs / "b"), "export": ["ord*"]},
            },
            name="gateway-b",
        )
        started.append(gateway_b)
        zk = zk_registry(zookeeper, root)
        gateway_a = start_agent(
            workdir / "gateway-a",
            {
                "registries": [zk],
                "services": [
                    {
                        "name": "orders",
                        "registry": "zk",
                        "protocol": "http",
                        "health": {"enabled": False},
                    }
                ],
                "gateway": {
                    "dc": "a",
                    "port": 0,
                    "tls": tls(certs / "a"),
                    "peers": [{"dc": "b", "addresses": [f"{LOOPBACK}:{link_b}"]}],
                    "imports": [{"service": "orders", "dc": "b", "port": imported}],
                },
            },
            name="gateway-a",
        )
        started.append(gateway_a)
        app = start_agent(
            workdir / "app-a",
            {
                "locality": {"dc": "a"},
                "registries": [zk],
                "services": [
                    {
                        "name": "orders",
                        "registry": "zk",
                        "protocol": "http",
                        "attributes": {"mode": "plain"},
                        "health": {"enabled": False},
                        "outlier": {"consecutive_failures": 1, "max_ejection_percent": 100},
                    }
                ],
                "listeners": [
                    {"host": LOOPBACK, "port": free_port(), "service": "orders", "protocol": "http"}
                ],
            },
            name="app-a",
        )
        started.append(app)
        app.wait_endpoints("orders", 1)
        yield Mesh(app, gateway_a, gateway_b, link_b, certs, zk)
    finally:
        for process in reversed(started):
            process.stop()
        provider.stop()
        secret.stop()


def test_a_provider_only_in_b_is_called_from_a_by_its_name(mesh: Mesh) -> None:
    listener = f"http://{LOOPBACK}:{mesh.app.listener_port(0)}"
    with httpx.Client(base_url=listener, timeout=10) as app:
        answers = [app.get("/hello", headers={"traceparent": TRACEPARENT}) for _ in range(5)]
    assert [a.status_code for a in answers] == [200] * 5
    assert {a.json()["name"] for a in answers} == {"b-orders"}
    # The bytes cross the link untouched: the provider in B got the caller's trace.
    for answer in answers:
        received = dict(answer.json()["headers"])
        assert TRACE_ID in received["traceparent"], received
    with mesh.app.client() as api:
        (orders,) = api.get("/v1/clusters").json()
    (endpoint,) = orders["endpoints"]
    assert endpoint["priority"] == 3 and endpoint["metadata"]["dc"] == "b"
    assert [(v["locality"], v["load"]) for v in orders["levels"]] == [("remote", 1.0)]


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def _link_client(certs: Path, name: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_cert_chain(certs / name / "tls.crt", certs / name / "tls.key")
    context.load_verify_locations(certs / "ca.pem")
    return context


def test_a_peer_without_a_certificate_of_the_ca_is_refused_and_logged(
    mesh: Mesh, tmp_path: Path
) -> None:
    rogue = make_ca("rogue")
    issue(rogue, tmp_path / "rogue", hosts=(SERVER_NAME,))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_cert_chain(tmp_path / "rogue" / "tls.crt", tmp_path / "rogue" / "tls.key")
    context.load_verify_locations(mesh.certs / "ca.pem")  # it trusts B; B does not trust it
    before = mesh.gateway_b.process.log_size()
    # TLS 1.3: the server's verdict on the client certificate comes after the client's
    # side of the handshake is done, as an alert on the first read.
    with (
        pytest.raises((ssl.SSLError, ConnectionError)),
        socket.create_connection((LOOPBACK, mesh.link_b), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=SERVER_NAME) as link,
    ):
        link.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        if not link.recv(1024):
            raise ConnectionError("closed")
    mesh.gateway_b.process.wait_for(
        lambda: (
            "gateway link refused: TLS handshake failed" in mesh.gateway_b.process.output(before)
            or None
        ),
        10,
        what="the refusal logged",
    )


def h2_tunnel(mesh: Mesh, service: str, payload: bytes) -> tuple[int, bytes]:
    """A CONNECT stream on a link to gateway B made with python-h2 (an HTTP/2 stack that
    is not ours): the :status, and what came back for ``payload`` when it is 200."""
    import h2.config
    import h2.connection
    import h2.events

    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    status, answer, ended = 0, b"", False
    with (
        socket.create_connection((LOOPBACK, mesh.link_b), timeout=5) as raw,
        _link_client(mesh.certs, "a").wrap_socket(raw, server_hostname=SERVER_NAME) as link,
    ):
        stream = connection.get_next_available_stream_id()
        connection.send_headers(
            stream, [(":method", "CONNECT"), (":authority", service), ("meshagent-source-dc", "a")]
        )
        link.sendall(connection.data_to_send())
        while not ended:
            data = link.recv(65536)
            if not data:
                break
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                    if status == 200:
                        connection.send_data(stream, payload)
                    else:
                        ended = True
                elif isinstance(event, h2.events.DataReceived):
                    answer += event.data
                    connection.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    ended = True
            link.sendall(connection.data_to_send())
    return status, answer


def test_a_service_not_exported_is_not_reachable(mesh: Mesh) -> None:
    before = mesh.gateway_b.process.log_size()
    request = b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert h2_tunnel(mesh, "secret", request) == (404, b"")  # not a byte of B's "secret"
    log = mesh.gateway_b.process
    log.wait_for(
        lambda: "service 'secret' is not exported" in log.output(before) or None,
        10,
        what="the refusal logged",
    )
    # The same client, naming the exported service, is answered by B's provider.
    status, answer = h2_tunnel(mesh, "orders", request)
    assert status == 200
    assert answer.startswith(b"HTTP/1.1 200") and b"b-orders" in answer


def test_a_provider_of_the_service_in_a_keeps_the_calls_in_a(mesh: Mesh, tmp_path: Path) -> None:
    local, port = start_uvicorn(tmp_path, "a-orders")
    try:
        with mesh.app.client() as api:
            api.put(
                "/v1/registrations/orders/a-orders",
                json={"host": LOOPBACK, "port": port, "metadata": {"dc": "a"}},
            ).raise_for_status()
        mesh.app.wait_endpoints("orders", 2)
        listener = f"http://{LOOPBACK}:{mesh.app.listener_port(0)}"
        with httpx.Client(base_url=listener, timeout=10) as app:
            names = {app.get("/hello").json()["name"] for _ in range(6)}
        assert names == {"a-orders"}
        local.stop()  # A's only provider gone: calls fail over to B through the gateways
        with httpx.Client(base_url=listener, timeout=10) as app:
            answers = [app.get("/hello") for _ in range(4)]
        assert [a.json()["name"] for a in answers[1:]] == ["b-orders"] * 3
    finally:
        with mesh.app.client() as api:
            api.delete("/v1/registrations/orders/a-orders")
        local.stop()
