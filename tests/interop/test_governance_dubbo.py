"""Governance rules on Dubbo calls to real Java Dubbo 3.3 providers, shown with counters.

Two Java providers (processes, started once for the module) are the endpoints of one
service in the agent's local registry, labelled ``tag``/``zone`` in its metadata. The agent
runs in the test's loop; its rules change at run time through the local registry's config
source (the key ``meshagent/shop.rules``), as they would through Nacos, ZooKeeper or etcd.
"""

from __future__ import annotations

import asyncio
import importlib
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.api.app import create_app
from agent.calls import Attempt, Call, CallObserver
from agent.config import parse_config
from agent.discovery.config_source import ConfigKey, ConfigSource
from agent.discovery.registry import Registry
from agent.plugins import Plugin
from agent.runtime.agent import Agent
from plugins.dubbo.body import Invocation, encode_invocation, request_frame
from plugins.nacos.config import NacosConfig
from plugins.nacos.registry import NacosRegistry
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.java_dubbo import INTERFACE, DubboProvider, run_calls, start_provider
from tests.fixtures.nacos import NacosServer
from tests.fixtures.processes import free_port
from tests.fixtures.zookeeper import ZooKeeperServer

pytestmark = pytest.mark.integration

KEY = ConfigKey("meshagent", "shop.rules")
INVOKE = f"/v1/invoke/dubbo/{INTERFACE}"


@pytest.fixture(scope="module")
def providers(dubbo_peer_jar: Path, interop_workdir: Path) -> Iterator[list[DubboProvider]]:
    started = []
    try:
        for name in ("p1", "p2"):
            started.append(
                start_provider(interop_workdir / "governance", provider_id=name, jar=dubbo_peer_jar)
            )
        yield started
    finally:
        for provider in started:
            provider.stop()


class AttemptCounter(CallObserver):
    """Counts calls and upstream attempts as the agent makes them."""

    name = "test-counter"

    def __init__(self) -> None:
        self.calls = 0
        self.attempts = 0

    def call_started(self, call: Call) -> None:
        self.calls += 1

    def attempt_started(self, call: Call, attempt: Attempt) -> None:
        self.attempts += 1


def agent_config(providers: list[DubboProvider]) -> dict[str, Any]:
    p1, p2 = providers
    return {
        "app": {"name": "shop"},
        "admin": {"port": 0},
        "registries": [
            {
                "name": "local",
                "type": "local",
                "config": {
                    "services": {
                        INTERFACE: [
                            {
                                "host": p1.host,
                                "port": p1.port,
                                "metadata": {"tag": "stable", "zone": "a"},
                            },
                            {
                                "host": p2.host,
                                "port": p2.port,
                                "metadata": {"tag": "canary", "zone": "b"},
                            },
                        ]
                    }
                },
            }
        ],
        "services": [
            {
                "name": INTERFACE,
                "protocol": "dubbo",
                "health": {"enabled": False},
                # Ejection would hide what the rules do with a failing provider.
                "outlier": {"enabled": False},
                # Each attempt of slow waits 100 ms (the call itself has no deadline).
                "options": {"methods": {"slow": {"timeout_ms": 100}}},
            }
        ],
        "governance": {"zone": "b", "source": {"registry": "local"}},
    }


@pytest.fixture
async def agent(providers: list[DubboProvider]) -> AsyncIterator[Agent]:
    agent = Agent(parse_config(agent_config(providers)))
    await agent.start()
    document = agent.rules_document
    assert document is not None
    await asyncio.wait_for(document.changed.wait(), 5)
    yield agent
    await agent.stop()


@pytest.fixture
async def api(agent: Agent) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(agent), client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://agent", timeout=30
    ) as client:
        yield client


async def publish(agent: Agent, content: str) -> None:
    document = agent.rules_document
    assert document is not None
    document.changed.clear()
    source = agent.registries["local"].config_source()
    assert source is not None
    await source.put(KEY, content)
    await asyncio.wait_for(document.changed.wait(), 5)
    assert document.status.errors == [], document.status.errors


