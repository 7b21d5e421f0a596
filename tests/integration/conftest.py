"""The agent as a real process over TCP upstream processes, for the integration tests.

``upstreams`` and ``shared_agent`` live for the session: tests that only send traffic or
use the API share them and must leave them as they found them. Tests that kill, drain or
wait for timers start their own with ``upstream_factory`` and ``agent_factory``; all stop
at teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.agent_process import (
    APP_SERVICE,
    AgentProcess,
    start_agent,
    tcp_agent_config,
)
from tests.fixtures.otel_collector import Collector, start_collector
from tests.fixtures.processes import ProcessError
from tests.fixtures.upstreams import Upstream, start_upstreams

# The shared agent's admin.max_body_bytes (the API test sends more).
SHARED_MAX_BODY_BYTES = 2048


@pytest.fixture(scope="session")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Upstream]]:
    """u0, u1, u2 for the whole session. Tests must not kill these."""
    started = start_upstreams(["u0", "u1", "u2"], tmp_path_factory.mktemp("upstreams"))
    try:
        yield started
    finally:
        for upstream in started:
            upstream.stop()


@pytest.fixture(scope="session")
def shared_agent(
    upstreams: list[Upstream], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentProcess]:
    config = tcp_agent_config(
        [u.port for u in upstreams],
        service={"health": {"enabled": False}},
        extra_services=(APP_SERVICE,),
        admin={"max_body_bytes": SHARED_MAX_BODY_BYTES},
    )
    agent = start_agent(tmp_path_factory.mktemp("shared-agent"), config)
    try:
        agent.wait_ready()
        yield agent
    finally:
        code = agent.stop()
    if code != 0:
        raise ProcessError(f"the shared agent exited with {code}; log {agent.log_path}")


@pytest.fixture
def upstream_factory(tmp_path: Path) -> Iterator[Callable[..., list[Upstream]]]:
    """``upstream_factory("a", "b")`` starts upstreams a and b."""
    started: list[Upstream] = []

    def make(*names: str) -> list[Upstream]:
        upstreams = start_upstreams(list(names), tmp_path / "upstreams")
        started.extend(upstreams)
        return upstreams

    yield make
    for upstream in started:
        upstream.stop()


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], AgentProcess]]:
    """``agent_factory(config)`` starts an agent and waits until /readyz answers 200."""
    started: list[AgentProcess] = []

    def make(config: dict[str, Any]) -> AgentProcess:
        agent = start_agent(tmp_path / f"agent{len(started)}", config)
        started.append(agent)
        return agent.wait_ready()

    yield make
    for agent in started:
        agent.stop()


@pytest.fixture(scope="session")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    """A real OpenTelemetry Collector for the tracing tests; each test looks for spans of
    a trace id of its own."""
    collector = start_collector(tmp_path_factory.mktemp("otelcol"))
    try:
        yield collector
    finally:
        collector.stop()
