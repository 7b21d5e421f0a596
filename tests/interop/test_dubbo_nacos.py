"""The real Java Dubbo 3.3 provider registered in a real Nacos (interface and instance mode),
discovered by the agent's nacos registry and invoked through the OpenAPI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.agent_process import start_agent
from tests.fixtures.java_dubbo import INTERFACE, DubboProvider
from tests.fixtures.nacos import NacosServer
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
