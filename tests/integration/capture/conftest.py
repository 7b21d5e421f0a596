"""A pod and two providers in network namespaces, with the agent capturing the pod's TCP.

    client ns (the pod)                      provider ns p1 / p2
    ------------------                       -------------------
    app on 127.0.0.1:8080                    echo  10.200.{1,2}.2:7000
    agent as uid nobody:                     banner (speaks first) 10.200.1.2:7001
                                             http  10.200.{1,2}.2:8000
      capture 15001, inbound 15006,          direct 10.200.2.2:7100 (no service)
      admin 127.0.0.1:15000
    10.200.1.1 --veth-- 10.200.1.2 (p1)
    10.200.2.1 --veth-- 10.200.2.2 (p2)
    default route out of the first veth, so virtual addresses (10.200.100.x) route

The agent runs as ``nobody`` (setpriv) because the rules exclude its uid: that is how its
own upstream connections escape capture. Everything is torn down after the module,
namespaces first checked for, then removed with their interfaces and rules.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from agent.codec import NEED_DATA
from plugins.dubbo.body import decode_invocation, heartbeat_response, value_response_frame
from plugins.dubbo.frame import Frame, FrameDecoder
from tests.fixtures.netns import Netns, ThreadedServer, Topology, echo_as, leftovers, unavailable
from tests.fixtures.otel_collector import Collector, start_collector
from tests.fixtures.processes import ManagedProcess

ROOT = Path(__file__).resolve().parents[3]
AGENT_UID = 65534  # nobody
ADMIN = "http://127.0.0.1:15000"
SNIFF_TIMEOUT_S = 0.3
INSTALL_ARGS = (f"--uid={AGENT_UID}", "--exclude-inbound-ports=15000", "--ipv6")

DUBBO_SERVICE = "org.example.Echo"
VIP_DUBBO = "10.200.100.12"
VIP_WEB = "10.200.100.13"
VIP_ECHO = "10.200.100.10"
VIP_BANNER = "10.200.100.11"
P1 = "10.200.1.2"
P2 = "10.200.2.2"
CLIENT = "10.200.1.1"
CLIENT6 = "fd00:200:1::1"
P1_6 = "fd00:200:1::2"
VIP6_ECHO = "fd00:200:100::10"


def meshagent(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent.cli", *args]


@dataclass
class Mesh:
    topology: Topology
    client: Netns
    p1: Netns
    p2: Netns
    agent: ManagedProcess
    servers: dict[str, ThreadedServer]
    config_dir: Path
    # A real OpenTelemetry Collector on the pod's loopback: the agent's spans.
    collector: Collector

    def cli(self, *args: str, check: bool = True) -> str:
        done = self.client.run("env", f"PYTHONPATH={ROOT}", *meshagent(*args), check=check)
        return done.stdout + done.stderr

    def admin(self, path: str) -> str:
        def fetch() -> str:
            with urllib.request.urlopen(ADMIN + path, timeout=5) as reply:
                return str(reply.read().decode())

        return self.client.inside(fetch)

    def metric(self, name: str, **labels: str) -> float:
        """A sample's value from /metrics (0 when absent)."""
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in self.admin("/metrics").splitlines():
            if line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            metric_name, _, rest = series.partition("{")
            label_text = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
            if metric_name == name and label_text == want:
                return float(value)
        return 0.0

    def ask(self, host: str, port: int, line: bytes = b"hello\n", timeout: float = 5.0) -> bytes:
        """One line to ``host:port`` from the pod; the whole answer."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with self.client.connect(host, port, timeout=timeout, family=family) as sock:
            sock.sendall(line)
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            return data


def dubbo_provider(name: str) -> Callable[[socket.socket], None]:
    """A Dubbo provider from our own codec: answers every call with ``"{name}:{method}"``."""

    def handle(conn: socket.socket) -> None:
        decoder = FrameDecoder()
        while data := conn.recv(65536):
            decoder.receive_data(data)
            while (frame := decoder.next_event()) is not NEED_DATA:
                assert isinstance(frame, Frame)
                header = frame.header
                if not header.two_way:
                    continue
                if header.event:  # the agent's pool sends heartbeats
                    conn.sendall(heartbeat_response(header.request_id))
                    continue
                method = decode_invocation(frame.body).method
                conn.sendall(value_response_frame(header.request_id, f"{name}:{method}"))

    return handle


def http_provider(name: str) -> Callable[[socket.socket], None]:
    """An HTTP/1.1 keep-alive server: answers every request with ``{name}:{target}`` and
    the Host field it was sent."""

    def handle(conn: socket.socket) -> None:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            target = head.split(b" ", 2)[1]
            fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
            body = b"%s:%s host=%s\n" % (name.encode(), target, fields.get(b"Host", b"-"))
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
                % len(body)
                + body
            )

    return handle


def _config(collector: Collector) -> dict[str, object]:
    return {
        "admin": {"host": "127.0.0.1", "port": 15000},
        "app": {"name": "pod-app"},
        "telemetry": {
            "tracing": {
                "enabled": True,
                "exporter": "otlp_grpc",
                # On the pod's loopback; the agent's uid is not captured, so its export
                # goes straight there.
                "endpoint": collector.grpc_endpoint,
                "schedule_delay_s": 0.1,
                "export_timeout_s": 2,
            }
        },
        "registries": [
            {
                "name": "local",
                "type": "local",
                "config": {
                    "services": {
                        "echo": [{"host": P1, "port": 7000}, {"host": P2, "port": 7000}],
                        "banner": [{"host": P1, "port": 7001}],
                        "echo6": [{"host": P1_6, "port": 7000}],
                        DUBBO_SERVICE: [{"host": P1, "port": 20880}, {"host": P2, "port": 20880}],
                        "web": [{"host": P1, "port": 8000}, {"host": P2, "port": 8000}],
                    }
                },
            }
        ],
        "services": [
            {"name": "echo", "health": {"enabled": False}},
            # A Dubbo service is sniffed (its plugin could take the bytes); a client that
            # says nothing must still get the server's greeting after the sniff timeout.
            {"name": "banner", "protocol": "dubbo", "health": {"enabled": False}},
            {"name": "echo6", "health": {"enabled": False}},
            {"name": DUBBO_SERVICE, "protocol": "dubbo", "health": {"enabled": False}},
            {"name": "web", "protocol": "http", "health": {"enabled": False}},
        ],
        "capture": {
            "enabled": True,
            "port": 15001,
            "sniff_timeout_s": SNIFF_TIMEOUT_S,
            "ipv6": True,
            "services": [
                {"service": "echo6", "addresses": [f"[{VIP6_ECHO}]:7000"]},
                {"service": DUBBO_SERVICE, "addresses": [f"{VIP_DUBBO}:20880"]},
                {"service": "web", "addresses": [f"{VIP_WEB}:80"]},
                {"service": "echo", "addresses": [f"{VIP_ECHO}:7000"]},
                {"service": "banner", "addresses": [VIP_BANNER]},
            ],
        },
        "inbound": {
            "enabled": True,
            "host": "0.0.0.0",
            "port": 15006,
            "app_port": 8080,
            "max_connections": 2,
            "health": {"interval_s": 0.2},
        },
        "drain_timeout_s": 1,
        "log_level": "INFO",
    }


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    topology = Topology()
    servers: dict[str, ThreadedServer] = {}
    agent: ManagedProcess | None = None
    collector: Collector | None = None
    # The agent runs as nobody: its config must be readable by it (pytest's tmp is 0700).
    config_dir = Path(tempfile.mkdtemp(prefix="meshagent-capture-"))
    try:
        client = topology.add("c")
        p1 = topology.add("p1")
        p2 = topology.add("p2")
        c_p1, _ = topology.link(client, f"{CLIENT}/24", p1, f"{P1}/24")
        topology.link(client, "10.200.2.1/24", p2, f"{P2}/24")
        client.run("ip", "route", "add", "default", "dev", c_p1)
        # IPv6 on the first link too; nodad: usable at once, not after duplicate detection.
        p1_if = f"to-{client.short}"
        client.run("ip", "-6", "addr", "add", f"{CLIENT6}/64", "dev", c_p1, "nodad")
        p1.run("ip", "-6", "addr", "add", f"{P1_6}/64", "dev", p1_if, "nodad")
        client.run("ip", "-6", "route", "add", "default", "dev", c_p1)
        p1.run("ip", "route", "add", "default", "via", CLIENT)
        p2.run("ip", "route", "add", "default", "via", "10.200.2.1")

        servers["p1"] = ThreadedServer(p1.listen(P1, 7000), echo_as("p1"))
        servers["p2"] = ThreadedServer(p2.listen(P2, 7000), echo_as("p2"))
        servers["banner"] = ThreadedServer(
            p1.listen(P1, 7001), echo_as("banner", banner=b"220 banner ready\r\n")
        )
        servers["p1v6"] = ThreadedServer(
            p1.listen(P1_6, 7000, family=socket.AF_INET6), echo_as("p1v6")
        )
        servers["dubbo1"] = ThreadedServer(p1.listen(P1, 20880), dubbo_provider("p1"))
        servers["dubbo2"] = ThreadedServer(p2.listen(P2, 20880), dubbo_provider("p2"))
        servers["web1"] = ThreadedServer(p1.listen(P1, 8000), http_provider("p1"))
        servers["web2"] = ThreadedServer(p2.listen(P2, 8000), http_provider("p2"))
        servers["direct"] = ThreadedServer(p2.listen(P2, 7100), echo_as("direct"))
        servers["app"] = ThreadedServer(client.listen("127.0.0.1", 8080), echo_as("app"))

        collector = start_collector(
            tmp_path_factory.mktemp("capture-otelcol"), wrap=client.exec_argv
        )
        os.chmod(config_dir, 0o755)
        config_path = config_dir / "agent.yaml"
        config_path.write_text(yaml.safe_dump(_config(collector)))
        config_path.chmod(0o644)

        mesh = Mesh(topology, client, p1, p2, None, servers, config_dir, collector)  # type: ignore[arg-type]
        out = mesh.cli("iptables", "install", *INSTALL_ARGS)
        assert "MESHAGENT_OUTPUT" in out, out

        argv = client.exec_argv(
            [
                "setpriv",
                f"--reuid={AGENT_UID}",
                f"--regid={AGENT_UID}",
                "--clear-groups",
                "--",
                *meshagent("run", "-c", str(config_path)),
            ]
        )
        agent = ManagedProcess(
            argv,
            log_path=tmp_path_factory.mktemp("capture") / "agent.log",
            name="meshagent",
            env={"PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"},
            cwd=ROOT,
        )
        agent.start()
        mesh.agent = agent
        agent.wait_for_line(r"meshagent ready", timeout=30)
        yield mesh
    finally:
        if agent is not None:
            agent.stop()
        if collector is not None:
            collector.stop()
        for server in servers.values():
            server.close()
        prefix = topology.prefix
        topology.close()
        for path in config_dir.iterdir():
            path.unlink()
        config_dir.rmdir()
        assert leftovers(prefix) == [], "namespaces left behind"


def readiness(mesh: Mesh) -> dict[str, object]:
    value: dict[str, object] = json.loads(mesh.admin("/readyz"))
    return value
