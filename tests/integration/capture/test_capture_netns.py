"""Transparent capture end to end: iptables in the pod's namespace, the agent as its own
uid, providers in their own namespaces (conftest.py draws the topology)."""

from __future__ import annotations

import socket
import time

import pytest

from agent.codec import NEED_DATA
from plugins.dubbo.body import Invocation, decode_result, encode_invocation, request_frame
from plugins.dubbo.frame import Frame, FrameDecoder
from tests.fixtures.processes import wait_until

from .conftest import (
    CLIENT,
    DUBBO_SERVICE,
    INSTALL_ARGS,
    P1,
    P1_6,
    P2,
    SNIFF_TIMEOUT_S,
    VIP6_ECHO,
    VIP_BANNER,
    VIP_DUBBO,
    VIP_ECHO,
    VIP_WEB,
    Mesh,
)

pytestmark = pytest.mark.integration

TRACE = "6bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "20f067aa0ba902b7"
SERVER_SPAN, CLIENT_SPAN = 2, 3  # OTLP span kinds


def closed(sock: socket.socket) -> bool:
    """The peer closed: EOF, or a reset (closing with our bytes unread sends RST)."""
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def test_wait_ready_exits_zero_once_the_agent_is_ready(mesh: Mesh) -> None:
    out = mesh.cli("wait-ready", "--timeout", "20")
    assert "ready" in out


def test_connection_to_a_virtual_address_is_captured_and_balanced(mesh: Mesh) -> None:
    before = mesh.metric("meshagent_capture_connections_total", outcome="accepted")
    answers = [mesh.ask(VIP_ECHO, 7000, b"hi\n") for _ in range(6)]
    assert sorted(answers) == [b"p1:hi\n"] * 3 + [b"p2:hi\n"] * 3
    # Exactly one captured connection per client connection: the agent's own upstream
    # connections (uid nobody) were not captured again.
    assert mesh.metric("meshagent_capture_connections_total", outcome="accepted") == before + 6
    assert (
        mesh.metric("meshagent_listener_connections_total", listener="capture", service="echo") >= 6
    )


def test_a_known_endpoint_address_maps_to_its_service(mesh: Mesh) -> None:
    answers = {mesh.ask(P1, 7000, b"x\n") for _ in range(4)}
    # Dialled p1's own address, balanced over the service like any other call.
    assert answers == {b"p1:x\n", b"p2:x\n"}


def test_unknown_destination_passes_through_to_the_original_address(mesh: Mesh) -> None:
    before = mesh.metric(
        "meshagent_listener_connections_total", listener="capture", service="passthrough"
    )
    assert mesh.ask(P2, 7100, b"y\n") == b"direct:y\n"
    after = mesh.metric(
        "meshagent_listener_connections_total", listener="capture", service="passthrough"
    )
    assert after == before + 1


def test_a_dubbo_call_to_an_original_address_goes_through_the_dubbo_pipeline(
    mesh: Mesh,
) -> None:
    before = mesh.metric("meshagent_capture_protocols_total", protocol="dubbo")
    context = {"traceparent": f"00-{TRACE}-{PARENT}-01"}
    with mesh.client.connect(VIP_DUBBO, 20880, timeout=5) as sock:
        decoder = FrameDecoder()
        for request_id in range(4):
            body = encode_invocation(Invocation(DUBBO_SERVICE, "", "hello", (), (), context))
            sock.sendall(request_frame(request_id, body))
        answers: dict[int, object] = {}
        while len(answers) < 4:
            while (frame := decoder.next_event()) is NEED_DATA:
                data = sock.recv(65536)
                assert data, "closed"
                decoder.receive_data(data)
            assert isinstance(frame, Frame)
            answers[frame.header.request_id] = decode_result(frame.header, frame.body).value
    # One client connection, answers from both providers: balanced per request, which only
    # the Dubbo codec's pipeline does (a TCP relay pins a connection to one provider).
    assert sorted(answers) == [0, 1, 2, 3]
    assert sorted(map(str, answers.values())) == ["p1:hello"] * 2 + ["p2:hello"] * 2
    assert mesh.metric("meshagent_capture_protocols_total", protocol="dubbo") == before + 1
    labels = {"listener": "capture", "service": DUBBO_SERVICE}
    assert mesh.metric("meshagent_listener_connections_total", **labels) == 1

    # Traced: each captured call is a server span in the app's trace and a client span to
    # the provider it went to, at the collector on the pod's loopback.
    spans = mesh.collector.wait_for_trace(TRACE, 8)
    servers = [s for s in spans if s["kind"] == SERVER_SPAN]
    clients = [s for s in spans if s["kind"] == CLIENT_SPAN]
    assert len(servers) == len(clients) == 4
    assert {s["parentSpanId"] for s in servers} == {PARENT}
    assert {s["service"] for s in spans} == {"pod-app"}
    assert {s["attrs"]["rpc.method"] for s in servers} == {"hello"}
    assert sorted(s["attrs"]["server.address"] for s in clients) == [P1, P1, P2, P2]


