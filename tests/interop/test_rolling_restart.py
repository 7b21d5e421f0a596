"""Rolling restarts without a failed call (issue 27), against the real Java Dubbo 3.3
provider in ZooKeeper and in Nacos, interface and application level.

One of two providers is stopped with SIGTERM (a 2 s shutdown wait: it says READONLY to its
connections and finishes what it has; the registry lists it until it exits, at application
level in Nacos for a while after) and started again on the same port, three times in a row,
under a Java consumer calling through the Dubbo listener and a caller of the JSON
invocation every 50 ms: no call fails on either path."""

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
from tests.fixtures.processes import free_port, wait_until
from tests.fixtures.zookeeper import ZooKeeperServer
from tests.interop.dubbo_invoke_support import call

pytestmark = pytest.mark.integration

LEVELS = [("interface", "interface"), ("instance", "application")]


@pytest.mark.parametrize(("register_mode", "agent_mode"), LEVELS)
def test_a_rolling_restart_in_zookeeper_loses_no_call(
    register_mode: str,
    agent_mode: str,
    zookeeper: ZooKeeperServer,
    dubbo_provider_factory: Callable[..., DubboProvider],
    tmp_path: Path,
) -> None:
    registry = {"type": "zookeeper", "config": {"hosts": zookeeper.hosts}}
    _rolling_restart(
        zookeeper.url, registry, register_mode, agent_mode, dubbo_provider_factory, tmp_path
    )


@pytest.mark.parametrize(("register_mode", "agent_mode"), LEVELS)
def test_a_rolling_restart_in_nacos_loses_no_call(
    register_mode: str,
    agent_mode: str,
    nacos_server: NacosServer,
    dubbo_provider_factory: Callable[..., DubboProvider],
    tmp_path: Path,
) -> None:
    registry = {
        "type": "nacos",
        "config": {"server_addresses": [nacos_server.server_addr], "connect_timeout_s": 30},
    }
    # Dubbo checks each Nacos client's status once at start and gives up when the gRPC
    # connection is not up yet on a busy machine: it connects in the background anyway.
    url = f"{nacos_server.url}?nacos.check=false"
    _rolling_restart(url, registry, register_mode, agent_mode, dubbo_provider_factory, tmp_path)


def _rolling_restart(
    registry_url: str,
    registry: dict[str, Any],
    register_mode: str,
    agent_mode: str,
    dubbo_provider_factory: Callable[..., DubboProvider],
    tmp_path: Path,
) -> None:
    app = f"rolling-{registry['type']}-{agent_mode}"
    common = {"registry": registry_url, "register_mode": register_mode, "app": app}
    steady = dubbo_provider_factory(**common, provider_id="steady")
    port = free_port()
    rolling = ["--shutdown-wait", "2000"]
    doomed = dubbo_provider_factory(
        **common, provider_id="rolling-0", port=port, extra_args=rolling
    )
    config = dubbo_agent_config("unused", INTERFACE)
    config["registries"] = [
        # "zk": the name dubbo_agent_config's service refers to.
        {"name": "zk", **registry, "config": {**registry["config"], "default_mode": agent_mode}}
    ]
    agent = start_agent(tmp_path / "agent", config, name=f"agent-{app}")
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

    def serving(endpoint: str) -> bool | None:
        # Calls on its connection: a provider says READONLY to the channels it has.
        return (
            any(
                e["id"] == endpoint and not e["draining"] and e["requests"] > 20
                for e in agent.endpoints(INTERFACE)
            )
            or None
        )

    try:
        # Other tests' providers of the interface may be registered too (the session's):
        # they take calls as well, which changes nothing here.
        ours = {steady.address, doomed.address}
        agent.process.wait_for(
            lambda: ours <= {e["id"] for e in agent.endpoints(INTERFACE)} or None,
            60,
            what="both providers of the test",
        )
        bench: dict[str, Any] = {}
        listener = f"dubbo://127.0.0.1:{agent.listener_port()}"
        runner = threading.Thread(
            target=lambda: bench.update(
                run_bench(url=listener, threads=2, duration_s=40, warmup_s=0.5)
            )
        )
        invoker = threading.Thread(target=invoke_every_50_ms)
        runner.start()
        invoker.start()
        address = f"127.0.0.1:{port}"
        agent.process.wait_for(lambda: serving(address), 60, what="calls reaching both")
        for generation in range(1, 4):
            stopping = doomed
            stopping.process.send_signal(signal.SIGTERM)
            # A bound, not a measure: Dubbo's shutdown hook unregisters (both levels, for
            # instance-application) before its READONLY, and a loaded machine's JVM is slow.
            agent.process.wait_for_line(
                rf"endpoint draining: no new requests .*endpoint=127\.0\.0\.1:{port}", 60
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
