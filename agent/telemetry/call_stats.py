"""Call statistics over a window, from two readings of the agent's call metrics (pure).

The agent's counters are cumulative; what a person asks is "what happened lately". Two
readings of ``meshagent_calls_total``, ``meshagent_call_duration_seconds`` and
``meshagent_call_retries_total`` (as the agent exposes them, agent/telemetry/exposition.py)
some seconds apart give, per (service, method, protocol, direction): requests per second,
the success rate, latency quantiles interpolated in the buckets as Prometheus's
``histogram_quantile`` does, and retries. ``meshagent stat`` (agent/stat_cli.py) reads
them from a running agent's /metrics; the status page (agent/api/status_page.py) from the
agent's own readings of the last minute (agent/telemetry/call_window.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.telemetry.exposition import Metric

CALLS = "meshagent_calls_total"
BUCKET = "meshagent_call_duration_seconds_bucket"
RETRIES = "meshagent_call_retries_total"
_WANTED = (CALLS, BUCKET, RETRIES)
QUANTILES = (0.5, 0.95, 0.99)

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


def samples_of(metrics: Iterable[Metric]) -> Samples:
    """The same samples from metric families, without writing and reading them as text
    (the supervisor's window over its workers' call metrics)."""
    samples: Samples = {}
    for metric in metrics:
        for sample in metric.samples:
            if sample.name in _WANTED:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                samples[key] = samples.get(key, 0.0) + sample.value
    return samples


def parse_samples(text: str) -> Samples:
    """The samples of the families ``stat`` uses, by (name, sorted labels)."""
    samples: Samples = {}
    for line in text.splitlines():
        if not line.startswith(_WANTED):
            continue
        parsed = _sample(line)
        if parsed is not None:
            name, labels, value = parsed
            samples[name, labels] = value
    return samples


def _sample(line: str) -> tuple[str, Labels, float] | None:
    brace = line.find("{")
    if brace < 0:
        name, _, rest = line.partition(" ")
        labels: list[tuple[str, str]] = []
    else:
        name = line[:brace]
        labels = []
        i = brace + 1
        while i < len(line) and line[i] != "}":
            eq = line.find('="', i)
            if eq < 0:
                return None
            key = line[i:eq].strip(", ")
            value, i = _quoted(line, eq + 2)
            if i < 0:
                return None
            labels.append((key, value))
            if i < len(line) and line[i] == ",":
                i += 1
        rest = line[i + 1 :]
    try:
        number = float(rest.split()[0])
    except (IndexError, ValueError):
        return None
    return name, tuple(sorted(labels)), number


def _quoted(line: str, start: int) -> tuple[str, int]:
    """The label value from ``start`` (after its opening quote) and the index after its
    closing quote; -1 when it does not close."""
    out: list[str] = []
    i = start
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line):
            following = line[i + 1]
            out.append("\n" if following == "n" else following)
            i += 2
            continue
        if ch == '"':
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    return "", -1


@dataclass
class Row:
    service: str
    method: str
    protocol: str
    direction: str
    requests_per_s: float
    success_rate: float | None  # None: no call in the window
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    retries: int
    ejected_endpoints: int
    # The rest of the five-tuple, when rows are by five-tuple (``rows(..., by_caller=True)``).
    source: str = ""
    source_cluster: str = ""
    target_cluster: str = ""


Key = tuple[str, str, str, str, str, str, str]


def _key(labels: Mapping[str, str], by_caller: bool) -> Key:
    return (
        labels.get("to", ""),
        labels.get("method", ""),
        labels.get("protocol", ""),
        labels.get("direction", ""),
        labels.get("from", "") if by_caller else "",
        labels.get("from_cluster", "") if by_caller else "",
        labels.get("to_cluster", "") if by_caller else "",
    )


def rows(
    before: Samples,
    after: Samples,
    seconds: float,
    ejected: Mapping[str, int] | None = None,
    by_caller: bool = False,
) -> list[Row]:
    """What happened between two scrapes ``seconds`` apart, per (service, method,
    protocol, direction), and per caller too with ``by_caller`` (the whole five-tuple):
    counters are differences (a counter that went down, an agent restarted, counts from
    zero)."""
    calls: dict[Key, list[float]] = {}  # [all, ok]
    buckets: dict[Key, dict[float, float]] = {}
    retries: dict[Key, float] = {}
    for (name, label_items), value in after.items():
        labels = dict(label_items)
        key = _key(labels, by_caller)
        delta = value - before.get((name, label_items), 0.0)
        if delta < 0:
            delta = value
        if name == CALLS:
            tally = calls.setdefault(key, [0.0, 0.0])
            tally[0] += delta
            if labels.get("outcome") == "ok":
                tally[1] += delta
        elif name == BUCKET:
            bound = math.inf if labels.get("le") == "+Inf" else float(labels.get("le", "nan"))
            per_bound = buckets.setdefault(key, {})
            per_bound[bound] = per_bound.get(bound, 0.0) + delta
        elif name == RETRIES:
            retries[key] = retries.get(key, 0.0) + delta
    out = []
    for key in sorted(set(calls) | set(retries)):
        total, ok = calls.get(key, [0.0, 0.0])
        quantiles = [quantile(q, buckets.get(key, {})) for q in QUANTILES]
        out.append(
            Row(
                service=key[0],
                method=key[1],
                protocol=key[2],
                direction=key[3],
                requests_per_s=round(total / seconds, 3) if seconds > 0 else 0.0,
                success_rate=round(ok / total, 4) if total else None,
                p50_ms=_ms(quantiles[0]),
                p95_ms=_ms(quantiles[1]),
                p99_ms=_ms(quantiles[2]),
                retries=int(retries.get(key, 0.0)),
                ejected_endpoints=(ejected or {}).get(key[0], 0),
                source=key[4],
                source_cluster=key[5],
                target_cluster=key[6],
            )
        )
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def quantile(q: float, cumulative: Mapping[float, float]) -> float | None:
    """Prometheus's histogram_quantile over cumulative bucket counts by upper bound:
    linear within the bucket the rank falls in; in the +Inf bucket, the highest finite
    bound. None without observations."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return None
    rank = q * cumulative[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def ejected_by_service(clusters: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Endpoints ejected now, per service, from ``/v1/clusters``."""
    return {
        str(cluster.get("name")): sum(bool(e.get("ejected")) for e in cluster.get("endpoints", []))
        for cluster in clusters
    }
