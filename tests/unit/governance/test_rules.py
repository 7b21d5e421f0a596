from __future__ import annotations

import pytest

from agent.governance.rules import Match, RuleSet
from agent.runtime.dynamic import parse_document


def errors_of(document: str) -> list[str]:
    with pytest.raises(ValueError) as caught:
        parse_document(document, RuleSet)
    return str(caught.value).splitlines()


def test_a_full_rule_validates_and_from_is_an_alias() -> None:
    rules = parse_document(
        """
        circuit_breakers: {svc: {max_in_flight: 10}}
        rules:
          - match: {from: app, to: svc, method: m}
            timeout_ms: 100
            rate_limit: {per_s: 5}
            retry: {attempts: 1, retry_on: [timeout], idempotent: true}
            fault: {delay: {percent: 50, ms: 10}, abort: {percent: 1, status: 503}}
            degrade: {when: overloaded, value: {"ok": false}}
            traffic:
              subsets: [{name: a, labels: {version: "1"}, weight: 100}]
              matches: [{headers: {x-canary: {regex: "1|yes"}}, subset: a}]
        """,
        RuleSet,
    )
    rule = rules.rules[0]
    assert rule.match == Match(source="app", target="svc", method="m")
    assert rule.match.source_cluster == "*"
    assert rule.rate_limit is not None and rule.rate_limit.capacity == 5
    assert rules.circuit_breakers["svc"].max_in_flight == 10


def test_every_bad_part_is_reported_with_its_path() -> None:
    errors = errors_of(
        """
        rules:
          - match: {to: svc, colour: red}
            rate_limit: {per_s: -1}
          - traffic:
              subsets:
                - {name: a, labels: {v: "1"}, weight: 60}
                - {name: b, labels: {v: "2"}, weight: 30}
          - traffic:
              matches: [{headers: {x: {regex: "(unclosed"}}, subset: a}]
          - circuit_breakers: {}
        circuit_breakers: {svc: {max_pending: -3}}
        """
    )
    text = "\n".join(errors)
    assert any(e.startswith("rules.0.match.colour:") for e in errors), text
    assert any(e.startswith("rules.0.rate_limit.per_s:") for e in errors), text
    assert any(e.startswith("rules.1.traffic:") and "add up to 90" in e for e in errors), text
    assert any(
        e.startswith("rules.2.traffic.matches.0.headers.x.regex:") and "compile" in e
        for e in errors
    ), text
    assert any(e.startswith("rules.3.circuit_breakers:") for e in errors), text
    assert any(e.startswith("circuit_breakers.svc.max_pending:") for e in errors), text


def test_a_match_naming_no_subset_and_duplicate_matches_are_refused() -> None:
    errors = errors_of(
        """
        rules:
          - match: {to: svc}
            traffic:
              subsets: [{name: a, labels: {v: "1"}, weight: 100}]
              matches: [{headers: {x: {exact: "1"}}, subset: b}]
        """
    )
    assert "rules.0.traffic: matches.0.subset: no subset named 'b'" in errors
    # Duplicates are checked once every rule is valid on its own.
    errors = errors_of("rules: [{match: {to: svc}}, {match: {to: svc, method: '*'}}]")
    assert errors == ["(document): rules.1.match: the same match as rules.0"]


def test_header_match_needs_exactly_one_kind_and_backoff_in_order() -> None:
    errors = errors_of(
        """
        rules:
          - traffic:
              subsets: [{name: a, labels: {}, weight: 100}]
              matches: [{headers: {x: {exact: "1", prefix: "2"}}, subset: a}]
            retry: {backoff_base_ms: 100, backoff_max_ms: 10}
        """
    )
    text = "\n".join(errors)
    assert "exactly one of exact, prefix, regex, present" in text
    assert "rules.0.retry:" in text and "backoff_max_ms" in text
