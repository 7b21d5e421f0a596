"""The Nacos plugin's configuration model and lazy import (plugins/nacos/config.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from plugins.nacos.config import NacosConfig


def test_defaults_and_modes() -> None:
    config = NacosConfig()
    assert config.server_addresses == ["127.0.0.1:8848"]
    assert (config.group, config.namespace, config.ephemeral) == ("DEFAULT_GROUP", "", True)
    assert NacosConfig(services={"x": "plain"}).mode_of("x") == "plain"
    assert NacosConfig().mode_of("y") == "interface"


@pytest.mark.parametrize(
    "bad",
    [
        {"server_addresses": ["nohost"]},
        {"server_addresses": ["h:65000"]},  # its gRPC port would be past 65535
        {"group": "a@@b"},
        {"namespace": " padded "},
        {"unknown": 1},
    ],
)
def test_bad_config_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        NacosConfig.model_validate(bad)


def test_plugin_import_does_not_load_the_sdk() -> None:
    code = (
        "import sys, plugins.nacos, plugins.nacos.config, plugins.nacos.naming;"
        "print(any(m == 'v2' or m.startswith('v2.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
