"""``ANY /v1/invoke/http/{service}/{path}`` on meshagent as a process, against uvicorn."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest

from tests.fixtures.agent_process import AgentProcess

pytestmark = pytest.mark.integration


def test_request_is_forwarded_as_sent(http_agent: AgentProcess) -> None:
    with http_agent.client() as client:
        response = client.get(
            "/v1/invoke/http/api/echo%2Fx/y",
            params={"q": "1 2", "r": "/"},
            headers={"X-Custom": "c", "Connection": "X-Private", "X-Private": "p"},
        )
    assert response.status_code == 200
    seen = response.json()
    assert seen["method"] == "GET"
    assert seen["raw_path"] == "/echo%2Fx/y"
    assert seen["query"] == "q=1+2&r=%2F"
    headers = dict(seen["headers"])
    assert headers["x-custom"] == "c"
    assert "x-private" not in headers
    # Host names the endpoint that answered, not the agent.
    assert headers["host"].startswith("127.0.0.1:")
    assert response.headers["x-upstream"] == seen["name"]


def test_each_call_is_balanced(http_agent: AgentProcess) -> None:
    with http_agent.client() as client:
        names = [client.get("/v1/invoke/http/api/echo").json()["name"] for _ in range(6)]
    assert sorted(names) == ["a", "a", "a", "b", "b", "b"]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_methods_and_bodies(http_agent: AgentProcess, method: str) -> None:
    payload = b"p" * 100_000
    with http_agent.client() as client:
        seen = client.request(method, "/v1/invoke/http/api/echo", content=payload).json()
    assert seen["method"] == method
    assert seen["size"] == len(payload)
    assert seen["sha256"] == hashlib.sha256(payload).hexdigest()


def test_streamed_bodies_both_ways(http_agent: AgentProcess) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b"c" * 65536

    with http_agent.client() as client:
        seen = client.post("/v1/invoke/http/api/upload", content=chunks()).json()
        assert seen["size"] == 8 * 65536
        response = client.get("/v1/invoke/http/api/stream?n=3000")
    lines = response.content.splitlines()
    assert len(lines) == 3000 and lines[-1].endswith(b"2999")


def test_head_and_provider_statuses_pass_through(http_agent: AgentProcess) -> None:
    with http_agent.client() as client:
        teapot = client.get("/v1/invoke/http/api/status/418")
        assert teapot.status_code == 418 and teapot.json()["path"] == "/status/418"
        head = client.head("/v1/invoke/http/web/big.bin")
        assert head.status_code == 200
        assert head.headers["content-length"] == str(256 * 4096)
        assert client.get("/v1/invoke/http/web/hello").text == "hello from nginx\n"


@pytest.mark.parametrize(
    ("service", "status"),
    [("none", 503), ("dead", 502), ("slow", 504), ("missing", 404), ("raw", 400)],
)
def test_agent_errors_are_problem_details(
    http_agent: AgentProcess, service: str, status: int
) -> None:
    with http_agent.client() as client:
        response = client.get(f"/v1/invoke/http/{service}/slow?s=2")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert service in problem["detail"]


def test_retries_on_another_endpoint(http_agent: AgentProcess) -> None:
    with http_agent.client() as client:
        for _ in range(4):
            assert client.get("/v1/invoke/http/flaky/echo").json()["name"] == "b"


def test_json_route_still_answers_for_other_protocols(http_agent: AgentProcess) -> None:
    with httpx.Client(base_url=http_agent.base_url, timeout=5) as client:
        response = client.post("/v1/invoke/raw/raw/method", json={})
    assert response.status_code == 400  # tcp has no JSON invocation: the generic route
