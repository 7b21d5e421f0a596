"""The contract between what the injector writes into a pod and the agent's command line:
the agent container's command, config file (the chart's ConfigMap) and environment start a
real agent with capture and inbound where the pod says; the postStart hook and the init
container's arguments run through the real CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.injector.config import InjectorConfig
from agent.injector.overrides import settings_for
from agent.injector.sidecar import CONFIG_FILE, build_sidecar
from tests.fixtures.helm import Helm, find, helm_binary
from tests.fixtures.processes import LOOPBACK, ManagedProcess, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
POD_FIELDS = {"metadata.name": "web-1", "metadata.namespace": "shop", "status.podIP": "10.1.2.3"}


def _environment(container: dict[str, Any]) -> dict[str, str]:
    """The container's env as the kubelet would hand it over (fieldRefs resolved)."""
    env: dict[str, str] = {}
    for entry in container["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            env[entry["name"]] = POD_FIELDS[entry["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent.cli", *args]


def test_the_injected_agent_starts_where_the_pod_says(tmp_path: Path) -> None:
    _, documents = Helm(helm_binary(), tmp_path).render({})
    config_file = tmp_path / "agent.yaml"
    config_file.write_text(find(documents, "ConfigMap", "meshagent-agent")["data"]["agent.yaml"])

    admin, capture, inbound, app = (free_port() for _ in range(4))
    annotations = {
        "meshagent.io/admin-port": str(admin),
        "meshagent.io/capture-port": str(capture),
        "meshagent.io/inbound-port": str(inbound),
        "meshagent.io/app-port": str(app),
    }
    config = InjectorConfig(image="meshagent:0.1.0")
    spec = {"containers": [{"name": "web", "image": "x"}]}
    sidecar = build_sidecar(config, settings_for(config, annotations, spec), {"app": "shop"})

    agent = sidecar.agent
    assert agent["command"] == ["meshagent"] and agent["args"][-1] == CONFIG_FILE
    env = _environment(agent)
    # This machine is shared: listen on loopback only, where the pod would listen wide.
    env |= {"MESHAGENT_ADMIN__HOST": LOOPBACK, "MESHAGENT_INBOUND__HOST": LOOPBACK}
    process = ManagedProcess(
        _cli(*agent["args"][:-1], str(config_file)),
        log_path=tmp_path / "agent.log",
        env=env,
        cwd=ROOT,
        name="agent",
    )
    with process:
        process.wait_for_line(rf"^meshagent ready: OpenAPI on http://{LOOPBACK}:{admin}$", 60)
        output = process.output(process.run_offset)
        assert f"capture on {LOOPBACK}:{capture}" in output
        assert f"inbound on {LOOPBACK}:{inbound} -> 127.0.0.1:{app}" in output
        # The postStart hook, as the kubelet runs it in the agent container.
        hook = agent["lifecycle"]["postStart"]["exec"]["command"]
        assert hook[0] == "meshagent"
        held = subprocess.run(_cli(*hook[1:]), capture_output=True, text=True, timeout=90, cwd=ROOT)
        assert held.returncode == 0, held.stderr
        readiness = agent["readinessProbe"]["httpGet"]
        assert readiness["port"] == admin


def test_the_init_containers_arguments_parse_in_the_real_cli() -> None:
    config = InjectorConfig(
        image="meshagent:0.1.0",
        capture={  # type: ignore[arg-type]
            "exclude_outbound_ports": [22],
            "exclude_outbound_cidrs": ["169.254.169.254/32"],
            "include_outbound_cidrs": ["10.0.0.0/8"],
            "exclude_inbound_ports": [9100],
            "ipv6": True,
        },
    )
    spec = {"containers": [{"name": "web", "image": "x", "ports": [{"containerPort": 8080}]}]}
    sidecar = build_sidecar(config, settings_for(config, {}, spec), {})
    assert sidecar.init is not None and sidecar.init["command"] == ["meshagent"]
    # --dry-run prints the iptables-restore input instead of applying it (no root here).
    result = subprocess.run(
        _cli(*sidecar.init["args"], "--dry-run"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    rules = result.stdout
    assert "-j REDIRECT --to-ports 15001" in rules and "-j REDIRECT --to-ports 15006" in rules
    assert "--uid-owner 1337" in rules
    assert "--dport 15000 -j RETURN" in rules and "--dport 9100 -j RETURN" in rules
    assert "--dport 22 -j RETURN" in rules
    assert "-d 169.254.169.254/32 -j RETURN" in rules
    assert rules.count("*nat") == 2  # IPv4 and IPv6
