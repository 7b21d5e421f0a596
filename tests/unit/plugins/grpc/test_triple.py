from __future__ import annotations

from plugins.grpc.triple import is_triple, triple_headers


def test_selector_headers_from_a_triple_registration() -> None:
    metadata = {"protocol": "tri", "version": "1.0.0", "group": "blue", "side": "provider"}
    assert is_triple(metadata)
    assert triple_headers(metadata, []) == [
        ("tri-service-version", "1.0.0"),
        ("tri-service-group", "blue"),
    ]


def test_the_application_header_wins() -> None:
    metadata = {"protocol": "tri", "version": "1.0.0", "group": "blue"}
    sent = [("tri-service-group", "green"), ("x-other", "1")]
    assert triple_headers(metadata, sent) == [("tri-service-version", "1.0.0")]


def test_no_headers_without_version_or_group_or_for_plain_grpc() -> None:
    assert triple_headers({"protocol": "tri", "version": ""}, []) == []
    # A gRPC server registered with a version gets nothing it would not understand.
    assert triple_headers({"protocol": "grpc", "version": "1.0.0"}, []) == []
    assert not is_triple({})
