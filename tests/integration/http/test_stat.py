"""``meshagent stat`` against a live agent with real uvicorn providers (issue 28): the rows
agree with the calls made between two scrapes of its /metrics."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from agent import stat_cli
from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.processes import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory, providers: dict[str, int]
) -> Iterator[AgentProcess]:
    config = {
        "services": [{"name": "api", "protocol": "http", "health": {"enabled": False}}],
        "listeners": [{"port": free_port(), "service": "api", "protocol": "http"}],
    }
    agent = start_agent(tmp_path_factory.mktemp("agent-stat"), config)
    try:
        with agent.client() as client:
            for name, port in providers.items():
                client.put(
                    f"/v1/registrations/api/{name}", json={"host": "127.0.0.1", "port": port}
                ).raise_for_status()
        agent.wait_endpoints("api", 2)
        yield agent
    finally:
        agent.stop()


def test_rows_count_the_calls_between_two_scrapes(agent: AgentProcess) -> None:
    listener = f"http://127.0.0.1:{agent.listener_port(0)}"
    with agent.client() as api, httpx.Client(base_url=listener, timeout=10) as app:
        before = stat_cli.scrape(api)
        started = time.monotonic()
        for i in range(20):
            answer = app.get("/status/500" if i % 4 == 0 else "/hello")
            assert answer.status_code == (500 if i % 4 == 0 else 200)
        after = stat_cli.scrape(api)
        elapsed = time.monotonic() - started
        found = stat_cli.rows(before, after, elapsed, stat_cli.ejected_now(api))
    (row,) = [r for r in found if r.service == "api" and r.method == "GET"]
    assert round(row.requests_per_s * elapsed) == 20
    assert row.success_rate == 0.75  # 5 of 20 answered 500
    assert row.p50_ms is not None and row.p99_ms is not None
    assert 0 < row.p50_ms <= row.p95_ms <= row.p99_ms  # type: ignore[operator]
    assert row.retries == 0 and row.ejected_endpoints == 0
    assert (row.protocol, row.direction) == ("http", "outbound")


def test_the_agent_exports_its_event_loop_lag(agent: AgentProcess) -> None:
    with agent.client() as api:
        text = api.get("/metrics").text
    count = [
        line
        for line in text.splitlines()
        if line.startswith("meshagent_event_loop_lag_seconds_count")
    ]
    assert count and float(count[0].split()[-1]) >= 1  # ticking since the start
    assert "meshagent_event_loop_lag_last_seconds " in text


def test_the_command_prints_json_and_a_table(agent: AgentProcess) -> None:
    command = [
        sys.executable,
        "-m",
        "agent.cli",
        "stat",
        "--api",
        agent.base_url,
        "--window",
        "0.2",
    ]
    as_json = subprocess.run([*command, "-o", "json"], capture_output=True, text=True, timeout=60)
    assert as_json.returncode == 0, as_json.stderr
    rows = json.loads(as_json.stdout)
    assert {"api"} <= {row["service"] for row in rows}
    assert set(rows[0]) == {
        "service",
        "method",
        "protocol",
        "direction",
        "requests_per_s",
        "success_rate",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "retries",
        "ejected_endpoints",
    }
    as_table = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert as_table.returncode == 0, as_table.stderr
    assert as_table.stdout.split()[:4] == ["SERVICE", "METHOD", "PROTO", "DIR"]
    unreachable = subprocess.run(
        [*command[:4], "--api", f"http://127.0.0.1:{free_port()}", "--window", "0.1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unreachable.returncode == 1 and "meshagent stat:" in unreachable.stderr
