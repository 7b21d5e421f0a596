"""grpc channel targets for provider addresses."""

from __future__ import annotations

from plugins.grpc.channels import target


def test_targets() -> None:
    assert target("10.0.0.1", 50051) == "10.0.0.1:50051"
    assert target("::1", 50051) == "[::1]:50051"
