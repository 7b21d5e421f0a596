"""Governance rules on the Thrift listener: thriftpy2 clients → the agent (a process, rules
in its config) → thriftpy2 servers."""

from __future__ import annotations

import contextlib
import socketserver
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from thriftpy2.thrift import TApplicationException

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.processes import free_port
from tests.fixtures.thrift_server import ThriftServer, client
from tests.integration.thrift.conftest import options

pytestmark = pytest.mark.integration

FORM = "framed-binary"
RETRY = "thrift-retry"  # one real server, an endpoint where nothing listens, and a closer
LIMITED = "thrift-limited"  # both servers, at most one provider connection


@pytest.fixture(scope="module")
def governed(
    tmp_path_factory: pytest.TempPathFactory, thrift_servers: dict[str, list[ThriftServer]]
) -> Iterator[AgentProcess]:
    servers = thrift_servers[FORM]
    instances = [{**s.instance(), "metadata": {"tag": s.server_id}} for s in servers]
    config = {
        "registries": [
            {"name": "local", "type": "local", "config": {"services": {FORM: instances}}}
        ],
        "services": [{"name": FORM, "protocol": "thrift", "health": {"enabled": False}}],
        "listeners": [{"port": free_port(), "service": FORM, "protocol": "thrift"}],
        "governance": {
            "rules": {
                "rules": [
                    {
                        "match": {"to": FORM, "method": "add"},
                        "rate_limit": {"per_s": 0.001, "burst": 2},
                    },
                    {
                        "match": {"to": FORM, "method": "whoami"},
                        "traffic": {
                            "subsets": [
                                {
                                    "name": "b",
                                    "labels": {"tag": servers[1].server_id},
                                    "weight": 100,
                                }
                            ]
                        },
                    },
                    {
                        "match": {"to": FORM, "method": "ping"},
                        "fault": {"abort": {"percent": 100, "message": "chaos"}},
                    },
                ]
            }
        },
        "drain_timeout_s": 2,
    }
    workdir: Path = tmp_path_factory.mktemp("thrift-governed")
    agent = start_agent(workdir, config)
    try:
        agent.wait_endpoints(FORM, 2)
        yield agent
    finally:
        agent.stop()


def listener_port(agent: AgentProcess) -> int:
    return int(agent.config["listeners"][0]["port"])


def test_rate_limit_and_abort_are_application_exceptions(governed: AgentProcess) -> None:
    outcomes: list[object] = []
    with client(listener_port(governed), FORM) as echo:
        for _ in range(4):
            try:
                outcomes.append(echo.add(1, 2))
            except TApplicationException as exc:
                assert exc.type == TApplicationException.INTERNAL_ERROR
                outcomes.append(exc.message)
        with pytest.raises(TApplicationException, match="chaos"):
            echo.ping()
        assert echo.whoami()  # the connection serves on after the refusals
    assert outcomes[:2] == [3, 3]
    assert all("rate_limited" in str(o) for o in outcomes[2:]), outcomes
    with governed.client() as api:
        counters = api.get("/v1/rules").json()["counters"]
    assert counters["rate_limited"] == 2 and counters["fault_aborts"] == 1


def test_subset_by_endpoint_metadata(
    governed: AgentProcess, thrift_servers: dict[str, list[ThriftServer]]
) -> None:
    with client(listener_port(governed), FORM) as echo:
        answered = Counter(echo.whoami() for _ in range(10))
    assert answered == {thrift_servers[FORM][1].server_id: 10}


class _Closer(socketserver.BaseRequestHandler):
    """A provider that dies under each call: reads the request, closes without answer."""

    def handle(self) -> None:
        with contextlib.suppress(OSError):
            self.request.recv(65536)
        self.request.close()


@pytest.fixture(scope="module")
def closer() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Closer)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def retrying(
    tmp_path_factory: pytest.TempPathFactory,
    thrift_servers: dict[str, list[ThriftServer]],
    closer: int,
) -> Iterator[AgentProcess]:
    real = thrift_servers[FORM][0]
    instances = [
        real.instance(),
        {"host": "127.0.0.1", "port": free_port(), "id": "dead"},
        {"host": "127.0.0.1", "port": closer, "id": "closer"},
    ]
    retry: dict[str, Any] = {
        "attempts": 3,
        "retry_on": ["connect_failure", "reset"],
        "backoff_base_ms": 1,
        "backoff_max_ms": 5,
        # A floor: the first call may need two retries (the dead port, then the closer).
        "budget": {"ratio": 1.0, "min_per_s": 10},
    }
    idempotent = {**retry, "idempotent": True}
    service = {
        "name": RETRY,
        "protocol": "thrift",
        "health": {"enabled": False},
        "outlier": {"enabled": False},
        "options": options(FORM),
    }
    both = [s.instance() for s in thrift_servers[FORM]]
    config = {
        "registries": [
            {
                "name": "local",
                "type": "local",
                "config": {"services": {RETRY: instances, LIMITED: both}},
            }
        ],
        "services": [service, {**service, "name": LIMITED}],
        "listeners": [
            {"port": free_port(), "service": RETRY, "protocol": "thrift"},
            {"port": free_port(), "service": LIMITED, "protocol": "thrift"},
        ],
        "governance": {
            "rules": {
                "circuit_breakers": {LIMITED: {"max_connections": 1}},
                "rules": [
                    # whoami is idempotent: a lost connection may be retried.
                    {"match": {"to": RETRY, "method": "whoami"}, "retry": idempotent},
                    # add is not: only the connect failures are.
                    {"match": {"to": RETRY, "method": "add"}, "retry": retry},
                    {
                        "match": {"to": RETRY, "method": "ping"},
                        "fault": {"delay": {"percent": 100, "ms": 300}},
                        "retry": idempotent,  # whichever endpoint it is sent to first
                    },
                    {
                        "match": {"to": RETRY, "method": "recorded"},
                        "degrade": {"value": 42},
                    },
                    {
                        # slow returns a string: this value cannot be its result.
                        "match": {"to": RETRY, "method": "slow"},
                        "degrade": {"value": {"not": "a string"}},
                    },
                ],
            }
        },
        "drain_timeout_s": 2,
    }
    agent = start_agent(tmp_path_factory.mktemp("thrift-retrying"), config)
    try:
        agent.wait_endpoints(RETRY, 3)
        agent.wait_endpoints(LIMITED, 2)
        yield agent
    finally:
        agent.stop()


