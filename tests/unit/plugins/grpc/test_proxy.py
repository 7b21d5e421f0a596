"""What the gRPC relay forwards of a call's metadata."""

from __future__ import annotations

from plugins.grpc.channels import target
from plugins.grpc.proxy import forwardable


def test_per_hop_headers_are_not_forwarded() -> None:
    metadata = [
        (":authority", "agent:9000"),
        ("user-agent", "grpc-python/1.85"),
        ("grpc-timeout", "1S"),
        ("grpc-accept-encoding", "gzip"),
        ("content-type", "application/grpc"),
        ("x-request-id", "r1"),
        ("trace-bin", b"\x00\x01"),
        ("x-request-id", "r2"),
    ]
    assert forwardable(metadata) == [
        ("x-request-id", "r1"),
        ("trace-bin", b"\x00\x01"),
        ("x-request-id", "r2"),
    ]
    assert forwardable(None) == []


def test_targets() -> None:
    assert target("10.0.0.1", 50051) == "10.0.0.1:50051"
    assert target("::1", 50051) == "[::1]:50051"
