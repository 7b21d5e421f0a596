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


def test_service_selectors_for_registrations_without_them() -> None:
    # Application-level: the instance says protocol=tri but not the interface's version.
    metadata = {"protocol": "tri", "application": "app"}
    attributes = {"version": "1.0.0", "group": "blue", "protocol": "tri"}
    assert triple_headers(metadata, [], attributes) == [
        ("tri-service-version", "1.0.0"),
        ("tri-service-group", "blue"),
    ]
    # The registration's own value wins over the configured selector.
    assert triple_headers({"protocol": "tri", "version": "2"}, [], attributes)[0] == (
        "tri-service-version",
        "2",
    )


def test_wildcard_selectors_are_not_sent() -> None:
    attributes = {"version": "*", "group": "a,b"}
    assert triple_headers({"protocol": "tri"}, [], attributes) == []
