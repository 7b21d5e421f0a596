"""``upstream_protocol: h2``: the HTTP listener speaking HTTP/2 to its providers (nginx,
cleartext prior knowledge, in front of the uvicorn echo app), whichever protocol the
client spoke; meshagent as a process."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.processes import free_port

pytestmark = pytest.mark.integration

DOORS = ["http1", "http2"]


@pytest.fixture(scope="module")
def h2_agent(
    tmp_path_factory: pytest.TempPathFactory, h2c_providers: dict[str, int]
) -> Iterator[AgentProcess]:
    def local(*names: str) -> list[dict[str, object]]:
        return [{"host": "127.0.0.1", "port": h2c_providers[n]} for n in names]

    options = {"upstream_protocol": "h2"}
    config = {
        "registries": [
            {
                "name": "local",
                "type": "local",
                "config": {"services": {"api-h2": local("a", "b"), "narrow": local("b")}},
            }
        ],
        "services": [
            {"name": name, "protocol": "http", "health": {"enabled": False}, "options": options}
            for name in ("api-h2", "narrow")
        ],
        "listeners": [
            {
                "port": free_port(),
                "service": "api-h2",
                "protocol": "http",
                "config": {"routes": [{"host": "narrow.test", "service": "narrow"}]},
            }
        ],
        "drain_timeout_s": 1,
    }
    agent = start_agent(tmp_path_factory.mktemp("agent-h2"), config)
    try:
        yield agent
    finally:
        agent.stop()


def client(agent: AgentProcess, door: str, **extra: object) -> httpx.AsyncClient:
    http2 = door == "http2"
    base = f"http://127.0.0.1:{agent.listener_port()}"
    return httpx.AsyncClient(base_url=base, http1=not http2, http2=http2, timeout=20, **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize("door", DOORS)
async def test_requests_go_to_providers_over_http2_balanced(
    h2_agent: AgentProcess, door: str
) -> None:
    async with client(h2_agent, door) as http:
        answers = [await http.get(f"/echo/{i}?q={i}", headers={"x-app": "v"}) for i in range(6)]
    assert {a.status_code for a in answers} == {200}
    # nginx says it was asked in HTTP/2, whatever the client spoke.
    assert {a.headers["x-proto"] for a in answers} == {"HTTP/2.0"}
    assert sorted(a.json()["name"] for a in answers) == ["a"] * 3 + ["b"] * 3
    assert [a.json()["path"] for a in answers] == [f"/echo/{i}" for i in range(6)]
    assert answers[0].json()["query"] == "q=0"
    headers = dict(map(tuple, answers[0].json()["headers"]))
    assert headers["x-app"] == "v"
    assert headers["host"] == f"127.0.0.1:{h2_agent.listener_port()}"  # :authority
    assert "x-meshagent-hops" in headers  # what the agent's observers send goes as HTTP/2 too


@pytest.mark.parametrize("door", DOORS)
async def test_bodies_stream_both_ways_under_flow_control(
    h2_agent: AgentProcess, door: str
) -> None:
    block = bytes(range(256)) * 1024  # 256 KiB; 16 of them, past every initial window

    async def upload() -> AsyncIterator[bytes]:
        for _ in range(16):
            yield block

    async with client(h2_agent, door) as http:
        sent = await http.post("/upload", content=upload())
        streamed = await http.get("/stream?n=3000")
    assert sent.status_code == 200, sent.text
    assert sent.json()["size"] == 16 * len(block)
    assert sent.json()["sha256"] == hashlib.sha256(block * 16).hexdigest()
    expected = b"".join(b"x" * 1000 + b"%d\n" % i for i in range(3000))
    assert streamed.status_code == 200 and streamed.content == expected


@pytest.mark.parametrize("door", DOORS)
async def test_provider_statuses_pass_and_the_agents_errors_are_its_own(
    h2_agent: AgentProcess, door: str
) -> None:
    async with client(h2_agent, door) as http:
        teapot = await http.get("/status/418")
        unavailable = await http.get("/status/503")
    assert teapot.status_code == 418 and teapot.json()["name"] in ("a", "b")
    assert unavailable.status_code == 503 and unavailable.json()["name"] in ("a", "b")


async def test_a_provider_stream_limit_gets_more_connections(h2_agent: AgentProcess) -> None:
    """nginx "b" allows 2 streams per connection: 12 slow requests at once all pass, on
    several connections (one connection would have refused the third stream)."""
    async with client(h2_agent, "http2", headers={"Host": "narrow.test"}) as http:
        answers = await asyncio.gather(*(http.get("/slow?s=0.3") for _ in range(12)))
    assert [a.status_code for a in answers] == [200] * 12
    assert {a.json()["name"] for a in answers} == {"b"}
