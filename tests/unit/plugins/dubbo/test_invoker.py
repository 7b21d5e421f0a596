"""The invoker's own decisions: body validation (400 with paths) and status mapping.

Calls that reach a provider are tested against the real Java peer (tests/interop).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agent.api.app import create_app
from agent.cluster.host import Host
from agent.config import parse_config, validate_plugins
from agent.discovery.types import Instance
from agent.errors import ConfigError, RemoteApplicationError, UpstreamTimeout
from agent.runtime.agent import Agent
from plugins.dubbo.body import ResponseFlag, Result
from plugins.dubbo.frame import Status
from plugins.dubbo.hessian2 import JavaObject
from plugins.dubbo.invoker import check_status
from plugins.dubbo.strategies import ProviderStatusError, resolve
from tests.fixtures.processes import free_port

SERVICE = "com.acme.Greeter"


def config(**options: Any) -> dict[str, Any]:
    return {
        "admin": {"port": 0},
        "registries": [
            {
                "name": "local",
                "type": "local",
                # Nothing listens there: calls that pass validation fail to connect.
                "config": {"services": {SERVICE: [{"host": "127.0.0.1", "port": free_port()}]}},
            }
        ],
        "services": [
            {
                "name": SERVICE,
                "protocol": "dubbo",
                "health": {"enabled": False},
                "options": options,
            }
        ],
    }


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    agent = Agent(parse_config(config()))
    await agent.start()
    transport = httpx.ASGITransport(app=create_app(agent), client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
        yield client
    await agent.stop()


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"argz": []}, {"body.argz": "Extra inputs are not permitted"}),
        ({"types": ["int"], "args": []}, {"body.types": "1 types for 0 arguments"}),
        ({"types": [""], "args": [1]}, {"body.types.0": "at least 1 character"}),
        ({"timeout_ms": -1}, {"body.timeout_ms": "greater than or equal to 1"}),
        ({"attachments": {"a": [1]}}, {"body.attachments.a.str": "valid string"}),
        ({"attachments": {"generic": "x"}}, {"body.attachments": "generic set by the agent"}),
        (
            {"types": ["java.util.Date", "byte[]"], "args": ["someday", "AQI="]},
            {"body.args[0]": "neither epoch milliseconds nor an ISO 8601 date"},
        ),
        ({"types": ["byte[]"], "args": ["!!"]}, {"body.args[0]": "base64"}),
    ],
)
async def test_bad_bodies_are_400_problems_with_paths(
    api: httpx.AsyncClient, body: dict[str, Any], errors: dict[str, str]
) -> None:
    response = await api.post(f"/v1/invoke/dubbo/{SERVICE}/greet", json=body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["title"] == "Invalid request"
    found = {e["path"]: e["message"] for e in problem["errors"]}
    for path, fragment in errors.items():
        assert path in found, problem
        assert fragment in found[path], problem


async def test_a_valid_body_reaches_the_cluster(api: httpx.AsyncClient) -> None:
    response = await api.post(
        f"/v1/invoke/dubbo/{SERVICE}/greet", json={"types": ["java.lang.String"], "args": ["x"]}
    )
    assert response.status_code == 502
    assert response.json()["title"] == "ConnectError"


async def test_a_version_nobody_serves_is_503(api: httpx.AsyncClient) -> None:
    response = await api.post(f"/v1/invoke/dubbo/{SERVICE}/greet", json={"version": "9"})
    assert response.status_code == 503


def test_service_options_are_validated_with_the_config() -> None:
    validate_plugins(parse_config(config(methods={"slow": {"timeout_ms": 500, "retries": 0}})))
    with pytest.raises(ConfigError) as caught:
        validate_plugins(parse_config(config(cluster="broadcast", methods={"m": {"tries": 1}})))
    lines = "\n".join(caught.value.errors)
    assert "services[0].options.cluster" in lines
    assert "services[0].options.methods.m.tries" in lines


def test_tcp_services_take_no_options() -> None:
    raw = config()
    raw["services"][0].update(protocol="tcp", options={"timeout_ms": 5})
    with pytest.raises(ConfigError, match=r"services\[0\]\.options: .* takes none"):
        validate_plugins(parse_config(raw))


# -- status mapping ------------------------------------------------------------------------

HOST = Host(Instance("h:1", "h", 1))
SETTINGS = resolve("m", {})


def test_ok_value_and_ok_exception() -> None:
    ok = Result(Status.OK, ResponseFlag.VALUE, value="v")
    assert check_status(ok, HOST, "m", SETTINGS) is ok
    thrown = Result(
        Status.OK,
        ResponseFlag.WITH_EXCEPTION,
        exception=JavaObject("com.acme.Boom", {"detailMessage": "boom"}),
    )
    with pytest.raises(RemoteApplicationError) as caught:
        check_status(thrown, HOST, "m", SETTINGS)
    assert caught.value.exception_type == "com.acme.Boom"


@pytest.mark.parametrize("status", [Status.CLIENT_TIMEOUT, Status.SERVER_TIMEOUT])
def test_timeout_statuses(status: Status) -> None:
    with pytest.raises(UpstreamTimeout, match="took too long"):
        check_status(Result(status, error_message="took too long"), HOST, "m", SETTINGS)


@pytest.mark.parametrize(
    ("status", "alive"),
    [
        (Status.SERVICE_NOT_FOUND, True),
        (Status.SERVICE_ERROR, True),
        (Status.BAD_REQUEST, True),
        (Status.SERVER_ERROR, False),
        (Status.SERVER_THREADPOOL_EXHAUSTED_ERROR, False),
        (999, False),
    ],
)
def test_error_statuses(status: int, alive: bool) -> None:
    with pytest.raises(ProviderStatusError) as caught:
        check_status(Result(status, error_message="nope"), HOST, "m", SETTINGS)
    assert caught.value.alive is alive
    assert "nope" in str(caught.value)