def counter(agent: Agent) -> AttemptCounter:
    observer = AttemptCounter()
    agent.calls.observers.append(observer)
    return observer


async def test_retry_budget_keeps_attempts_within_its_ratio(
    agent: Agent, api: httpx.AsyncClient
) -> None:
    # slow(300) with a 100 ms timeout per attempt: both providers fail every call. The
    # rule would retry each call three times; the budget allows retries for 20% of calls.
    await publish(
        agent,
        f"""
        rules:
          - match: {{to: {INTERFACE}, method: slow}}
            retry:
              attempts: 3
              retry_on: [timeout]
              idempotent: true
              backoff_base_ms: 5
              budget: {{ratio: 0.2, min_per_s: 0}}
        """,
    )
    seen = counter(agent)
    body = {"types": ["int"], "args": [300]}

    async def one() -> int:
        return (await api.post(f"{INVOKE}/slow", json=body)).status_code

    statuses: list[int] = []
    for _ in range(5):  # 5 waves of 10 concurrent calls
        statuses += await asyncio.gather(*(one() for _ in range(10)))
    assert statuses == [504] * 50
    counters = agent.governance.counters
    assert seen.calls == 50
    assert seen.attempts <= 1.2 * seen.calls, (seen.attempts, counters)
    assert counters.retries >= 5, counters  # the budget is spent, not merely refused
    assert seen.attempts == seen.calls + counters.retries
    assert counters.retries_over_budget > 0


async def test_without_a_budget_the_same_rule_multiplies_the_attempts(
    agent: Agent, api: httpx.AsyncClient
) -> None:
    # The control for the test above: ratio 1 and a large floor let every retry through.
    await publish(
        agent,
        f"""
        rules:
          - match: {{to: {INTERFACE}, method: slow}}
            retry:
              attempts: 2
              retry_on: [timeout]
              idempotent: true
              backoff_base_ms: 0
              budget: {{ratio: 1, min_per_s: 1000}}
        """,
    )
    seen = counter(agent)
    body = {"types": ["int"], "args": [300]}
    results = await asyncio.gather(*(api.post(f"{INVOKE}/slow", json=body) for _ in range(10)))
    assert [r.status_code for r in results] == [504] * 10
    assert seen.attempts == 30


async def test_timeouts_are_not_retried_for_a_method_not_marked_idempotent(
    agent: Agent, api: httpx.AsyncClient
) -> None:
    await publish(
        agent,
        f"""
        rules:
          - match: {{to: {INTERFACE}, method: slow}}
            retry: {{attempts: 3, retry_on: [timeout], budget: {{ratio: 1, min_per_s: 100}}}}
        """,
    )
    seen = counter(agent)
    body = {"types": ["int"], "args": [300]}
    response = await api.post(f"{INVOKE}/slow", json=body)
    assert response.status_code == 504 and seen.attempts == 1


async def test_circuit_breaker_fails_fast_past_max_in_flight(
    agent: Agent, api: httpx.AsyncClient
) -> None:
    await publish(agent, f"circuit_breakers: {{{INTERFACE}: {{max_in_flight: 2}}}}")
    body = {"types": ["int"], "args": [400], "timeout_ms": 2000}

    async def one() -> tuple[int, float]:
        started = time.monotonic()
        response = await api.post(f"{INVOKE}/slow", json=body)
        return response.status_code, time.monotonic() - started

    results = await asyncio.gather(*(one() for _ in range(6)))
    ok = [elapsed for status, elapsed in results if status == 200]
    refused = [elapsed for status, elapsed in results if status == 503]
    assert len(ok) == 2 and len(refused) == 4, results
    assert max(refused) < min(ok)  # refused at once, not after waiting
    assert agent.governance.counters.overloaded == 4
    assert agent.governance.load(INTERFACE).in_flight == 0  # every call released


