"""Real peers for the HTTP listener: uvicorn providers, nginx, a raw upgrade server, and
meshagent itself as a process."""

from __future__ import annotations

import os
import socket
import socketserver
import struct
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.processes import ManagedProcess, free_port
from tests.fixtures.programs import require

HERE = Path(__file__).resolve().parent


def start_uvicorn(workdir: Path, name: str) -> tuple[ManagedProcess, int]:
    port = free_port()
    process = ManagedProcess(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "upstream_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--http",
            "h11",
            "--log-level",
            "warning",
            "--timeout-keep-alive",
            "30",
        ],
        name=f"uvicorn-{name}",
        log_path=workdir / f"uvicorn-{name}.log",
        env={"NAME": name},
        cwd=HERE,
    )
    process.start()
    process.wait_for_port(port, 20)
    return process, port


@pytest.fixture(scope="session")
def providers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    workdir = tmp_path_factory.mktemp("providers")
    started = [start_uvicorn(workdir, name) for name in ("a", "b")]
    try:
        yield {"a": started[0][1], "b": started[1][1]}
    finally:
        for process, _ in started:
            process.stop()


def start_nginx(workdir: Path, servers: str) -> ManagedProcess:
    """nginx (one worker) with these ``server`` blocks, its temporary files in ``workdir``."""
    conf = workdir / "nginx.conf"
    # As root, nginx's workers drop to ``nobody``, who cannot read pytest's 0700 dirs.
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(
        f"""
{user}
daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    {servers}
}}
""",
        encoding="utf-8",
    )
    process = ManagedProcess(
        [require("nginx"), "-c", str(conf), "-p", str(workdir), "-e", str(workdir / "error.log")],
        name="nginx",
        log_path=workdir / "nginx.log",
    )
    return process.start()


@pytest.fixture(scope="session")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    workdir = tmp_path_factory.mktemp("nginx")
    port = free_port()
    (workdir / "www").mkdir()
    (workdir / "www" / "big.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    servers = f"""
    server {{
        listen 127.0.0.1:{port};
        root {workdir}/www;
        location = /hello {{ default_type text/plain; return 200 "hello from nginx\\n"; }}
        location = /teapot {{ return 418; }}
    }}"""
    process = start_nginx(workdir, servers)
    try:
        process.wait_for_port(port, 20)
        yield port
    finally:
        process.stop()


@pytest.fixture(scope="session")
def h2c_providers(
    tmp_path_factory: pytest.TempPathFactory, providers: dict[str, int]
) -> Iterator[dict[str, int]]:
    """HTTP/2 providers (cleartext, prior knowledge): nginx in front of each uvicorn
    provider, saying in ``x-proto`` which protocol it was asked in. The second allows two
    concurrent streams per connection (``http2_max_concurrent_streams``)."""
    workdir = tmp_path_factory.mktemp("nginx-h2c")
    ports = {"a": free_port(), "b": free_port()}
    servers = "".join(
        f"""
    server {{
        listen 127.0.0.1:{ports[name]} http2;
        {"http2_max_concurrent_streams 2;" if name == "b" else ""}
        client_max_body_size 64m;
        location / {{
            proxy_pass http://127.0.0.1:{providers[name]};
            proxy_request_buffering off;
            proxy_set_header Host $http_host;
            add_header x-proto $server_protocol always;
        }}
    }}"""
        for name in ports
    )
    process = start_nginx(workdir, servers)
    try:
        for port in ports.values():
            process.wait_for_port(port, 20)
        yield ports
    finally:
        process.stop()


class _UpgradeHandler(socketserver.BaseRequestHandler):
    """Answers any request with 101 and then echoes raw bytes, upper-cased, until EOF."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(4096)
            if not data:
                return
            head += data
        rest = head.split(b"\r\n\r\n", 1)[1]
        sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n"
            + rest.upper()
        )
        while data := sock.recv(4096):
            sock.sendall(data.upper())
        sock.sendall(b"BYE")
        sock.shutdown(socket.SHUT_WR)


class _ResetHandler(socketserver.BaseRequestHandler):
    """Reads a request head and resets the connection: a provider that crashes mid-call."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.recv(65536)
        # SO_LINGER 0: close() sends RST, as a crashed process's kernel would.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _serve(handler: type[socketserver.BaseRequestHandler]) -> Iterator[int]:
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="session")
def upgrade_server() -> Iterator[int]:
    yield from _serve(_UpgradeHandler)


@pytest.fixture(scope="session")
def reset_server() -> Iterator[int]:
    yield from _serve(_ResetHandler)


def http_agent_config(
    providers: dict[str, int], nginx: int, upgrade: int, reset: int, listener: dict[str, Any]
) -> dict[str, Any]:
    def local(*ports: int) -> list[dict[str, Any]]:
        return [{"host": "127.0.0.1", "port": p} for p in ports]

    def service(name: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "protocol": "http", "health": {"enabled": False}, **extra}

    return {
        "registries": [
            {
                "name": "local",
                "type": "local",
                "config": {
                    "services": {
                        "api": local(providers["a"], providers["b"]),
                        "only-a": local(providers["a"]),
                        "slow": local(providers["a"]),
                        "dead": local(free_port(), free_port()),
                        "web": local(nginx),
                        "ws": local(upgrade),
                        "flaky": local(reset, providers["b"]),
                        "checked": local(providers["a"], nginx),
                    }
                },
            }
        ],
        "services": [
            service("api"),
            service("only-a"),
            service("slow", options={"timeout_ms": 300}),
            service("dead", connect_attempts=2),
            service("none"),
            service("web"),
            service("ws"),
            # No ejection, so that the resetting endpoint keeps being picked.
            service("flaky", options={"retries": 1}, outlier={"enabled": False}),
            {"name": "raw", "health": {"enabled": False}},
            {
                # nginx answers /teapot with 418, uvicorn with 200: only nginx passes.
                "name": "checked",
                "protocol": "http",
                "health": {
                    "checker": "http",
                    "interval_s": 0.2,
                    "jitter_s": 0,
                    "healthy_threshold": 1,
                    "unhealthy_threshold": 1,
                    "config": {"path": "/teapot", "expected_statuses": [418]},
                },
            },
        ],
        "listeners": [
            {
                "port": free_port(),
                "service": "api",
                "protocol": "http",
                "config": {
                    "routes": [
                        {"path_prefix": "/only-a/", "service": "only-a"},
                        {"host": "slow.test", "service": "slow"},
                        {"host": "dead.test", "service": "dead"},
                        {"host": "none.test", "service": "none"},
                        {"host": "nginx.test", "service": "web"},
                        {"host": "ws.test", "service": "ws"},
                        {"host": "flaky.test", "service": "flaky"},
                        {"host": "checked.test", "service": "checked"},
                    ],
                    **listener,
                },
            }
        ],
        "drain_timeout_s": 2,
    }


@pytest.fixture(scope="module")
def http_agent(
    tmp_path_factory: pytest.TempPathFactory,
    providers: dict[str, int],
    nginx: int,
    upgrade_server: int,
    reset_server: int,
) -> Iterator[AgentProcess]:
    agent = start_agent(
        tmp_path_factory.mktemp("agent"),
        http_agent_config(
            providers,
            nginx,
            upgrade_server,
            reset_server,
            {"x_forwarded": True, "forwarded": True, "max_header_bytes": 4096},
        ),
        name="meshagent-http",
    )
    try:
        yield agent
    finally:
        agent.stop()
