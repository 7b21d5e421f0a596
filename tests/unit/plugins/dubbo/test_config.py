"""The Dubbo listener's settings: Dubbo's own defaults, and bounds."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from plugins.dubbo import PLUGIN
from plugins.dubbo.config import DubboConfig
from plugins.dubbo.frame import DEFAULT_MAX_BODY


def test_defaults_are_dubbos() -> None:
    config = DubboConfig()
    assert config.max_body_bytes == DEFAULT_MAX_BODY == 8 * 1024 * 1024  # Dubbo's payload
    assert config.timeout_ms == 1000  # Dubbo's consumer timeout
    assert (config.connections_per_endpoint, config.connection_pick) == (1, "least_pending")


@pytest.mark.parametrize(
    "raw",
    [
        {"max_body_bytes": 1023},
        {"timeout_ms": 0},
        {"heartbeat_s": 0},
        {"connections_per_endpoint": 65},
        {"connection_pick": "random"},
        {"unknown": 1},
    ],
)
def test_bad_settings_are_refused(raw: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        DubboConfig.model_validate(raw)


def test_the_plugin_validates_with_these_models_and_builds_lazily() -> None:
    assert PLUGIN.config_model is DubboConfig
    support = PLUGIN.build({"timeout_ms": 250}, "listeners[0].config")
    assert support.name == "dubbo"
    assert support.config == DubboConfig(timeout_ms=250)  # type: ignore[attr-defined]