async def test_max_connections_refuses_a_new_provider_connection(
    agent: Agent, api: httpx.AsyncClient
) -> None:
    await publish(agent, f"circuit_breakers: {{{INTERFACE}: {{max_connections: 1}}}}")
    responses = [await api.post(f"{INVOKE}/whoami", json={}) for _ in range(6)]
    served = [r.json()["result"] for r in responses if r.status_code == 200]
    refused = [r.json() for r in responses if r.status_code == 503]
    # Round robin alternates: the first provider gets the one connection, the other none.
    assert len(served) == 3 and len(set(served)) == 1, served
    assert len(refused) == 3 and all(p["reason"] == "overloaded" for p in refused), refused
    assert "max_connections 1" in refused[0]["detail"]
    assert agent.governance.load(INTERFACE).overflows == 3


async def test_weights_header_matches_and_zone_preference(
    agent: Agent, api: httpx.AsyncClient
) -> None:
    await publish(
        agent,
        f"""
        rules:
          - match: {{to: {INTERFACE}, method: whoami}}
            traffic:
              subsets:
                - {{name: stable, labels: {{tag: stable}}, weight: 100}}
                - {{name: canary, labels: {{tag: canary}}, weight: 0}}
              matches: [{{headers: {{x-canary: {{exact: "yes"}}}}, subset: canary}}]
          - match: {{to: {INTERFACE}, method: greet}}
            traffic: {{zone_preference: true}}
        """,
    )

    async def who(**body: Any) -> str:
        response = await api.post(f"{INVOKE}/whoami", json=body)
        assert response.status_code == 200, response.text
        return str(response.json()["result"])

    plain = Counter([await who() for _ in range(20)])
    assert plain == {"p1": 20}
    canary = Counter([await who(attachments={"x-canary": "yes"}) for _ in range(10)])
    assert canary == {"p2": 10}
    # The agent is in zone b: greet goes to p2 only.
    endpoints = Counter()
    for _ in range(10):
        response = await api.post(
            f"{INVOKE}/greet", json={"types": ["java.lang.String"], "args": ["x"]}
        )
        endpoints[response.json()["endpoint"]] += 1
    providers = {h.instance.metadata["zone"]: h.id for h in agent.clusters[INTERFACE].hosts()}
    assert endpoints == {providers["b"]: 10}


async def test_fault_delay_and_degradation(agent: Agent, api: httpx.AsyncClient) -> None:
    await publish(
        agent,
        f"""
        rules:
          - match: {{to: {INTERFACE}, method: whoami}}
            fault: {{delay: {{percent: 100, ms: 200}}}}
          - match: {{to: {INTERFACE}, method: greet}}
            degrade: {{value: "fallback greeting"}}
        """,
    )
    started = time.monotonic()
    response = await api.post(f"{INVOKE}/whoami", json={})
    assert response.status_code == 200 and time.monotonic() - started >= 0.2
    seen = counter(agent)
    degraded = await api.post(
        f"{INVOKE}/greet", json={"types": ["java.lang.String"], "args": ["x"]}
    )
    assert degraded.json()["result"] == "fallback greeting"
    assert seen.attempts == 0  # the provider was not called


async def test_a_rule_change_under_load_applies_within_a_second_and_fails_nothing(
    agent: Agent, api: httpx.AsyncClient
) -> None:
    await publish(agent, split_to("stable"))
    source = agent.registries["local"].config_source()
    assert source is not None
    answers, changed_at = await change_under_load(api, source, KEY, split_to("canary"))
    failed = [a for a in answers if a[1] != 200]
    assert not failed, failed[:5]
    first_new = min(t for t, _, who in answers if who == "p2")
    assert first_new - changed_at < 1.0
    # Calls that started after the switch took effect all went to the new subset.
    late = [who for t, _, who in answers if t > first_new + 0.1]
    assert late and set(late) == {"p2"}
    assert len(answers) > 20


