"""Dubbo interface-level URLs the agent writes: providers (registrations) and consumers."""

from __future__ import annotations

from agent.discovery.types import Registration, frozen_mapping
from plugins.zookeeper.interface_level import provider_url


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


def test_consumer_url() -> None:
    from agent.discovery.types import ServiceKey
    from plugins.zookeeper.interface_level import consumer_url

    key = ServiceKey("a.B", frozen_mapping({"version": "1", "group": "", "provided_by": "x"}))
    assert consumer_url(key, "10.0.0.5", "app", timestamp_ms=7).to_string() == (
        "consumer://10.0.0.5/a.B?application=app&category=consumers&check=false"
        "&interface=a.B&side=consumer&timestamp=7&version=1"
    )
