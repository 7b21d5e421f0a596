from __future__ import annotations

import json

from agent.injector.config import InjectorConfig
from agent.injector.overrides import settings_for
from agent.injector.sidecar import build_sidecar

SPEC = {"containers": [{"name": "web", "image": "x", "ports": [{"containerPort": 8080}]}]}


def _build(
    config: InjectorConfig,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
):  # type: ignore[no-untyped-def]
    return build_sidecar(config, settings_for(config, annotations or {}, SPEC), labels or {})


def _env(container: dict) -> dict:  # type: ignore[type-arg]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_ports_agree_between_the_iptables_flags_and_the_agent() -> None:
    sidecar = _build(
        InjectorConfig(image="m:1"),
        {"meshagent.io/capture-port": "16001", "meshagent.io/inbound-port": "16006"},
    )
    assert sidecar.init is not None
    args = sidecar.init["args"]
    flags = dict(zip(args[2::2], args[3::2], strict=True))
    env = _env(sidecar.agent)
    assert flags["--capture-port"] == env["MESHAGENT_CAPTURE__PORT"] == "16001"
    assert flags["--inbound-port"] == env["MESHAGENT_INBOUND__PORT"] == "16006"
    assert flags["--uid"] == str(sidecar.agent["securityContext"]["runAsUser"]) == "1337"
    assert flags["--exclude-inbound-ports"] == env["MESHAGENT_ADMIN__PORT"] == "15000"
    assert env["MESHAGENT_INBOUND__APP_PORT"] == "8080"


def test_inbound_off_is_port_zero_for_iptables() -> None:
    sidecar = _build(InjectorConfig(image="m:1"), {"meshagent.io/inbound": "disabled"})
    assert sidecar.init is not None
    args = sidecar.init["args"]
    assert args[args.index("--inbound-port") + 1] == "0"
    assert _env(sidecar.agent)["MESHAGENT_INBOUND__ENABLED"] == "false"


def test_capture_off_has_no_init_container() -> None:
    config = InjectorConfig(image="m:1", capture={"enabled": False})  # type: ignore[arg-type]
    sidecar = _build(config)
    assert sidecar.init is None
    assert json.loads(sidecar.status)["initContainers"] == []


def test_ipv6_listens_on_both_families_and_captures_with_ip6tables() -> None:
    sidecar = _build(InjectorConfig(image="m:1", capture={"ipv6": True}))  # type: ignore[arg-type]
    env = _env(sidecar.agent)
    assert env["MESHAGENT_ADMIN__HOST"] == "::" and env["MESHAGENT_CAPTURE__IPV6"] == "true"
    assert sidecar.init is not None and sidecar.init["args"][-1] == "--ipv6"


def test_app_name_from_the_pods_labels() -> None:
    sidecar = _build(
        InjectorConfig(image="m:1"), labels={"app": "legacy", "app.kubernetes.io/name": "shop"}
    )
    assert _env(sidecar.agent)["MESHAGENT_APP__NAME"] == "shop"
    assert "MESHAGENT_APP__NAME" not in _env(_build(InjectorConfig(image="m:1")).agent)


def test_extra_env_comes_last_in_order() -> None:
    extra = [{"name": "A", "value": "1"}, {"name": "B", "value": "$(A)"}]
    sidecar = _build(InjectorConfig(image="m:1", env=extra))
    assert sidecar.agent["env"][-2:] == extra


def test_native_sidecar_has_restart_policy_and_no_hold_hook() -> None:
    sidecar = _build(InjectorConfig(image="m:1", native_sidecar=True))
    assert sidecar.native and sidecar.agent["restartPolicy"] == "Always"
    assert "lifecycle" not in sidecar.agent
    status = json.loads(sidecar.status)
    assert status["containers"] == [] and status["initContainers"] == [
        "meshagent-init",
        "meshagent",
    ]


def test_hold_waits_for_healthz_not_readyz() -> None:
    # /readyz follows the app's health, and the app has not started yet: it would deadlock.
    sidecar = _build(InjectorConfig(image="m:1", hold_timeout_s=30))
    command = sidecar.agent["lifecycle"]["postStart"]["exec"]["command"]
    assert command == [
        "meshagent",
        "wait-ready",
        "--url",
        "http://127.0.0.1:15000/healthz",
        "--timeout",
        "30",
    ]
    assert "lifecycle" not in _build(InjectorConfig(image="m:1", hold_application=False)).agent


def test_no_resources_means_no_resources_field() -> None:
    assert "resources" not in _build(InjectorConfig(image="m:1")).agent
