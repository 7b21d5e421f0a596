"""A Dubbo service's options (``services[].options``): service level, then per method."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent.config import ServiceConfig
from plugins.dubbo import PLUGIN
from plugins.dubbo.options import CLUSTERS, DubboServiceOptions


def test_service_level_and_methods() -> None:
    options = DubboServiceOptions.model_validate(
        {"cluster": "failfast", "retries": 0, "methods": {"pay": {"timeout_ms": 3000}}}
    )
    assert options.cluster == "failfast"
    assert options.methods["pay"].timeout_ms == 3000
    assert options.methods["pay"].cluster is None  # the service's applies
    assert CLUSTERS == ("failover", "failfast", "failsafe", "forking")


@pytest.mark.parametrize(
    "raw",
    [
        {"cluster": "broadcast"},
        {"retries": 11},
        {"forks": 0},
        {"methods": {"pay": {"timeout": 5}}},
    ],
)
def test_bad_options_are_refused(raw: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        DubboServiceOptions.model_validate(raw)


def test_options_are_kept_on_the_service_once_validated() -> None:
    service = ServiceConfig(name="s", protocol="dubbo", options={"retries": 4})
    validated = PLUGIN.validate_service_options(service.options, "services[0].options")
    service._protocol_options = validated  # what validate_plugins does
    assert service.protocol_options(DubboServiceOptions) is validated
    # A service built in code: validated on first use, then kept.
    fresh = ServiceConfig(name="t", protocol="dubbo", options={"retries": 1})
    first = fresh.protocol_options(DubboServiceOptions)
    assert first.retries == 1 and fresh.protocol_options(DubboServiceOptions) is first
