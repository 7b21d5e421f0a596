from __future__ import annotations

import socket
import ssl
from pathlib import Path

import httpx
import pytest

from agent.api.app import create_app
from agent.config import AgentConfig
from agent.runtime.admin import AdminServer, bind
from agent.runtime.agent import Agent, StartupError
from tests.fixtures.tls import issue, make_ca


async def test_admin_serves_in_our_loop_and_stops() -> None:
    server = AdminServer(create_app(Agent(AgentConfig())), bind("127.0.0.1", 0))
    await server.start()
    host, port = server.address
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://{host}:{port}/healthz")
    assert response.json() == {"status": "ok"}
    await server.stop()
    with socket.socket() as probe:
        assert probe.connect_ex((host, port)) != 0


def test_a_busy_admin_port_is_a_startup_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(StartupError, match=f"admin: cannot listen on 127.0.0.1:{port}"):
            bind("127.0.0.1", port)


async def test_admin_serves_tls_with_the_callers_context(tmp_path: Path) -> None:
    ca = make_ca()
    cert, key, _ = issue(ca, tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = AdminServer(create_app(Agent(AgentConfig())), bind("127.0.0.1", 0), context)
    await server.start()
    host, port = server.address
    verify = ssl.create_default_context(cadata=ca.pem.decode())
    async with httpx.AsyncClient(verify=verify) as client:
        response = await client.get(f"https://{host}:{port}/healthz")
    assert response.json() == {"status": "ok"}
    await server.stop()
