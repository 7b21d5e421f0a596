"""The etcd key layout: keys of services and instances, and what lies outside it."""

from __future__ import annotations

import pytest

from plugins.etcd.layout import KeyLayout, OutsideLayout, range_end

LAYOUT = KeyLayout("/meshagent/services")


def test_key_layout_round_trip_and_encoding() -> None:
    key = LAYOUT.key("org.example/Orders v1", "10.0.0.1:80")
    assert key == b"/meshagent/services/org.example%2FOrders%20v1/10.0.0.1%3A80"
    assert LAYOUT.parse(key) == ("org.example/Orders v1", "10.0.0.1:80")
    assert LAYOUT.service_prefix("orders") == b"/meshagent/services/orders/"
    # A service's range never takes in another whose name starts the same.
    assert not LAYOUT.key("orders-v2", "x").startswith(LAYOUT.service_prefix("orders"))


@pytest.mark.parametrize(
    "key",
    [
        b"/elsewhere/orders/a",
        b"/meshagent/services/orders",
        b"/meshagent/services/orders/",
        b"/meshagent/services//a",
        b"/meshagent/services/orders/a/b",
        b"/meshagent/services/orders/%zz",
        b"/meshagent/services/orders/%ff",
        b"/meshagent/services/orders/a b",  # not the canonical spelling of "a b"
        b"/meshagent/services/orders/\xff",
    ],
)
def test_keys_outside_the_layout(key: bytes) -> None:
    with pytest.raises(OutsideLayout):
        LAYOUT.parse(key)


def test_range_end() -> None:
    assert range_end(b"/a/") == b"/a0"
    assert range_end(b"a\xff") == b"b"
    assert range_end(b"\xff\xff") == b"\0"
