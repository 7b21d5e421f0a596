"""The HTTP plugin's settings: the listener's with its routes, and a service's."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from plugins.http import PLUGIN
from plugins.http.config import HttpConfig, HttpRoute, HttpServiceOptions


def test_defaults() -> None:
    config = HttpConfig()
    assert (config.routes, config.max_header_bytes, config.http2) == ([], 16 * 1024, True)
    assert (config.x_forwarded, config.forwarded) == (False, False)
    assert HttpServiceOptions() == HttpServiceOptions(timeout_ms=15_000, retries=0)


def test_a_route_matches_host_case_insensitively_and_path_by_prefix() -> None:
    route = HttpRoute(host="API.example", path_prefix="/orders", service="orders")
    assert route.matches("api.example", "/orders/7")
    assert not route.matches("api.example", "/users")
    assert not route.matches("other", "/orders")
    assert HttpRoute(service="any").matches("whatever", "/x")


def test_routes_name_the_services_they_reference() -> None:
    config = HttpConfig(routes=[HttpRoute(service="a"), HttpRoute(path_prefix="/b", service="b")])
    assert config.service_references() == [("routes[0].service", "a"), ("routes[1].service", "b")]


@pytest.mark.parametrize(
    ("model", "raw"),
    [
        (HttpRoute, {"path_prefix": "orders", "service": "o"}),
        (HttpRoute, {"service": ""}),
        (HttpConfig, {"max_header_bytes": 100}),
        (HttpConfig, {"h2_max_concurrent_streams": 0}),
        (HttpServiceOptions, {"retries": 6}),
        (HttpServiceOptions, {"timeout_ms": 0}),
    ],
)
def test_bad_settings_are_refused(model: type[HttpConfig], raw: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(raw)


def test_the_plugin_uses_these_models() -> None:
    assert PLUGIN.config_model is HttpConfig
    assert PLUGIN.service_options_model is HttpServiceOptions
