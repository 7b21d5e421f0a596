"""The etcd plugin's configuration, and that it imports no etcd client until built."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent.errors import ConfigError
from plugins.etcd import PLUGIN
from plugins.etcd.config import EtcdConfig


def test_config_defaults_and_plugin() -> None:
    config = EtcdConfig()
    assert config.endpoints == ["127.0.0.1:2379"]
    assert config.keepalive_every_s == pytest.approx(10 / 3)
    assert PLUGIN.name == "etcd" and PLUGIN.config_model is EtcdConfig


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"endpoints": []}, "endpoints"),
        ({"endpoints": ["localhost"]}, "bad host:port"),
        ({"endpoints": ["h:0"]}, "bad host:port"),
        ({"prefix": "meshagent"}, "prefix"),
        ({"prefix": "/a/"}, "prefix"),
        ({"lease_ttl_s": 1}, "lease_ttl_s"),
        ({"lease_ttl_s": 5, "keepalive_interval_s": 5}, "keepalive_interval_s"),
        ({"grpc_keepalive_s": 1}, "grpc_keepalive_s"),
        ({"reconnect": {"base_s": 2, "max_s": 1}}, "max_s"),
        ({"hosts": "x"}, "hosts"),
    ],
)
def test_config_errors_name_the_field(raw: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        PLUGIN.validate_config(raw, "registries.e")
    assert fragment in str(caught.value)
    assert str(caught.value).startswith("registries.e")


def test_the_plugin_imports_no_etcd_client_until_built() -> None:
    code = (
        "import sys, plugins.etcd\n"
        "assert 'aetcd' not in sys.modules and 'grpc' not in sys.modules, 'eager import'\n"
        "registry = plugins.etcd.PLUGIN.build({}, 'r')\n"
        "assert 'aetcd' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
