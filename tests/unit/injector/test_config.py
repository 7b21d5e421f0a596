from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.injector.config import (
    InjectorConfig,
    check_quantity,
    load_injector_config,
    parse_injector_config,
)


def test_defaults_are_the_charts() -> None:
    config = parse_injector_config({"image": "meshagent:0.1.0"})
    assert (config.uid, config.gid, config.admin_port) == (1337, 1337, 15000)
    assert config.capture.enabled and config.capture.port == 15001
    assert config.inbound.enabled and config.inbound.port == 15006
    assert config.config_map == "meshagent-agent"


def test_every_error_has_its_path() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_injector_config(
            {
                "image": "",
                "capture": {"port": 70000, "portt": 1},
                "resources": {"requests": {"cpu": "2 cores", "gpu": "1"}},
                "config_map": "Not_A_Name",
                "env": [{"value": "x"}],
            }
        )
    text = "\n".join(caught.value.errors)
    for path in (
        "image:",
        "capture.port:",
        "capture.portt:",
        "resources.requests.cpu:",
        "resources.requests.gpu",
        "config_map:",
        "env:",
    ):
        assert path in text, text


def test_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_injector_config(["image"])


def test_load_reports_unreadable_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_injector_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("image: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_injector_config(bad)
    good = tmp_path / "good.yaml"
    good.write_text("image: meshagent:1\nnative_sidecar: true\n")
    assert load_injector_config(good) == InjectorConfig(image="meshagent:1", native_sidecar=True)


@pytest.mark.parametrize("text", ["100m", "0.5", "128Mi", "1Gi", "2", "1e3", ".5", "+1k"])
def test_quantities_kubernetes_accepts(text: str) -> None:
    assert check_quantity(text) == text


@pytest.mark.parametrize("text", ["", "2 cores", "1GB", "Mi", "1.2.3", "-", "100mm"])
def test_quantities_kubernetes_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        check_quantity(text)
