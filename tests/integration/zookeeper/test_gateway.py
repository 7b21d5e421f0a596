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
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.gateways import SERVER_NAME, make_certs, tls
from tests.fixtures.processes import LOOPBACK, free_port, wait_until
from tests.fixtures.tls import issue, make_ca
from tests.fixtures.zookeeper import ZooKeeperServer
from tests.integration.http.conftest import start_uvicorn

pytestmark = pytest.mark.integration


@dataclass
class Mesh:
    app: AgentProcess
    gateway_a: AgentProcess
    gateways_b: list[AgentProcess]
    links_b: list[int]
    certs: Path

    @property
    def gateway_b(self) -> AgentProcess:
        return self.gateways_b[0]

    @property
    def link_b(self) -> int:
        return self.links_b[0]


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


@contextmanager
def two_data_centers(
    workdir: Path, zookeeper: ZooKeeperServer, gateways_in_b: int
) -> Iterator[Mesh]:
    """A on ZooKeeper (the app's agent, gateway A), B on its embedded registry (its
    gateways, the providers ``orders`` and ``secret``, only ``orders`` exported)."""
    if not zookeeper.process.running:
        zookeeper.start()
    certs = make_certs(workdir)
    provider, provider_port = start_uvicorn(workdir, "b-orders")
    secret, secret_port = start_uvicorn(workdir, "b-secret")
    root = f"/gw-{uuid.uuid4().hex[:8]}"
    links_b = [free_port() for _ in range(gateways_in_b)]
    started: list[AgentProcess] = []
    try:
        gateways_b = []
        for i, link in enumerate(links_b):
            gateway_b = start_agent(
                workdir / f"gateway-b{i}",
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
                    "gateway": {
                        "dc": "b",
                        "port": link,
                        "tls": tls(certs, "b"),
                        "export": ["ord*"],
                    },
                },
                name=f"gateway-b{i}",
            )
            started.append(gateway_b)
            gateways_b.append(gateway_b)
        zk = zk_registry(zookeeper, root)
        gateway_a = start_agent(
            workdir / "gateway-a",
            {
                "registries": [zk],
                "gateway": {
                    "dc": "a",
                    "port": 0,
                    "tls": tls(certs, "a"),
                    "peers": [{"dc": "b", "addresses": [f"{LOOPBACK}:{p}" for p in links_b]}],
                    # What B exports, learned from its export stream, in ZooKeeper.
                    "import_from": [{"dc": "b", "registry": "zk"}],
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
        yield Mesh(app, gateway_a, gateways_b, links_b, certs)
    finally:
        for process in reversed(started):
            process.stop()
        provider.stop()
        secret.stop()


@pytest.fixture(scope="module")
def mesh(
    tmp_path_factory: pytest.TempPathFactory, zookeeper_server: ZooKeeperServer
) -> Iterator[Mesh]:
    with two_data_centers(tmp_path_factory.mktemp("gateway"), zookeeper_server, 1) as built:
        yield built


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


def tunnels_in(gateway: AgentProcess) -> float:
    """Connections from A that this gateway of B tunnelled to a provider (its metrics)."""
    with gateway.client() as api:
        text = api.get("/metrics").text
    wanted = ('direction="in"', 'service="orders"', 'dc="a"', 'outcome="opened"')
    found = [
        float(row.split()[-1])
        for row in text.splitlines()
        if row.startswith("meshagent_gateway_tunnels_total{") and all(w in row for w in wanted)
    ]
    return sum(found)


def test_a_gateway_of_b_killed_under_load_fails_no_call(
    tmp_path: Path, zookeeper_server: ZooKeeperServer
) -> None:
    """Two gateways in B; calls from A run while the one carrying them is killed with
    SIGKILL: the calls go on through the other (GETs: the agent retries a call whose
    connection was cut before an answer). Then the other is killed too: calls fail at
    once, with an answer, not a hang."""
    with two_data_centers(tmp_path, zookeeper_server, 2) as mesh:
        listener = f"http://{LOOPBACK}:{mesh.app.listener_port(0)}"
        outcomes: list[int] = []
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(base_url=listener, timeout=10) as app:
                while not stop.is_set():
                    try:
                        outcomes.append(app.get("/hello").status_code)
                    except httpx.HTTPError:
                        outcomes.append(0)

        runner = threading.Thread(target=load)
        runner.start()
        try:
            wait_until(lambda: len(outcomes) >= 50 or None, 30, what="calls before the kill")
            carrying = [tunnels_in(gateway) for gateway in mesh.gateways_b]
            doomed = carrying.index(max(carrying))
            assert carrying[doomed] > 0, carrying
            survivor = mesh.gateways_b[1 - doomed]
            before_kill = tunnels_in(survivor)
            at_kill = len(outcomes)  # the call in flight now is this one, or the next
            mesh.gateways_b[doomed].process.kill()
            before = len(outcomes)
            wait_until(lambda: len(outcomes) >= before + 100 or None, 60, what="calls after")
        finally:
            stop.set()
            runner.join(30)
        # Only the call in flight at the kill may fail, and only if its answer was cut
        # halfway (after the answer began, no proxy may retry: Envoy neither); every
        # other call, before, through and after, is answered.
        failed = [i for i, status in enumerate(outcomes) if status != 200]
        assert failed in ([], [at_kill], [at_kill + 1]), (len(outcomes), at_kill, failed[:10])
        assert tunnels_in(survivor) > before_kill  # the calls went through the other
        survivor.process.kill()
        with httpx.Client(base_url=listener, timeout=20) as app:
            answer = app.get("/hello")
        # Answered at once, naming where the call was going: B, through a gateway.
        assert answer.status_code == 502, answer.text
        assert "b-via-gateway:" in answer.json()["detail"], answer.text
