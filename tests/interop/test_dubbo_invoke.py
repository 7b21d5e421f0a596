"""curl → agent → real Java Dubbo 3.3 provider → back: generic invocation through the agent.

One agent process for the module, its registry the session ZooKeeper (interface level). The
service is configured with ``version: "*"`` and ``group: "*"`` so that each request picks its
provider's version and group; a request that names none gets unversioned providers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.java_dubbo import (
    GREETING_EXCEPTION,
    INTERFACE,
    DubboProvider,
    load_suite,
    mismatch,
)
from tests.fixtures.zookeeper import ZooKeeperServer
from tests.interop.dubbo_invoke_support import (
    INVOKE,
    agent_expectation,
    call,
    invoke_agent_config,
    outcome,
    suite_body,
)

pytestmark = pytest.mark.integration

SUITE = load_suite()


def _ids(agent: AgentProcess) -> set[str]:
    return {i["id"] for i in agent.instances(INTERFACE)}


@pytest.fixture(scope="module")
def agent(
    zookeeper: ZooKeeperServer, dubbo_provider: DubboProvider, interop_workdir: Path
) -> Iterator[AgentProcess]:
    # Passive ejection only (health checks off): the kill test shows failover, not a probe.
    config = invoke_agent_config(
        zookeeper.hosts,
        "interface",
        service={
            "attributes": {"version": "*", "group": "*"},
            "options": {"methods": {"slow": {"retries": 2}}},
        },
    )
    process = start_agent(interop_workdir / "agent-invoke", config, name="agent-invoke")
    try:
        process.process.wait_for(
            lambda: dubbo_provider.address in _ids(process),
            30,
            what="the agent to discover the session provider",
        )
        yield process
    finally:
        process.stop()


@pytest.mark.parametrize("case", SUITE, ids=[c["case"] for c in SUITE])
def test_suite_case(
    agent: AgentProcess, dubbo_provider: DubboProvider, case: dict[str, Any]
) -> None:
    with agent.client() as client:
        # version "" and group "": the unversioned session provider, whatever else is up.
        response, elapsed = call(client, case["method"], suite_body(case, version="", group=""))
    got = outcome(response)
    problem = mismatch({**case, "expect": agent_expectation(case)}, got, dubbo_provider.provider_id)
    assert problem is None, f"{problem}; HTTP {response.status_code} {response.text[:500]}"
    if case["expect"].get("exception"):
        assert response.status_code == 502
        assert response.headers["content-type"].startswith("application/problem+json")
    if case["expect"].get("timeout"):
        # slow.timeout=500 comes from the provider's URL (a per-method setting of the real
        # method, not of $invoke): the 504 arrives after about 500 ms, not the 1 s default
        # nor the 1.5 s the method sleeps; slow.retries=0 means no second attempt.
        assert response.status_code == 504
        assert 0.45 <= elapsed < 1.2, elapsed


def test_declared_exception_is_502_with_java_type(agent: AgentProcess) -> None:
    with agent.client() as client:
        response, _ = call(client, "fail", {"types": ["java.lang.String"], "args": ["kaput"]})
    assert response.status_code == 502
    body = response.json()
    assert body["title"] == "Provider exception"
    assert body["exception"] == {"type": GREETING_EXCEPTION, "message": "kaput"}


def test_result_keeps_pojo_class_and_renders_json_types(agent: AgentProcess) -> None:
    person = {
        "class": "org.meshagent.interop.api.Person",
        "name": "cy",
        "age": 40,
        "level": "LOW",
        "birthday": "2023-11-14T22:13:20Z",  # ISO 8601 in, nested: realized by the provider?
        "balance": "0.10",
    }
    with agent.client() as client:
        # A nested date given as ISO text cannot be realized by PojoUtils (it parses
        # "yyyy-MM-dd HH:mm:ss" only); as epoch ms it can. Top-level dates take both.
        person["birthday"] = 1700000000000
        response, _ = call(
            client, "echoPerson", {"types": ["org.meshagent.interop.api.Person"], "args": [person]}
        )
        assert response.status_code == 200, response.text
        result = response.json()["result"]
        assert result["class"] == "org.meshagent.interop.api.Person"
        assert result["birthday"] == "2023-11-14T22:13:20.000Z"
        assert result["balance"] == "0.10"
        assert result["level"] == "LOW"
        response, _ = call(
            client,
            "addDays",
            {"types": ["java.util.Date", "int"], "args": ["2023-11-14T22:13:20Z", 1]},
        )
        assert response.json()["result"] == "2023-11-15T22:13:20.000Z"


def test_methods_without_types(agent: AgentProcess, dubbo_provider: DubboProvider) -> None:
    with agent.client() as client:
        # No body at all: a no-argument method.
        response = client.post(f"{INVOKE}/whoami")
        assert response.status_code == 200, response.text
        assert response.json()["result"] == dubbo_provider.provider_id
        assert response.json()["endpoint"] == dubbo_provider.address
        # Types omitted: the provider finds a method that is not overloaded by its name.
        response, _ = call(client, "greet", {"args": ["x"], "version": ""})
        assert response.json()["result"] == "Hello, x"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"args": [], "bogus": 1}, "body.bogus"),
        ({"types": ["int"], "args": [1, 2]}, "body.types"),
        ({"types": ["java.util.Date"], "args": ["last tuesday"]}, "body.args[0]"),
        ({"timeout_ms": 0}, "body.timeout_ms"),
        ({"attachments": {"timeout": "5"}}, "body.attachments"),
    ],
)
def test_invalid_bodies_are_400_with_paths(
    agent: AgentProcess, body: dict[str, Any], path: str
) -> None:
    with agent.client() as client:
        response, _ = call(client, "describe", body)
    assert response.status_code == 400, response.text
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert path in [error["path"] for error in problem["errors"]], problem


def test_unknown_method_is_502(agent: AgentProcess) -> None:
    with agent.client() as client:
        response, _ = call(client, "noSuchMethod", {"types": [], "args": [], "version": ""})
    assert response.status_code == 502, response.text
    assert "noSuchMethod" in response.text


def test_request_timeout_overrides_provider_settings(agent: AgentProcess) -> None:
    with agent.client() as client:
        # slow.timeout=500 on the provider; the request's own 2 s lets a 900 ms call finish.
        response, elapsed = call(
            client, "slow", {"types": ["int"], "args": [900], "timeout_ms": 2000, "version": ""}
        )
        assert response.status_code == 200, response.text
        assert response.json()["result"] == "slept 900"
        response, elapsed = call(
            client, "slow", {"types": ["int"], "args": [900], "timeout_ms": 200, "version": ""}
        )
    assert response.status_code == 504
    assert elapsed < 0.8


def test_version_and_group_select_providers(
    agent: AgentProcess,
    zookeeper: ZooKeeperServer,
    dubbo_provider: DubboProvider,
    dubbo_provider_factory: Callable[..., DubboProvider],
) -> None:
    blue = dubbo_provider_factory(
        registry=zookeeper.url, provider_id="blue-2", version="2.0.0", group="blue"
    )
    agent.process.wait_for(
        lambda: blue.address in _ids(agent), 30, what="the agent to see the blue provider"
    )
    with agent.client() as client:
        for _ in range(3):  # whichever the balancer would pick, selection decides
            response, _ = call(client, "whoami", {"version": "2.0.0", "group": "blue"})
            assert response.json()["result"] == "blue-2", response.text
            response, _ = call(client, "whoami", {"version": "", "group": ""})
            assert response.json()["result"] == dubbo_provider.provider_id
        response, _ = call(client, "whoami", {"version": "9.9.9"})
    assert response.status_code == 503, response.text


def test_failover_when_a_provider_is_killed(
    agent: AgentProcess,
    zookeeper: ZooKeeperServer,
    dubbo_provider: DubboProvider,
    dubbo_provider_factory: Callable[..., DubboProvider],
) -> None:
    """SIGKILL one of two providers while calls are in flight on it: no caller sees an error.

    ``slow`` has ``slow.retries=0`` on the provider; the agent's config gives it
    ``retries: 2`` (method level beats the provider's), so its in-flight calls fail over too.
    The ZooKeeper node of the killed provider outlives it (session timeout), so the agent
    keeps choosing it until outlier detection ejects it: every such call must fail over.
    """
    victim = dubbo_provider_factory(registry=zookeeper.url, provider_id="victim")
    agent.process.wait_for(
        lambda: victim.address in _ids(agent), 30, what="the agent to see the second provider"
    )

    async def scenario() -> tuple[list[tuple[int, str, str]], list[tuple[int, str, str]]]:
        async with agent.async_client(timeout=15) as client:

            async def one(method: str, types: list[str], args: list[Any]) -> tuple[int, str, str]:
                response = await client.post(
                    f"{INVOKE}/{method}", json={"types": types, "args": args, "version": ""}
                )
                body = response.json()
                return response.status_code, str(body.get("endpoint")), response.text[:300]

            async def victim_busy() -> bool:
                response = await client.get(f"/v1/services/{INTERFACE}/instances")
                return any(
                    i["id"] == victim.address and i["active_requests"] > 0 for i in response.json()
                )

            # Both providers serve (round robin) before anything happens.
            before = await asyncio.gather(
                *(one("echo", ["java.lang.String"], [f"b{i}"]) for i in range(8))
            )
            assert victim.address in {endpoint for _, endpoint, _ in before}, before
            # Calls that take a while, some of them on the victim; kill it while they run.
            slow = [asyncio.create_task(one("slow", ["int"], [400])) for _ in range(6)]
            deadline = time.monotonic() + 5
            while not await victim_busy():
                assert time.monotonic() < deadline, "no call in flight on the victim"
                await asyncio.sleep(0.005)  # poll interval of a bounded wait
            victim.kill()
            during = list(await asyncio.gather(*slow))
            # And a loop of calls after it: the dead provider is still listed in ZooKeeper.
            after: list[tuple[int, str, str]] = []
            for i in range(0, 64, 8):
                after += await asyncio.gather(
                    *(one("echo", ["java.lang.String"], [f"a{i + k}"]) for k in range(8))
                )
            return during, after

    during, after = asyncio.run(scenario())
    assert [a for a in during + after if a[0] != 200] == []
    assert all(endpoint == dubbo_provider.address for _, endpoint, _ in during + after)
    victim_stats = {e["id"]: e for e in agent.cluster(INTERFACE)["endpoints"]}[victim.address]
    # It was chosen after its death, and failed: failover, not luck, kept the callers whole.
    assert victim_stats["failures"] > 0, victim_stats


def test_a_lone_surrogate_goes_to_java_and_comes_back_as_an_escape(agent: AgentProcess) -> None:
    # Issue 23: a JSON string may carry \ud800 and a Java String may hold it; the provider
    # ran the call and the agent answered a plain-text 500 (UTF-8 cannot carry it). The
    # answer now carries it the way the request did, as a JSON escape.
    body = b'{"types": ["java.lang.String"], "args": ["a\\ud800b"]}'
    with agent.client() as client:
        response = client.post(
            f"{INVOKE}/echo", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == 200, response.text
    assert b'"a\\ud800b"' in response.content
    assert json.loads(response.content)["result"] == "a\ud800b"


def test_an_argument_the_provider_cannot_convert_is_answered_at_once(
    agent: AgentProcess,
) -> None:
    """Issue 23: a generic call's argument the provider could not convert (its GenericFilter
    throws, SERVICE_ERROR) was sent three times, "trying another provider"; every provider
    would answer the same. Answered at once now, with the exception and no Java stack."""
    person = {"class": "org.meshagent.interop.api.Person", "name": "x", "age": "abc"}
    body = {"types": ["org.meshagent.interop.api.Person"], "args": [person]}
    before = agent.process.output().count("trying another provider")
    with agent.client() as client:
        response, _ = call(client, "describe", body)
    assert response.status_code == 502, response.text
    detail = response.json()["detail"]
    assert 'java.lang.NumberFormatException: For input string: "abc"' in detail
    assert "\tat " not in detail and "GenericFilter" not in detail
    assert agent.process.output().count("trying another provider") == before


@pytest.mark.parametrize("at", ["2023-11-14T22:13:20Z", 1700000000000])
def test_a_sql_timestamp_goes_as_java_sends_it_and_comes_back_as_iso(
    agent: AgentProcess, at: object
) -> None:
    """Issue 23: java.sql.Timestamp, listed as supported, failed with the provider's
    ClassCastException (a java.util.Date was sent)."""
    body = {"types": ["java.sql.Timestamp", "long"], "args": [at, 1500]}
    with agent.client() as client:
        response, _ = call(client, "laterBy", body)
    assert response.status_code == 200, response.text
    assert response.json()["result"] == "2023-11-14T22:13:21.500Z"


@pytest.mark.parametrize(
    ("value", "doubled"),
    [
        ("123456789012345678901234567890", "246913578024691357802469135780"),
        (123456789012345678901234567890, "246913578024691357802469135780"),  # a JSON integer
        ("-9223372036854775809", "-18446744073709551618"),  # past a Java long
        (0, "0"),
        ("2147483648", "4294967296"),  # a magnitude word with its top bit set
    ],
)
def test_a_big_integer_both_ways(agent: AgentProcess, value: object, doubled: str) -> None:
    """Issue 23: a BigInteger came back as its internal fields (mag, signum, ...), and a
    JSON integer past a Java long was refused even when types said BigInteger."""
    with agent.client() as client:
        response, _ = call(client, "doubled", {"types": ["java.math.BigInteger"], "args": [value]})
    assert response.status_code == 200, response.text
    assert response.json()["result"] == doubled


def test_a_uuid_goes_as_hessian_writes_it(agent: AgentProcess) -> None:
    """Issue 23: a java.util.UUID given as text was refused by the provider
    (ClassCastException), and given in the class-keyed map shape could not be realized
    (Java 17 will not let PojoUtils set its fields). The agent sends what hessian-lite
    writes for one (an object whose one field, "value", is its text) and reads one back as
    text."""
    body = {"types": ["java.util.UUID"], "args": ["123e4567-e89b-12d3-a456-426614174000"]}
    with agent.client() as client:
        response, _ = call(client, "nextUuid", body)
        assert response.status_code == 200, response.text
        assert response.json()["result"] == "123e4567-e89b-12d3-a456-426614174001"
        bad, _ = call(client, "nextUuid", {"types": ["java.util.UUID"], "args": ["nope"]})
        assert bad.status_code == 400 and bad.json()["errors"][0]["path"] == "body.args[0]"
