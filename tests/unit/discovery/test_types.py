from __future__ import annotations

import dataclasses

import pytest

from agent.discovery.types import Instance, frozen_mapping


def test_instances_are_immutable_values() -> None:
    instance = Instance("a", "10.0.0.1", 80, metadata=frozen_mapping({"zone": "z1"}))
    assert instance.address == "10.0.0.1:80"
    with pytest.raises(dataclasses.FrozenInstanceError):
        instance.port = 81  # type: ignore[misc]
    with pytest.raises(TypeError):
        instance.metadata["zone"] = "z2"  # type: ignore[index]
