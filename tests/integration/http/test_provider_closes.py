"""An HTTP/1.1 provider that ends its keep-alive connections (issue 27): nginx with
``keepalive_requests 2`` answers every second request on a connection with
``Connection: close`` and closes it. The agent must never send a request on such a
connection: non-idempotent POSTs (which the agent does not resend) all succeed."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.processes import free_port
from tests.integration.http.conftest import start_nginx

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def closing_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    workdir = tmp_path_factory.mktemp("nginx-closing")
    ports = [free_port(), free_port()]
    servers = "".join(
        f"""
    server {{
        listen 127.0.0.1:{port};
        keepalive_requests 2;
        location / {{ default_type text/plain; return 200 "served by {port}\\n"; }}
    }}"""
        for port in ports
    )
    nginx = start_nginx(workdir, servers)
    agent: AgentProcess | None = None
    try:
        for port in ports:
            nginx.wait_for_port(port, 20)
        config = {
            "registries": [
                {
                    "name": "local",
                    "type": "local",
                    "config": {
                        "services": {"closing": [{"host": "127.0.0.1", "port": p} for p in ports]}
                    },
                }
            ],
            "services": [{"name": "closing", "protocol": "http", "health": {"enabled": False}}],
            "listeners": [{"port": free_port(), "service": "closing", "protocol": "http"}],
        }
        agent = start_agent(Path(workdir) / "agent", config)
        yield agent
    finally:
        if agent is not None:
            agent.stop()
        nginx.stop()


def test_connection_close_from_the_provider_is_honoured(closing_agent: AgentProcess) -> None:
    url = f"http://127.0.0.1:{closing_agent.listener_port()}/order"

    def client(n: int) -> list[tuple[int, str]]:
        with httpx.Client(timeout=10) as http:
            answers = [http.post(url, content=f"{n}-{i}") for i in range(100)]
        return [(a.status_code, a.text) for a in answers]

    with ThreadPoolExecutor(4) as pool:
        answers = [a for batch in pool.map(client, range(4)) for a in batch]
    assert [status for status, _ in answers] == [200] * 400, answers[:5]
    assert len({text for _, text in answers}) == 2  # both providers, each closing every 2nd
