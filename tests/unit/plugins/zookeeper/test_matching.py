"""Provider selection by version and group, as Dubbo's UrlUtils.isMatch."""

from __future__ import annotations

import pytest

from agent.discovery.types import ServiceKey, frozen_mapping
from plugins.zookeeper.dubbo_url import encode_component
from plugins.zookeeper.interface_level import (
    NotAProvider,
    key_matches,
    matching_instance,
    provider_instance,
)

IFACE = "org.apache.dubbo.demo.DemoService"


def key(**attrs: str) -> ServiceKey:
    return ServiceKey(IFACE, frozen_mapping(attrs))


@pytest.mark.parametrize(
    ("wanted", "provider", "expected"),
    [
        ({}, {}, True),
        ({}, {"version": "1.0.0"}, False),  # an unversioned consumer sees unversioned providers
        ({"version": "1.0.0"}, {"version": "1.0.0"}, True),
        ({"version": "1.0.0"}, {"version": "2.0.0"}, False),
        ({"version": "1.0.0"}, {}, False),
        ({"version": "*"}, {"version": "2.0.0"}, True),
        ({"version": "*"}, {}, True),
        ({"group": "g1"}, {"group": "g1"}, True),
        ({"group": "g1"}, {}, False),
        ({}, {"group": "g1"}, False),  # empty group matches only empty
        ({"group": ""}, {}, True),
        ({"group": "*"}, {"group": "g9"}, True),
        ({"group": "g1,g2"}, {"group": "g2"}, True),
        ({"group": "g1,g2"}, {"group": "g3"}, False),
        ({}, {"enabled": "false"}, False),
        ({"enabled": "*"}, {"enabled": "false"}, True),
        ({}, {"category": "configurators"}, False),
        ({}, {"interface": "other.Service"}, False),
    ],
)
def test_key_matches(wanted: dict[str, str], provider: dict[str, str], expected: bool) -> None:
    assert key_matches(key(**wanted), provider) is expected


def node(url: str) -> str:
    return encode_component(url)


def test_provider_instance() -> None:
    instance = provider_instance(
        node(f"dubbo://10.0.0.1:20880/{IFACE}?interface={IFACE}&weight=30&version=1"), 77
    )
    assert (instance.id, instance.weight, instance.revision) == ("10.0.0.1:20880", 30, 77)
    assert instance.metadata["protocol"] == "dubbo"
    assert instance.metadata["version"] == "1"


@pytest.mark.parametrize("weight", ["x", "", "1.5"])
def test_bad_weight_is_the_default(weight: str) -> None:
    assert provider_instance(node(f"dubbo://10.0.0.1:1/S?weight={weight}"), 1).weight == 100


@pytest.mark.parametrize("url", ["dubbo://10.0.0.1/S", "dubbo://:20880/S"])
def test_provider_without_address(url: str) -> None:
    with pytest.raises(NotAProvider):
        provider_instance(node(url), 1)


def test_matching_instance_filters() -> None:
    name = node(f"dubbo://10.0.0.1:20880/{IFACE}?interface={IFACE}&version=2")
    assert matching_instance(key(version="1"), name, 1) is None
    found = matching_instance(key(version="2"), name, 1)
    assert found is not None and found.id == "10.0.0.1:20880"
