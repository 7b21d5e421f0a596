"""agent/telemetry/call_stats.py with exposition text alone (the live agent is
tests/integration/http/test_stat.py's)."""

from __future__ import annotations

import math

import pytest

from agent.telemetry import call_stats as stat_cli

LABELS = 'direction="outbound",from="app",method="GET",protocol="http",to="api"'


def _scrape(ok: int, failed: int, retries: int, buckets: dict[str, int]) -> str:
    lines = [
        "# TYPE meshagent_calls_total counter",
        f'meshagent_calls_total{{{LABELS},outcome="ok"}} {ok}.0',
        f'meshagent_calls_total{{{LABELS},outcome="app_error"}} {failed}.0',
        f"meshagent_call_retries_total{{{LABELS}}} {retries}.0",
        'meshagent_calls_total{to="we\\"ird\\\\name",method="x\\ny",outcome="ok"} 1.0',
        "meshagent_something_else 5",
        "meshagent_calls_total{broken",
    ]
    for le, count in buckets.items():
        lines.append(
            f'meshagent_call_duration_seconds_bucket{{{LABELS},le="{le}",outcome="ok"}} {count}.0'
        )
    return "\n".join(lines)


def test_parse_reads_escaped_labels_and_skips_the_rest() -> None:
    samples = stat_cli.parse_samples(_scrape(1, 0, 0, {}))
    weird = [labels for (name, labels) in samples if ("to", 'we"ird\\name') in labels]
    assert weird and ("method", "x\ny") in weird[0]
    assert all(name.startswith("meshagent_call") for name, _ in samples)


def test_rows_are_the_differences_over_the_window() -> None:
    before = stat_cli.parse_samples(_scrape(10, 2, 1, {"0.01": 10, "0.1": 10, "+Inf": 10}))
    after = stat_cli.parse_samples(_scrape(40, 12, 4, {"0.01": 20, "0.1": 40, "+Inf": 40}))
    (row,) = [r for r in stat_cli.rows(before, after, 10.0, {"api": 1}) if r.service == "api"]
    assert row.requests_per_s == 4.0  # 40 calls in 10 s
    assert row.success_rate == 0.75
    assert row.retries == 3 and row.ejected_endpoints == 1
    # 30 new observations: 10 up to 10 ms, 20 in (10 ms, 100 ms].
    assert row.p50_ms == pytest.approx(32.5)  # rank 15: 10 + 90 * 5/20
    assert row.p99_ms == pytest.approx(98.65)


def test_a_counter_that_went_down_counts_from_zero() -> None:
    before = stat_cli.parse_samples(_scrape(100, 0, 0, {}))
    after = stat_cli.parse_samples(_scrape(5, 0, 0, {}))
    (row,) = [r for r in stat_cli.rows(before, after, 1.0) if r.service == "api"]
    assert row.requests_per_s == 5.0


def test_quantile_is_prometheus_histogram_quantile() -> None:
    assert stat_cli.quantile(0.5, {}) is None
    assert stat_cli.quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None
    assert stat_cli.quantile(0.5, {0.1: 4.0, math.inf: 4.0}) == pytest.approx(0.05)
    # In the +Inf bucket: the highest finite bound.
    assert stat_cli.quantile(0.99, {0.1: 1.0, 1.0: 1.0, math.inf: 10.0}) == 1.0


def test_ejected_by_service() -> None:
    clusters = [{"name": "api", "endpoints": [{"ejected": True}, {"ejected": False}]}]
    assert stat_cli.ejected_by_service(clusters) == {"api": 1}


def test_by_caller_rows_are_per_five_tuple() -> None:
    text = "\n".join(
        f'meshagent_calls_total{{from="{caller}",to="api",to_cluster="east",method="GET",'
        f'outcome="ok"}} {count}'
        for caller, count in (("web", 6), ("batch", 4))
    )
    after = stat_cli.parse_samples(text)
    by_service = stat_cli.rows({}, after, 1.0)
    by_caller = stat_cli.rows({}, after, 1.0, by_caller=True)
    assert [(r.service, r.requests_per_s) for r in by_service] == [("api", 10.0)]
    assert sorted((r.source, r.target_cluster, r.requests_per_s) for r in by_caller) == [
        ("batch", "east", 4.0),
        ("web", "east", 6.0),
    ]


def test_samples_of_families_equal_the_parsed_text() -> None:
    from agent.telemetry.call_stats import parse_samples, samples_of
    from agent.telemetry.exposition import (
        CounterMetricFamily,
        HistogramMetricFamily,
        Registry,
        render,
    )

    calls = CounterMetricFamily("meshagent_calls", "c", labels=["service", "outcome"])
    calls.add_metric(["a", "ok"], 3)
    calls.add_metric(["a", "error"], 1)
    durations = HistogramMetricFamily("meshagent_call_duration_seconds", "d", labels=["service"])
    durations.add_metric(["a"], [("0.1", 2), ("+Inf", 4)], 0.3)
    other = CounterMetricFamily("meshagent_other", "o", value=9)
    registry = Registry()
    for family in (calls, durations, other):
        registry.register(type("C", (), {"collect": lambda self, f=family: [f]})())
    assert samples_of([calls, durations, other]) == parse_samples(render(registry).decode())
    # Two processes' families: summed.
    assert (
        samples_of([calls, calls])[("meshagent_calls_total", (("outcome", "ok"), ("service", "a")))]
        == 6
    )