async def test_the_java_consumer_through_the_listener_sees_each_rule(
    providers: list[DubboProvider], dubbo_peer_jar: Path
) -> None:
    config = agent_config(providers)
    port = free_port()
    config["listeners"] = [{"port": port, "service": INTERFACE, "protocol": "dubbo"}]
    config["governance"] = {
        "rules": {
            "rules": [
                {
                    "match": {"to": INTERFACE, "method": "greet"},
                    "rate_limit": {"per_s": 0.001, "burst": 2},
                },
                {"match": {"to": INTERFACE, "method": "whoami"}, "degrade": {"value": "nobody"}},
                {
                    "match": {"to": INTERFACE, "method": "echo"},
                    "fault": {"abort": {"percent": 100, "status": 80, "message": "chaos"}},
                },
            ]
        }
    }
    agent = Agent(parse_config(config))
    await agent.start()
    try:
        calls = [
            *({"case": f"greet{i}", "method": "greet", "args": ["x"]} for i in range(5)),
            {"case": "who", "method": "whoami", "args": []},
            {"case": "echo", "method": "echo", "args": ["hi"]},
            {"case": "add", "method": "addInt", "args": [1, 2]},
        ]
        outcomes = await asyncio.to_thread(run_calls, url=f"dubbo://127.0.0.1:{port}", calls=calls)
    finally:
        await agent.stop()
    greets = [outcomes[f"greet{i}"] for i in range(5)]
    assert [g["ok"] for g in greets].count(True) == 2, greets
    refused = [g for g in greets if not g["ok"]]
    assert all("rate_limited" in g["message"] for g in refused), refused
    assert outcomes["who"]["ok"] and outcomes["who"]["result"] == "nobody", outcomes["who"]
    echo = outcomes["echo"]
    assert not echo["ok"] and "chaos" in echo["message"], echo
    assert outcomes["add"]["ok"] and outcomes["add"]["result"] == 3
    counters = agent.governance.counters
    assert (counters.rate_limited, counters.degraded, counters.fault_aborts) == (3, 1, 1)


async def test_the_listener_retries_a_retryable_status_on_another_provider(
    providers: list[DubboProvider], interop_workdir: Path, dubbo_peer_jar: Path
) -> None:
    # A third provider with one thread, kept busy: Dubbo answers every other request with
    # SERVER_THREADPOOL_EXHAUSTED_ERROR (100), before running it (so a retry is safe even
    # for a method not marked idempotent).
    busy = await asyncio.to_thread(
        start_provider,
        interop_workdir / "governance-busy",
        provider_id="p3",
        extra_args=["--threads", "1"],
        jar=dubbo_peer_jar,
    )
    hold = socket.create_connection((busy.host, busy.port))
    try:
        hold.sendall(request_frame(1, slow_body(30_000)))  # holds p3's one thread
        config = agent_config(providers)
        config["registries"][0]["config"]["services"][INTERFACE] = [
            {"host": providers[0].host, "port": providers[0].port},
            {"host": busy.host, "port": busy.port},
        ]
        port = free_port()
        config["listeners"] = [{"port": port, "service": INTERFACE, "protocol": "dubbo"}]
        retry = {
            "attempts": 2,
            "retry_on": ["retryable_status"],
            "backoff_base_ms": 0,
            "budget": {"ratio": 1, "min_per_s": 100},
        }
        config["governance"] = {
            "rules": {"rules": [{"match": {"to": INTERFACE, "method": "whoami"}, "retry": retry}]}
        }
        agent = Agent(parse_config(config))
        await agent.start()
        seen = counter(agent)
        try:
            calls = [
                *({"case": f"who{i}", "method": "whoami", "args": []} for i in range(10)),
                *({"case": f"greet{i}", "method": "greet", "args": ["x"]} for i in range(10)),
            ]
            outcomes = await asyncio.to_thread(
                run_calls, url=f"dubbo://127.0.0.1:{port}", calls=calls
            )
        finally:
            await agent.stop()
    finally:
        hold.close()
        await asyncio.to_thread(busy.kill)
    whos = [outcomes[f"who{i}"] for i in range(10)]
    assert all(w["ok"] and w["result"] == "p1" for w in whos), [w.get("message") for w in whos]
    # Round robin sends every other call to p3; greet has no retry rule: those fail.
    greets = [outcomes[f"greet{i}"] for i in range(10)]
    failed = [g for g in greets if not g["ok"]]
    assert 3 <= len(failed) <= 7, greets
    assert all("thread pool" in g["message"].lower() for g in failed), failed[:1]
    retries = agent.governance.counters.retries
    assert retries >= 3
    assert seen.attempts == 20 + retries


