"""Plain records, layout paths, configuration and the plugin entry."""

from __future__ import annotations

import pytest

from agent.discovery.records import MalformedRecord, format_record, parse_record, to_instance
from agent.discovery.registry import Registry
from agent.discovery.types import Registration, frozen_mapping
from agent.errors import ConfigError
from plugins.zookeeper import PLUGIN
from plugins.zookeeper.config import ZooKeeperConfig
from plugins.zookeeper.interface_level import provider_url
from plugins.zookeeper.layout import Layout


def test_plain_record_round_trip() -> None:
    registration = Registration(
        "orders", "o-1", "10.0.0.7", 8080, 20, frozen_mapping({"zone": "a"}), "http"
    )
    record = parse_record(format_record(registration))
    instance = to_instance("o-1", record, 99)
    assert (instance.id, instance.address, instance.weight, instance.revision) == (
        "o-1",
        "10.0.0.7:8080",
        20,
        99,
    )
    assert dict(instance.metadata) == {"zone": "a", "protocol": "http"}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"[1]",
        b'{"port":1}',
        b'{"host":"h","port":0}',
        b'{"host":"h","port":true}',
        b'{"host":"h","port":1,"weight":-1}',
        b'{"host":"h","port":1,"metadata":[]}',
    ],
)
def test_malformed_records(data: bytes) -> None:
    with pytest.raises(MalformedRecord):
        parse_record(data)


def test_layout_paths() -> None:
    layout = Layout()
    assert layout.providers("a.B") == "/dubbo/a.B/providers"
    assert layout.consumers("a.B") == "/dubbo/a.B/consumers"
    assert layout.mapping("a.B") == "/dubbo/mapping/a.B"
    assert layout.metadata("app", "rev1") == "/dubbo/metadata/app/rev1"
    assert layout.app_instances("app") == "/services/app"
    assert layout.plain_instance("svc/x", "i 1") == "/meshagent/services/svc%2Fx/i+1"


def test_provider_url_for_registration() -> None:
    registration = Registration(
        "a.B",
        "i",
        "10.0.0.1",
        20880,
        30,
        frozen_mapping({"version": "1", "protocol": "x"}),
        "dubbo",
    )
    url = provider_url(registration, timestamp_ms=5)
    assert url.to_string() == (
        "dubbo://10.0.0.1:20880/a.B?application=meshagent&dynamic=true&interface=a.B"
        "&side=provider&timestamp=5&version=1&weight=30"
    )


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


def test_consumer_url() -> None:
    from agent.discovery.types import ServiceKey
    from plugins.zookeeper.interface_level import consumer_url

    key = ServiceKey("a.B", frozen_mapping({"version": "1", "group": "", "provided_by": "x"}))
    assert consumer_url(key, "10.0.0.5", "app", timestamp_ms=7).to_string() == (
        "consumer://10.0.0.5/a.B?application=app&category=consumers&check=false"
        "&interface=a.B&side=consumer&timestamp=7&version=1"
    )
