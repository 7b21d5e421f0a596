"""The ZooKeeper plugin's configuration, and the registry it builds."""

from __future__ import annotations

import pytest

from agent.discovery.registry import Registry
from agent.errors import ConfigError
from plugins.zookeeper import PLUGIN
from plugins.zookeeper.config import ZooKeeperConfig


def test_config_defaults_and_errors() -> None:
    config = ZooKeeperConfig()
    assert (config.root, config.default_mode, config.mode_of("x")) == (
        "/dubbo",
        "interface",
        "interface",
    )
    assert ZooKeeperConfig(services={"x": "plain"}).mode_of("x") == "plain"
    with pytest.raises(ConfigError) as info:
        PLUGIN.validate_config(
            {"hosts": "a:b", "root": "dubbo", "extra": 1, "reconnect": {"base_s": 2, "max_s": 1}},
            "registries.zk",
        )
    text = str(info.value)
    for fragment in (
        "registries.zk.hosts",
        "registries.zk.root",
        "registries.zk.extra",
        "registries.zk.reconnect",
    ):
        assert fragment in text
    ZooKeeperConfig(hosts="10.0.0.1:2181,10.0.0.2:2181/chroot")


def test_plugin_builds_a_registry() -> None:
    registry = PLUGIN.build({"hosts": "127.0.0.1:1"}, "registries.zk")
    assert isinstance(registry, Registry)
    assert registry.name == "zookeeper"
    assert not registry.status().connected
