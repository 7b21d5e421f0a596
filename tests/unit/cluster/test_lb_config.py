"""The consistent-hash policy's settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent.cluster.lb_config import ConsistentHashConfig


def test_defaults() -> None:
    config = ConsistentHashConfig()
    assert (config.hash_on, config.virtual_nodes, config.algorithm) == ("source_ip", 160, "ring")


@pytest.mark.parametrize(
    "raw",
    [
        {"virtual_nodes": 0},
        {"virtual_nodes": 1025},
        {"hash_on": ""},
        {"algorithm": "maglev"},
        {"x": 1},
    ],
)
def test_bad_settings_are_refused(raw: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ConsistentHashConfig.model_validate(raw)
