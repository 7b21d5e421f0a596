"""The plugin's config models: what a listener and a service may say."""

from __future__ import annotations

import pytest

from agent.errors import ConfigError
from plugins.thrift import PLUGIN, ThriftConfig, ThriftServiceOptions
from plugins.thrift.health import PLUGIN as HEALTH


def test_defaults() -> None:
    config = PLUGIN.validate_config({}, "listeners[0].config")
    assert config == ThriftConfig()
    assert (config.protocol, config.transport, config.max_message_bytes) == (
        "auto",
        "auto",
        16_384_000,
    )
    assert PLUGIN.validate_service_options({}, "services[0].options") == ThriftServiceOptions()


def test_errors_carry_their_path() -> None:
    with pytest.raises(ConfigError) as info:
        PLUGIN.validate_config({"protocol": "json", "timeout_ms": 0}, "listeners[2].config")
    assert [e.split(":")[0] for e in info.value.errors] == [
        "listeners[2].config.protocol",
        "listeners[2].config.timeout_ms",
    ]
    with pytest.raises(ConfigError) as info:
        PLUGIN.validate_service_options({"idl": "a.thrift", "idl_file": "b"}, "services[0].options")
    assert info.value.errors[0].startswith("services[0].options.idl_file")
    with pytest.raises(ConfigError):
        HEALTH.validate_config({"method": ""}, "services[0].health.config")
