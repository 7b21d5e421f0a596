from __future__ import annotations

from typing import Any

import pytest

from agent.injector.config import InjectorConfig
from agent.injector.overrides import InvalidAnnotations, settings_for

CONFIG = InjectorConfig(
    image="meshagent:1",
    resources={"requests": {"cpu": "100m"}, "limits": {"memory": "256Mi"}},  # type: ignore[arg-type]
)
SPEC: dict[str, Any] = {
    "containers": [
        {"name": "sidecar", "image": "x", "ports": [{"containerPort": 53, "protocol": "UDP"}]},
        {"name": "web", "image": "y", "ports": [{"containerPort": 8080}]},
    ]
}


def test_defaults_and_the_first_tcp_container_port() -> None:
    settings = settings_for(CONFIG, {}, SPEC)
    assert (settings.admin_port, settings.capture_port, settings.inbound_port) == (
        15000,
        15001,
        15006,
    )
    assert settings.app_port == 8080  # the UDP port is not the app's
    assert settings.capture and settings.inbound
    assert settings.resources == CONFIG.resources


def test_annotations_override() -> None:
    settings = settings_for(
        CONFIG,
        {
            "meshagent.io/admin-port": "16000",
            "meshagent.io/capture-port": "16001",
            "meshagent.io/inbound-port": "16006",
            "meshagent.io/app-port": "9000",
            "meshagent.io/capture": "disabled",
            "meshagent.io/config-map": "other-config",
            "meshagent.io/exclude-outbound-ports": "22, 3306",
            "meshagent.io/exclude-inbound-ports": "9100",
            "meshagent.io/exclude-outbound-cidrs": "10.0.0.0/8,fd00::/8",
            "meshagent.io/cpu-limit": "1",
            "meshagent.io/memory-request": "64Mi",
        },
        SPEC,
    )
    assert (settings.admin_port, settings.capture_port, settings.inbound_port) == (
        16000,
        16001,
        16006,
    )
    assert settings.app_port == 9000
    assert not settings.capture
    assert settings.config_map == "other-config"
    assert settings.exclude_outbound_ports == (22, 3306)
    assert settings.exclude_inbound_ports == (9100,)
    assert settings.exclude_outbound_cidrs == ("10.0.0.0/8", "fd00::/8")
    assert settings.resources.to_k8s() == {
        "requests": {"cpu": "100m", "memory": "64Mi"},
        "limits": {"memory": "256Mi", "cpu": "1"},
    }


def test_no_app_port_means_no_inbound() -> None:
    settings = settings_for(CONFIG, {}, {"containers": [{"name": "a", "image": "b"}]})
    assert settings.app_port is None and not settings.inbound


def test_every_bad_annotation_is_named() -> None:
    with pytest.raises(InvalidAnnotations) as caught:
        settings_for(
            CONFIG,
            {
                "meshagent.io/admin-port": "0",
                "meshagent.io/capture-port": "http",
                "meshagent.io/app-port": "70000",
                "meshagent.io/inbound": "yes",
                "meshagent.io/config-map": "Bad_Name",
                "meshagent.io/exclude-outbound-ports": "22,ssh",
                "meshagent.io/exclude-outbound-cidrs": "10.0.0.0/33",
                "meshagent.io/memory-limit": "1GB",
            },
            SPEC,
        )
    text = str(caught.value)
    for key in (
        "admin-port",
        "capture-port",
        "app-port",
        "meshagent.io/inbound:",
        "config-map",
        "exclude-outbound-ports",
        "exclude-outbound-cidrs",
        "memory-limit",
    ):
        assert f"meshagent.io/{key}" in text or key in text, text


def test_ports_that_collide_are_refused() -> None:
    with pytest.raises(InvalidAnnotations, match="the capture port 15000 is also the admin port"):
        settings_for(CONFIG, {"meshagent.io/capture-port": "15000"}, SPEC)
    with pytest.raises(InvalidAnnotations, match="the app port 15006 is also the inbound port"):
        settings_for(CONFIG, {"meshagent.io/app-port": "15006"}, SPEC)


def test_unrelated_annotations_are_ignored() -> None:
    settings = settings_for(CONFIG, {"prometheus.io/port": "x", "meshagent.io/other": "y"}, SPEC)
    assert settings == settings_for(CONFIG, {}, SPEC)