def slow_body(millis: int) -> bytes:
    return encode_invocation(
        Invocation(
            INTERFACE, "0.0.0", "slow", ("int",), (millis,),
            {"path": INTERFACE, "interface": INTERFACE, "version": "0.0.0", "timeout": "60000"},
        )
    )  # fmt: skip


async def test_rules_changed_in_nacos_apply_within_a_second_under_load(
    providers: list[DubboProvider], nacos_server: NacosServer
) -> None:
    # The agent follows its rules in a real Nacos (config service, over gRPC); an operator's
    # client (another Nacos connection) publishes the changes.
    nacos = {
        "server_addresses": [nacos_server.server_addr],
        "group": "governance-it",
        "connect_timeout_s": 30,
        "require_connection": True,
    }
    config = agent_config(providers)
    config["registries"].append({"name": "nacos", "type": "nacos", "config": nacos})
    config["governance"] = {"source": {"registry": "nacos", "data_id": "shop-it.rules"}}
    operator = NacosRegistry(NacosConfig.model_validate(nacos))
    await operator.start()
    source = operator.config_source()
    assert source is not None
    key = ConfigKey("meshagent", "shop-it.rules")
    await source.put(key, split_to("stable"))
    agent = Agent(parse_config(config))
    await agent.start()
    document = agent.rules_document
    assert document is not None
    transport = httpx.ASGITransport(app=create_app(agent), client=("127.0.0.1", 40000))
    api = httpx.AsyncClient(transport=transport, base_url="http://agent", timeout=30)
    try:
        while document.status.version is None:  # the first version, read at start
            document.changed.clear()
            await asyncio.wait_for(document.changed.wait(), 30)
        answers, changed_at = await change_under_load(api, source, key, split_to("canary"))
        failed = [a for a in answers if a[1] != 200]
        assert not failed, failed[:5]
        first_new = min(t for t, _, who in answers if who == "p2")
        # End to end: Nacos pushes the change to the agent's listener (issue 12), so the
        # first call served by the new rule comes within a second of the publish.
        applied_at = (document.status.applied_at or 0) - time.time() + time.monotonic()
        assert changed_at < applied_at, (applied_at, changed_at)
        assert first_new - changed_at < 1.0, (first_new - changed_at, applied_at - changed_at)
        late = [who for t, _, who in answers if t > first_new + 0.1]
        assert late and set(late) == {"p2"}

        # A bad version in Nacos is refused whole, with its paths; the canary split stays.
        document.changed.clear()
        await source.put(key, "rules: [{match: {to: x}, rate_limit: {per_s: -1}, colour: red}]")
        await asyncio.wait_for(document.changed.wait(), 10)
        rules = (await api.get("/v1/rules")).json()
        assert rules["rejected_version"] is not None
        assert any(e.startswith("rules.0.rate_limit.per_s:") for e in rules["errors"])
        assert any(e.startswith("rules.0.colour:") for e in rules["errors"])
        assert rules["source"] == "meshagent/shop-it.rules"
        who = (await api.post(f"{INVOKE}/whoami", json={})).json()["result"]
        assert who == "p2"
    finally:
        await api.aclose()
        await agent.stop()
        await source.delete(key)
        await operator.close()


