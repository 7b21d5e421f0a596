"""The Prometheus text exposition format (0.0.4), written by the agent itself.

The agent's metrics are all computed at scrape time from plain counters (metrics.py,
call_metrics.py, governance_metrics.py); what they need of a client library is the
metric families and the text writer. prometheus_client brought those plus an HTTP server,
WSGI, multiprocess and OpenMetrics support: 4.3 MB of the agent's resident memory at
start (issue 19, RSS). The output is byte for byte prometheus_client's
``generate_latest`` for the same families (tests/unit/telemetry/test_exposition.py
compares them), so scrapers and dashboards see no change.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


class Metric:
    """One metric family: its name (without ``_total`` for a counter), help, type, samples."""

    def __init__(self, name: str, documentation: str, typ: str) -> None:
        self.name = name
        self.documentation = documentation
        self.type = typ
        self.samples: list[Sample] = []


class _OneValueFamily(Metric):
    """A family whose samples are one value per label set (counters and gauges)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        typ: str,
        sample_name: str,
        value: float | None,
        labels: Sequence[str] | None,
    ) -> None:
        super().__init__(name, documentation, typ)
        self._sample_name = sample_name
        self._labelnames = tuple(labels or ())
        if value is not None:
            self.add_metric([], value)

    def add_metric(self, labels: Sequence[str], value: float) -> None:
        named = dict(zip(self._labelnames, labels, strict=True))
        self.samples.append(Sample(self._sample_name, named, value))


class CounterMetricFamily(_OneValueFamily):
    def __init__(
        self,
        name: str,
        documentation: str,
        value: float | None = None,
        labels: Sequence[str] | None = None,
    ) -> None:
        base = name.removesuffix("_total")
        super().__init__(base, documentation, "counter", f"{base}_total", value, labels)


class GaugeMetricFamily(_OneValueFamily):
    def __init__(
        self,
        name: str,
        documentation: str,
        value: float | None = None,
        labels: Sequence[str] | None = None,
    ) -> None:
        super().__init__(name, documentation, "gauge", name, value, labels)


class HistogramMetricFamily(Metric):
    def __init__(self, name: str, documentation: str, labels: Sequence[str] | None = None) -> None:
        super().__init__(name, documentation, "histogram")
        self._labelnames = tuple(labels or ())

    def add_metric(
        self, labels: Sequence[str], buckets: Sequence[tuple[str, float]], sum_value: float
    ) -> None:
        """``buckets``: (upper bound as text, cumulative count), ``+Inf`` last."""
        named = dict(zip(self._labelnames, labels, strict=True))
        for bound, count in buckets:
            self.samples.append(Sample(f"{self.name}_bucket", {**named, "le": bound}, count))
        self.samples.append(Sample(f"{self.name}_count", named, buckets[-1][1]))
        self.samples.append(Sample(f"{self.name}_sum", named, sum_value))


class Collector(Protocol):
    def collect(self) -> Iterable[Metric]: ...


class Registry:
    """The collectors a scrape asks, in the order they were registered."""

    def __init__(self) -> None:
        self._collectors: list[Collector] = []

    def register(self, collector: Collector) -> None:
        self._collectors.append(collector)

    def collect(self) -> Iterator[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


def render(registry: Registry) -> bytes:
    """The text format of every metric the registry's collectors give now."""
    out: list[str] = []
    for metric in registry.collect():
        name = f"{metric.name}_total" if metric.type == "counter" else metric.name
        help_text = metric.documentation.replace("\\", "\\\\").replace("\n", "\\n")
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} {metric.type}\n")
        for sample in metric.samples:
            if sample.labels:
                labels = ",".join(
                    f'{key}="{_escape(value)}"' for key, value in sorted(sample.labels.items())
                )
                out.append(f"{sample.name}{{{labels}}} {_number(sample.value)}\n")
            else:
                out.append(f"{sample.name} {_number(sample.value)}\n")
    return "".join(out).encode()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    # Go's float formatting, as Prometheus (and prometheus_client) write it.
    number = float(value)
    if number == math.inf:
        return "+Inf"
    if number == -math.inf:
        return "-Inf"
    if math.isnan(number):
        return "NaN"
    text = repr(number)
    dot = text.find(".")
    if number > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text
