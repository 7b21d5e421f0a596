from __future__ import annotations

from agent.calls import Route
from agent.governance.index import CACHE_MAX, RuleIndex, shape_of

Key = tuple[str, str, str, str, str]


def index(*keys: Key) -> RuleIndex[Key]:
    return RuleIndex(list(keys), lambda key: key)


def route(to: str = "svc", method: str = "m", to_cluster: str = "", source: str = "app") -> Route:
    return Route(source, "", to, to_cluster, method)


ANY: Key = ("*", "*", "*", "*", "*")


def test_more_exact_fields_win_and_the_wildcard_catches_the_rest() -> None:
    to_only: Key = ("svc", "*", "*", "*", "*")
    to_method: Key = ("svc", "m", "*", "*", "*")
    rules = index(ANY, to_only, to_method)
    assert rules.lookup(route()) == to_method
    assert rules.lookup(route(method="other")) == to_only
    assert rules.lookup(route(to="else")) == ANY


def test_equal_counts_prefer_the_service_over_the_method() -> None:
    to_only: Key = ("svc", "*", "*", "*", "*")
    method_only: Key = ("*", "m", "*", "*", "*")
    rules = index(method_only, to_only)
    assert rules.lookup(route()) == to_only
    assert rules.lookup(route(to="else")) == method_only
    # and the method over the caller
    source_only: Key = ("*", "*", "*", "app", "*")
    assert index(source_only, method_only).lookup(route(to="else")) == method_only


def test_no_rule_is_none() -> None:
    assert index(("svc", "*", "*", "*", "*")).lookup(route(to="else")) is None


def test_lookup_probes_shapes_not_rules() -> None:
    keys: list[Key] = [(f"svc{i}", f"m{i % 7}", "*", "*", "*") for i in range(10_000)]
    rules = index(*keys)
    assert rules.shapes == 1  # 10,000 rules, one table probe per lookup
    assert rules.lookup(route(to="svc9999", method="m3")) == keys[9999]
    assert shape_of(keys[0]) == 16 + 8


def test_the_route_cache_is_bounded() -> None:
    rules = index(ANY)
    for i in range(CACHE_MAX + 10):
        assert rules.lookup(route(method=f"m{i}")) == ANY
    assert len(rules._cache) <= CACHE_MAX
