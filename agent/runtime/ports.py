"""The ports of ``workers: N``, reserved by the supervisor before any worker binds them.

Each worker binds every listener, capture and inbound port with SO_REUSEPORT, and the
kernel spreads connections among the workers' listening sockets. The supervisor binds the
same ports first with SO_REUSEPORT but never listens on them (a socket that does not
listen gets no connection): a port in use is then a start-up error with the listener's
name, as for one process; a port 0 is resolved once, so every worker binds the same one;
and while a worker restarts, no process of another user can take the port. The API's
port is reserved the same way, and the supervisor listens on that socket itself.
"""

from __future__ import annotations

import os
import socket

from agent.config import AgentConfig
from agent.runtime.agent import StartupError


def reserve(host: str, port: int, what: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise StartupError(f"{what}: cannot listen on {host}:{port}: {reason}") from None
    return sock


def reserve_ports(
    config: AgentConfig,
) -> tuple[AgentConfig, list[socket.socket], socket.socket]:
    """The config with every port 0 resolved, the reserving sockets (kept open), and the
    API's socket: the supervisor listens on it, and each worker on the same port."""
    reserved: list[socket.socket] = []
    try:
        admin_socket = reserve(config.admin.host, config.admin.port, "admin")
        reserved.append(admin_socket)
        admin_port = int(admin_socket.getsockname()[1])
        resolved_admin = config.admin.model_copy(update={"port": admin_port})
        config = config.model_copy(update={"admin": resolved_admin})
        for listener in config.listeners:
            reserved.append(
                reserve(listener.host, listener.port, f"listener {listener.display_name}")
            )
        capture = config.capture
        if capture.enabled:
            hosts = [capture.host] + (["::1"] if capture.ipv6 else [])
            port = capture.port
            for host in hosts:
                sock = reserve(host, port, "capture listener")
                port = int(sock.getsockname()[1])
                reserved.append(sock)
            config = config.model_copy(
                update={"capture": capture.model_copy(update={"port": port})}
            )
        inbound = config.inbound
        if inbound.enabled:
            sock = reserve(inbound.host, inbound.port, "inbound listener")
            reserved.append(sock)
            port = int(sock.getsockname()[1])
            config = config.model_copy(
                update={"inbound": inbound.model_copy(update={"port": port})}
            )
    except StartupError:
        for sock in reserved:
            sock.close()
        raise
    return config, reserved, admin_socket