@pytest.mark.parametrize(("host", "port"), [(VIP_WEB, 80), (P1, 8000)])
def test_an_http_call_to_an_original_address_goes_through_the_http_listener(
    mesh: Mesh, host: str, port: int
) -> None:
    # The app (curl in the pod's namespace) dials the service's virtual address, or one
    # provider's real address, and asks for four paths on one keep-alive connection.
    before = mesh.metric("meshagent_capture_protocols_total", protocol="http")
    routed = mesh.metric("meshagent_listener_route_requests_total", listener="capture", route="web")
    urls = [f"http://{host}:{port}/call/{i}" for i in range(4)]
    out = mesh.client.run("curl", "-sS", "--max-time", "10", *urls).stdout
    lines = out.splitlines()
    assert [line.split(" ")[0].split(":", 1)[1] for line in lines] == [
        f"/call/{i}" for i in range(4)
    ]
    # Balanced per request over both providers: only the HTTP pipeline does that (a TCP
    # relay pins the connection to one provider); the Host is the app's, passed on.
    assert sorted(line.split(":")[0] for line in lines) == ["p1", "p1", "p2", "p2"]
    assert all(line.endswith((f" host={host}:{port}", f" host={host}")) for line in lines)
    # One captured connection (curl reused it), sniffed as HTTP; the agent's own
    # connections to the providers (uid nobody) were not captured again.
    assert mesh.metric("meshagent_capture_protocols_total", protocol="http") == before + 1
    after = mesh.metric("meshagent_listener_route_requests_total", listener="capture", route="web")
    assert after == routed + 4


def test_server_first_protocol_does_not_stall_past_the_sniff_timeout(mesh: Mesh) -> None:
    before = mesh.metric("meshagent_capture_connections_total", outcome="sniff_timeout")
    with mesh.client.connect(VIP_BANNER, 7001, timeout=5) as sock:
        started = time.monotonic()
        greeting = sock.recv(4096)  # the client says nothing first
        waited = time.monotonic() - started
    assert greeting == b"220 banner ready\r\n"
    assert SNIFF_TIMEOUT_S * 0.5 <= waited < SNIFF_TIMEOUT_S + 1.5
    assert mesh.metric("meshagent_capture_connections_total", outcome="sniff_timeout") == before + 1


