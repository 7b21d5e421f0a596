"""The Dubbo listener on ``workers: 2`` (docs/workers.md): real Java consumers, in
parallel, through both workers to the real Java provider found in ZooKeeper."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plugins.dubbo.body import Invocation, decode_result, encode_invocation, request_frame
from plugins.dubbo.frame import Frame, FrameDecoder
from tests.fixtures.agent_process import AgentProcess, dubbo_agent_config, start_agent
from tests.fixtures.java_dubbo import INTERFACE, DubboProvider, load_suite, mismatch, run_calls
from tests.fixtures.zookeeper import ZooKeeperServer

pytestmark = pytest.mark.integration


@pytest.fixture
def agent(
    zookeeper: ZooKeeperServer, dubbo_provider: DubboProvider, tmp_path: Path
) -> Iterator[AgentProcess]:
    config: dict[str, Any] = {**dubbo_agent_config(zookeeper.hosts, INTERFACE), "workers": 2}
    started = start_agent(tmp_path, config)
    try:
        started.wait_ready()
        started.wait_endpoints(INTERFACE, 1)
        yield started
    finally:
        started.stop()


def echo(port: int, text: str, request_id: int) -> Any:
    """One echo(String) call over its own connection, with our own encoder."""
    invocation = Invocation(
        INTERFACE, "0.0.0", "echo", ("java.lang.String",), (text,), {"path": INTERFACE}
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request_frame(request_id, encode_invocation(invocation)))
        decoder = FrameDecoder()
        while not isinstance(event := decoder.next_event(), Frame):
            data = sock.recv(65536)
            assert data, "the agent closed the connection"
            decoder.receive_data(data)
    assert event.header.request_id == request_id
    return decode_result(event.header, event.body).value


def test_java_consumers_in_parallel_through_both_workers(
    agent: AgentProcess, dubbo_provider: DubboProvider
) -> None:
    url = f"dubbo://127.0.0.1:{agent.listener_port()}"
    results: list[dict[str, dict[str, Any]]] = []
    threads = [
        threading.Thread(target=lambda: results.append(run_calls(url=url))) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    # Meanwhile, calls on 16 connections of their own: the kernel spreads them.
    answers = [echo(agent.listener_port(), f"hi {i}", i + 1) for i in range(16)]
    for thread in threads:
        thread.join()
    assert answers == [f"hi {i}" for i in range(16)]
    assert len(results) == 2
    for outcomes in results:
        problems = [
            p
            for case in load_suite()
            if (p := mismatch(case, outcomes.get(case["case"]), dubbo_provider.provider_id))
        ]
        assert not problems, "\n".join(problems)
    for worker in ("0", "1"):
        assert agent.metric("meshagent_listener_connections_total", worker=worker) > 0
    # Each worker's calls are counted once in the agent's totals.
    assert agent.metric("meshagent_calls_total", protocol="dubbo") >= 16


def test_json_invocations_are_served_by_the_workers(agent: AgentProcess) -> None:
    for i in range(16):
        # A connection each: the kernel spreads them over the supervisor and the workers.
        with agent.client() as client:
            response = client.post(
                f"/v1/invoke/dubbo/{INTERFACE}/echo",
                json={"args": [f"json {i}"], "types": ["java.lang.String"]},
            )
        assert response.status_code == 200, response.text
        assert response.json()["result"] == f"json {i}"
    served = {
        worker: agent.metric("meshagent_listener_connections_total", listener="api", worker=worker)
        for worker in ("0", "1")
    }
    assert all(served.values()), served
