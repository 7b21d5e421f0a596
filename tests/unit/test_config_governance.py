from __future__ import annotations

import pytest

from agent.config import parse_config
from agent.errors import ConfigError


def test_governance_rules_and_source_validate_with_paths() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "governance": {
                    "source": {"registry": "nacos", "group": "bad/group"},
                    "rules": {"rules": [{"rate_limit": {"per_s": 0}}]},
                }
            }
        )
    text = "\n".join(caught.value.errors)
    assert "governance.source.group" in text or "bad/group" in text
    assert "governance.rules.rules[0].rate_limit.per_s" in text


def test_source_must_name_a_registry_and_a_data_id() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"governance": {"source": {"registry": "nacos"}}})
    assert caught.value.errors == [
        "governance.source.registry: unknown registry 'nacos'; configured: local",
        "governance.source.data_id: required when app.name is not set",
    ]
    config = parse_config(
        {"app": {"name": "shop"}, "governance": {"zone": "a", "source": {"registry": "local"}}}
    )
    assert config.governance.source is not None and config.governance.zone == "a"