def counters(agent: AgentProcess) -> dict[str, int]:
    with agent.client() as api:
        body: dict[str, int] = api.get("/v1/rules").json()["counters"]
        return body


def test_connect_failures_and_lost_connections_are_retried(
    retrying: AgentProcess, thrift_servers: dict[str, list[ThriftServer]]
) -> None:
    """Round robin over a real server, a dead port and a provider that closes under every
    call: under the idempotent rule every call is answered by the real server."""
    before = counters(retrying)["retries"]
    with client(listener_port(retrying), FORM) as echo:
        answered = Counter(echo.whoami() for _ in range(9))
    assert answered == {thrift_servers[FORM][0].server_id: 9}
    # Each of the two bad endpoints was picked first at least twice in nine calls.
    assert counters(retrying)["retries"] - before >= 4


def test_lost_connection_not_retried_without_idempotent(retrying: AgentProcess) -> None:
    """add's rule retries connect failures only: a call the closer took is lost."""
    results: Counter[str] = Counter()
    with client(listener_port(retrying), FORM) as echo:
        for _ in range(9):
            try:
                assert echo.add(2, 3) == 5
                results["ok"] += 1
            except TApplicationException as exc:
                assert "failed" in exc.message
                results["lost"] += 1
    assert results["ok"] >= 3 and results["lost"] >= 2, results


def test_injected_delay(retrying: AgentProcess) -> None:
    before = counters(retrying)["fault_delays"]
    with client(listener_port(retrying), FORM) as echo:
        started = time.monotonic()
        echo.ping()
        waited = time.monotonic() - started
    assert waited >= 0.3
    assert counters(retrying)["fault_delays"] == before + 1


def test_json_invocation_retries_degrades_and_delays(
    retrying: AgentProcess, thrift_servers: dict[str, list[ThriftServer]]
) -> None:
    before = counters(retrying)
    with retrying.client() as api:
        answered = Counter(
            api.post(f"/v1/invoke/thrift/{RETRY}/whoami", json={}).json()["result"]
            for _ in range(9)
        )
        fallback = api.post(f"/v1/invoke/thrift/{RETRY}/recorded", json={})
        started = time.monotonic()
        delayed = api.post(f"/v1/invoke/thrift/{RETRY}/ping", json={})
        waited = time.monotonic() - started
    assert answered == {thrift_servers[FORM][0].server_id: 9}
    after = counters(retrying)
    assert after["retries"] - before["retries"] >= 4
    assert fallback.status_code == 200 and fallback.json()["result"] == 42
    assert delayed.status_code == 200 and waited >= 0.3
    assert after["fault_delays"] == before["fault_delays"] + 1
    assert after["degraded"] == before["degraded"] + 1


def test_listener_answers_fallback_values_in_the_idls_types(retrying: AgentProcess) -> None:
    """The service names its IDL: the fallback value is encoded as the method's result;
    a value that does not fit the result type is answered as an error instead."""
    with client(listener_port(retrying), FORM) as echo:
        assert echo.recorded() == 42
        with pytest.raises(TApplicationException, match="degraded"):
            echo.slow(1)
        assert echo.recorded() == 42  # the connection serves on
    retrying.process.wait_for_line("fallback value does not fit", 5)


def test_max_connections_refuses_a_call_needing_a_new_connection(
    retrying: AgentProcess,
) -> None:
    """Round robin over two providers with at most one provider connection for the
    service: the calls to the provider without a connection are refused at once."""
    port = int(retrying.config["listeners"][1]["port"])
    outcomes: Counter[str] = Counter()
    with client(port, FORM) as echo:
        for _ in range(4):
            try:
                echo.whoami()
                outcomes["ok"] += 1
            except TApplicationException as exc:
                assert "max_connections 1" in exc.message
                outcomes["refused"] += 1
    assert outcomes == {"ok": 2, "refused": 2}
    with retrying.client() as api:
        loads = {c["cluster"]: c for c in api.get("/v1/rules").json()["clusters"]}
    assert loads[LIMITED]["overflows"] >= 2

    # The JSON invocation is held to the same limit.
    with retrying.client() as api:
        codes = Counter(
            api.post(f"/v1/invoke/thrift/{LIMITED}/whoami", json={}).status_code for _ in range(4)
        )
    assert codes == {200: 2, 503: 2}
