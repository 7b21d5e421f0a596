import socket

import pytest

from agent.config import AgentConfig
from agent.runtime.agent import StartupError
from agent.runtime.ports import reserve_ports


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config(port: int, **extra: object) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "services": [{"name": "s", "protocol": "tcp"}],
            "listeners": [{"service": "s", "protocol": "tcp", "port": port}],
            **extra,
        }
    )


def test_reserved_ports_take_no_connection_and_workers_can_share_them() -> None:
    port = free_port()
    resolved, reserved, admin = reserve_ports(
        config(port, admin={"port": 0}, capture={"enabled": True, "port": 0})
    )
    try:
        # The API's, the listener's, the capture's: ports 0 resolved once for every worker.
        assert len(reserved) == 3 and reserved[0] is admin
        assert resolved.admin.port == admin.getsockname()[1] != 0
        capture_port = resolved.capture.port
        assert capture_port != 0
        assert reserved[2].getsockname()[1] == capture_port
        # Bound, not listening: a client is refused until a worker listens.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
        # Two workers' listening sockets on the same port.
        workers = []
        for _ in range(2):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen()
            workers.append(sock)
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        for sock in workers:
            sock.close()
    finally:
        for sock in reserved:
            sock.close()


def test_a_port_in_use_is_a_startup_error_naming_the_listener() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with pytest.raises(StartupError, match=f"listener tcp:{port}: cannot listen on"):
            reserve_ports(config(port))
    finally:
        taken.close()


def test_nothing_stays_reserved_after_a_failure() -> None:
    first = free_port()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        bad = AgentConfig.model_validate(
            {
                "services": [{"name": "s", "protocol": "tcp"}],
                "listeners": [
                    {"service": "s", "protocol": "tcp", "port": first},
                    {"service": "s", "protocol": "tcp", "port": taken.getsockname()[1]},
                ],
            }
        )
        with pytest.raises(StartupError):
            reserve_ports(bad)
        # The first listener's reservation was released: a plain bind succeeds.
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", first))
    finally:
        taken.close()
