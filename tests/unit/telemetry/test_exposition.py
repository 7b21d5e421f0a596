"""agent/telemetry/exposition.py writes what prometheus_client's generate_latest writes
for the same families, byte for byte (prometheus_client is the reference, a test
dependency only)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import prometheus_client.core as reference
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from agent.telemetry import exposition as ours

VALUES = [0, 1, 7, 2.5, 1e6, 123456789.0, 1e-9, -3, float("inf"), float("-inf"), float("nan")]
LABEL_VALUES = ["plain", "", 'quote"d', "back\\slash", "new\nline", "b\u00fccher", "a=b,c"]


def families(lib: Any) -> list[Any]:
    counter = lib.CounterMetricFamily("x_requests", "Requests\nby \\ path", labels=["a", "b"])
    gauge = lib.GaugeMetricFamily("x_open", "Open now", labels=["z", "a"])
    for i, value in enumerate(VALUES):
        label = LABEL_VALUES[i % len(LABEL_VALUES)]
        counter.add_metric([label, str(i)], abs(value) if value == value else value)
        gauge.add_metric([str(i), label], value)
    histogram = lib.HistogramMetricFamily("x_seconds", "Latency", labels=["route"])
    histogram.add_metric(["r1"], [("0.005", 1.0), ("0.1", 3.0), ("+Inf", 4.0)], 0.25)
    histogram.add_metric(["r2"], [("0.005", 0.0), ("0.1", 0.0), ("+Inf", 0.0)], 0.0)
    total = lib.CounterMetricFamily("x_loaded_total", "Already suffixed", value=3)
    bare = lib.GaugeMetricFamily("x_budget", "No labels", value=1024)
    return [counter, gauge, histogram, total, bare]


class Fixed:
    def __init__(self, metrics: list[Any]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        return iter(self.metrics)


def reference_text(metrics: list[Any]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed(metrics))  # type: ignore[arg-type]
    return generate_latest(registry)


def our_text(metrics: list[Any]) -> bytes:
    registry = ours.Registry()
    registry.register(Fixed(metrics))
    return ours.render(registry)


def test_the_text_is_prometheus_clients() -> None:
    assert our_text(families(ours)) == reference_text(families(reference))


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(
            st.text(max_size=12),
            st.floats(allow_nan=False) | st.integers(-(2**60), 2**60).map(float),
        ),
        max_size=8,
    )
)
def test_any_label_value_and_number_match(samples: list[tuple[str, float]]) -> None:
    def build(lib: Any) -> list[Any]:
        gauge = lib.GaugeMetricFamily("x_any", "Any", labels=["v", "i"])
        for i, (label, value) in enumerate(samples):
            gauge.add_metric([label, str(i)], value)
        return [gauge]

    assert our_text(build(ours)) == reference_text(build(reference))