def test_client_first_bytes_are_sniffed_and_relayed_whole(mesh: Mesh) -> None:
    before = mesh.metric("meshagent_capture_protocols_total", protocol="http")
    with mesh.client.connect(VIP_BANNER, 7001, timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\n")
        data = b""
        while b"banner:" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    # HTTP on a Dubbo service: no plugin carries it there, so raw TCP, bytes intact.
    assert data == b"220 banner ready\r\nbanner:GET / HTTP/1.1\n"
    assert mesh.metric("meshagent_capture_protocols_total", protocol="http") == before + 1


def test_connection_to_the_capture_port_itself_is_closed(mesh: Mesh) -> None:
    before = mesh.metric("meshagent_capture_connections_total", outcome="loop")
    offset = mesh.agent.log_size()
    # Loopback is never redirected: conntrack reports the capture port as the destination.
    with mesh.client.connect("127.0.0.1", 15001, timeout=5) as sock:
        sock.sendall(b"loop?\n")
        assert closed(sock)  # not relayed anywhere
    assert mesh.metric("meshagent_capture_connections_total", outcome="loop") == before + 1
    mesh.agent.wait_for_line("connection to the capture port itself", timeout=5, since=offset)


def test_inbound_connections_reach_the_app_through_the_inbound_listener(mesh: Mesh) -> None:
    before = mesh.metric(
        "meshagent_listener_connections_total", listener="inbound", service="inbound"
    )
    # From a provider to the pod's address: PREROUTING sends it to the inbound port.
    with mesh.p1.connect(CLIENT, 8080, timeout=5) as sock:
        sock.sendall(b"in\n")
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(4096) == b"app:in\n"
    wait_until(
        lambda: (
            mesh.metric(
                "meshagent_listener_connections_total", listener="inbound", service="inbound"
            )
            == before + 1
        ),
        5,
        what="the inbound connection counted",
    )


def test_inbound_concurrency_limit_closes_the_excess(mesh: Mesh) -> None:
    before = mesh.metric("meshagent_inbound_connections_over_limit_total")
    held = [mesh.p1.connect(CLIENT, 8080) for _ in range(2)]  # max_connections: 2
    try:
        wait_until(
            lambda: (
                mesh.metric(
                    "meshagent_listener_connections_active", listener="inbound", service="inbound"
                )
                == 2
            ),
            5,
            what="two inbound connections open",
        )
        with mesh.p1.connect(CLIENT, 8080) as third:
            third.sendall(b"more\n")
            assert closed(third)
        assert mesh.metric("meshagent_inbound_connections_over_limit_total") == before + 1
    finally:
        for sock in held:
            sock.close()


def test_readiness_follows_the_local_app(mesh: Mesh) -> None:
    app = mesh.servers["app"]
    assert mesh.metric("meshagent_inbound_app_healthy") == 1
    app.close()
    try:
        wait_until(
            lambda: mesh.metric("meshagent_inbound_app_healthy") == 0, 10, what="app unhealthy"
        )
        out = mesh.cli("wait-ready", "--timeout", "0.5", check=False)
        assert "not ready" in out and "local app 127.0.0.1:8080 not healthy" in out
    finally:
        from tests.fixtures.netns import ThreadedServer, echo_as

        mesh.servers["app"] = ThreadedServer(mesh.client.listen("127.0.0.1", 8080), echo_as("app"))
    wait_until(lambda: mesh.metric("meshagent_inbound_app_healthy") == 1, 10, what="app back")


def test_install_is_idempotent_and_remove_restores_direct_traffic(mesh: Mesh) -> None:
    shown = mesh.cli("iptables", "show", "--ipv6")
    rules = [line for line in shown.splitlines() if line.startswith("-A")]
    mesh.cli("iptables", "install", *INSTALL_ARGS)
    assert [
        line
        for line in mesh.cli("iptables", "show", "--ipv6").splitlines()
        if line.startswith("-A")
    ] == (rules)
    accepted = mesh.metric("meshagent_capture_connections_total", outcome="accepted")
    mesh.cli("iptables", "remove", "--ipv6")
    try:
        assert mesh.cli("iptables", "show", "--ipv6").count("no meshagent rules") == 2
        for save in ("iptables-save", "ip6tables-save"):
            assert "MESHAGENT" not in mesh.client.run(save, "-t", "nat").stdout
        # Direct now: p1's address answers as p1 every time, and nothing was captured.
        assert {mesh.ask(P1, 7000, b"d\n") for _ in range(4)} == {b"p1:d\n"}
        assert mesh.metric("meshagent_capture_connections_total", outcome="accepted") == accepted
    finally:
        mesh.cli("iptables", "install", *INSTALL_ARGS)
    # Captured again: p1's address is balanced over the service.
    assert {mesh.ask(P1, 7000, b"c\n") for _ in range(4)} == {b"p1:c\n", b"p2:c\n"}


def test_ipv6_connections_are_captured_with_their_original_destination(mesh: Mesh) -> None:
    before = mesh.metric(
        "meshagent_listener_connections_total", listener="capture", service="echo6"
    )
    # A virtual IPv6 address exists nowhere: only ip6tables + IP6T_SO_ORIGINAL_DST reach p1.
    assert mesh.ask(VIP6_ECHO, 7000, b"six\n") == b"p1v6:six\n"
    # The provider's own address maps to its service as well.
    assert mesh.ask(P1_6, 7000, b"six\n") == b"p1v6:six\n"
    after = mesh.metric("meshagent_listener_connections_total", listener="capture", service="echo6")
    assert after == before + 2