@pytest.fixture(scope="module")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    with EtcdServer(tmp_path_factory.mktemp("governance-etcd")) as server:
        yield server


@pytest.mark.parametrize("kind", ["zookeeper", "etcd"])
async def test_rules_changed_in_zookeeper_or_etcd_apply_within_a_second_under_load(
    providers: list[DubboProvider], kind: str, request: pytest.FixtureRequest
) -> None:
    # The agent follows its rules in a real ZooKeeper node / etcd key; an operator's
    # client (another registry connection) publishes the change. Measured end to end:
    # from the write to the first call served by the new rule.
    registry_config: dict[str, Any]
    if kind == "zookeeper":
        zookeeper: ZooKeeperServer = request.getfixturevalue("zookeeper")  # the session's
        registry_config = {"hosts": zookeeper.hosts, "require_connection": True}
    else:
        etcd: EtcdServer = request.getfixturevalue("etcd_server")
        registry_config = {"endpoints": [etcd.endpoint], "require_connection": True}
    config = agent_config(providers)
    config["registries"].append({"name": kind, "type": kind, "config": registry_config})
    config["governance"] = {"source": {"registry": kind, "data_id": "shop-zk-etcd.rules"}}
    plugin: Plugin[Registry] = importlib.import_module(f"plugins.{kind}").PLUGIN
    operator = plugin.build(registry_config, "operator")
    await operator.start()
    source = operator.config_source()
    assert source is not None
    key = ConfigKey("meshagent", "shop-zk-etcd.rules")
    await source.put(key, split_to("stable"))
    agent = Agent(parse_config(config))
    await agent.start()
    document = agent.rules_document
    assert document is not None
    transport = httpx.ASGITransport(app=create_app(agent), client=("127.0.0.1", 40000))
    api = httpx.AsyncClient(transport=transport, base_url="http://agent", timeout=30)
    try:
        while document.status.version is None:  # the first version, read at start
            document.changed.clear()
            await asyncio.wait_for(document.changed.wait(), 30)
        answers, changed_at = await change_under_load(api, source, key, split_to("canary"))
        failed = [a for a in answers if a[1] != 200]
        assert not failed, failed[:5]
        first_new = min(t for t, _, who in answers if who == "p2")
        assert first_new - changed_at < 1.0, first_new - changed_at
        late = [who for t, _, who in answers if t > first_new + 0.1]
        assert late and set(late) == {"p2"}
        assert (await api.get("/v1/rules")).json()["source"] == "meshagent/shop-zk-etcd.rules"
    finally:
        await api.aclose()
        await agent.stop()
        await source.delete(key)
        await operator.close()


def split_to(tag: str) -> str:
    return f"""
    rules:
      - match: {{to: {INTERFACE}, method: whoami}}
        traffic:
          subsets:
            - {{name: only, labels: {{tag: {tag}}}, weight: 100}}
    """


async def change_under_load(
    api: httpx.AsyncClient, source: ConfigSource, key: ConfigKey, content: str
) -> tuple[list[tuple[float, int, str]], float]:
    """whoami from 4 callers before and after publishing ``content``: (answers, when)."""
    answers: list[tuple[float, int, str]] = []
    stop = asyncio.Event()
    switched = asyncio.Event()

    async def worker() -> None:
        while not stop.is_set():
            response = await api.post(f"{INVOKE}/whoami", json={})
            who = str(response.json().get("result"))
            answers.append((time.monotonic(), response.status_code, who))
            if who == "p2":
                switched.set()

    workers = [asyncio.create_task(worker()) for _ in range(4)]
    try:
        await asyncio.sleep(0.5)  # load before the change (a duration, not a sync point)
        changed_at = time.monotonic()
        await source.put(key, content)
        await asyncio.wait_for(switched.wait(), 10)
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    return answers, changed_at
