"""The real Java Dubbo 3.3 provider registered in a real Nacos (interface and instance mode),
discovered by the agent's nacos registry and invoked through the OpenAPI and the Dubbo
listener, across a rolling restart."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.agent_process import dubbo_agent_config, start_agent
from tests.fixtures.java_dubbo import INTERFACE, DubboProvider, run_bench
from tests.fixtures.nacos import NacosServer
from tests.fixtures.net import wait_until
from tests.fixtures.processes import free_port
from tests.interop.dubbo_invoke_support import call

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("register_mode", "agent_mode"), [("interface", "interface"), ("instance", "application")]
)
def test_java_provider_in_nacos_is_discovered_and_invoked(
    register_mode: str,
    agent_mode: str,
    nacos_server: NacosServer,
    dubbo_provider_factory: Callable[..., DubboProvider],
    tmp_path: Path,
) -> None:
    app = f"nacos-interop-{register_mode}"
    provider = dubbo_provider_factory(
        # Dubbo checks each Nacos client's status once at start and gives up when the gRPC
        # connection is not up yet on a busy machine: it connects in the background anyway.
        registry=f"{nacos_server.url}?nacos.check=false",
        register_mode=register_mode,
        app=app,
        provider_id=app,
    )
    config = {
        "registries": [
            {
                "name": "nacos",
                "type": "nacos",
                "config": {
                    "server_addresses": [nacos_server.server_addr],
                    "default_mode": agent_mode,
                    "connect_timeout_s": 30,
                },
            }
        ],
        "services": [
            {
                "name": INTERFACE,
                "registry": "nacos",
                "protocol": "dubbo",
                "health": {"enabled": False},
            }
        ],
    }
    agent = start_agent(tmp_path / "agent", config, name=f"agent-nacos-{register_mode}")
    try:
        agent.process.wait_for(
            lambda: provider.address in {i["id"] for i in agent.instances(INTERFACE)},
            60,
            what=f"the agent to find the provider in Nacos ({register_mode})",
        )
        with agent.client() as client:
            response, _ = call(client, "echo", {"types": ["java.lang.String"], "args": ["hi"]})
        assert response.status_code == 200, response.text
        assert response.json()["result"] == "hi"
        assert response.json().get("endpoint") in (None, provider.address)
    finally:
        agent.stop()


@pytest.mark.parametrize(
    ("register_mode", "agent_mode"), [("interface", "interface"), ("instance", "application")]
)
def test_a_rolling_restart_in_nacos_loses_no_call(
    register_mode: str,
    agent_mode: str,
    nacos_server: NacosServer,
    dubbo_provider_factory: Callable[..., DubboProvider],
    tmp_path: Path,
) -> None:
    """Issue 27: one of two providers in Nacos (interface or application level) stopped with
    SIGTERM (a 2 s shutdown wait: it says READONLY and finishes what it has; Nacos lists it
    until it exits) and started again on the same port, three times in a row, under a Java
    consumer calling through the Dubbo listener and a caller of the JSON invocation every
    50 ms: no call fails on either path."""
    registry = f"{nacos_server.url}?nacos.check=false"
    common = {"registry": registry, "register_mode": register_mode, "app": f"rolling-{agent_mode}"}
    dubbo_provider_factory(**common, provider_id="steady")
    port = free_port()
    rolling = ["--shutdown-wait", "2000"]
    doomed = dubbo_provider_factory(
        **common, provider_id="rolling-0", port=port, extra_args=rolling
    )
    config = dubbo_agent_config("unused", INTERFACE)
    config["registries"] = [
        {
            "name": "zk",  # the name dubbo_agent_config's service refers to
            "type": "nacos",
            "config": {
                "server_addresses": [nacos_server.server_addr],
                "default_mode": agent_mode,
                "connect_timeout_s": 30,
            },
        }
    ]
    agent = start_agent(tmp_path / "agent", config, name=f"agent-nacos-rolling-{agent_mode}")
    stop = threading.Event()
    invoked: list[int] = []
    failed: list[str] = []

    def invoke_every_50_ms() -> None:
        with agent.client() as client:
            while not stop.wait(0.05):
                response, _ = call(client, "echo", {"types": ["java.lang.String"], "args": ["r"]})
                invoked.append(response.status_code)
                if response.status_code != 200:
                    failed.append(response.text[:300])

    try:
        agent.wait_endpoints(INTERFACE, 2)
        bench: dict[str, Any] = {}
        runner = threading.Thread(
            target=lambda: bench.update(
                run_bench(
                    url=f"dubbo://127.0.0.1:{agent.listener_port()}",
                    threads=2,
                    duration_s=60,
                    warmup_s=0.5,
                )
            )
        )
        invoker = threading.Thread(target=invoke_every_50_ms)
        runner.start()
        invoker.start()

        def serving(endpoint: str) -> bool | None:
            # Calls on its connection: a provider says READONLY to the channels it has.
            return (
                any(
                    e["id"] == endpoint and not e["draining"] and e["requests"] > 20
                    for e in agent.endpoints(INTERFACE)
                )
                or None
            )

        address = f"127.0.0.1:{port}"
        agent.process.wait_for(lambda: serving(address), 60, what="calls reaching both")
        for generation in range(1, 4):
            stopping = doomed
            stopping.process.send_signal(signal.SIGTERM)
            agent.process.wait_for_line(
                rf"endpoint draining: no new requests .*endpoint=127\.0\.0\.1:{port}", 15
            )
            wait_until(partial(_exited, stopping), 30, what="its exit")
            doomed = dubbo_provider_factory(
                **common, provider_id=f"rolling-{generation}", port=port, extra_args=rolling
            )
            agent.process.wait_for(
                lambda: serving(address), 60, what=f"calls reaching generation {generation}"
            )
        stop.set()
        invoker.join(30)
        runner.join(120)
        assert bench["calls"] > 100 and bench["errors"] == 0, bench
        assert len(invoked) > 50 and not failed, failed[:3]
    finally:
        stop.set()
        agent.stop()


def _exited(provider: DubboProvider) -> bool | None:
    return not provider.process.running or None
