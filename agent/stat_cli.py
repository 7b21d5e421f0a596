"""``meshagent stat``: a running agent's calls per service and method, like ``linkerd viz stat``.

It reads the agent's own ``/metrics`` twice, ``--window`` seconds apart, and shows what
happened in between: requests per second, success rate, latency quantiles (from the
``meshagent_call_duration_seconds`` buckets, interpolated as Prometheus's
``histogram_quantile`` does), retries, and the endpoints ``/v1/clusters`` says are ejected
now. No history is kept anywhere: the window is the two scrapes. ``--watch`` redraws every
window; ``-o json`` prints the rows for scripts.

The parsing is of the agent's own exposition (agent/telemetry/exposition.py) and only of
the families used here; a sample line it cannot read is skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

CALLS = "meshagent_calls_total"
BUCKET = "meshagent_call_duration_seconds_bucket"
RETRIES = "meshagent_call_retries_total"
_WANTED = (CALLS, BUCKET, RETRIES)
# A scrape is the agent's own metrics; past this it is not (or something is badly wrong).
MAX_SCRAPE_BYTES = 64 * 1024 * 1024
QUANTILES = (0.5, 0.95, 0.99)

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


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


def _key(labels: Mapping[str, str]) -> tuple[str, str, str, str]:
    return (
        labels.get("to", ""),
        labels.get("method", ""),
        labels.get("protocol", ""),
        labels.get("direction", ""),
    )


def rows(
    before: Samples, after: Samples, seconds: float, ejected: Mapping[str, int] | None = None
) -> list[Row]:
    """What happened between two scrapes ``seconds`` apart, per (service, method,
    protocol, direction): counters are differences (a counter that went down, an agent
    restarted, counts from zero)."""
    calls: dict[tuple[str, str, str, str], list[float]] = {}  # [all, ok]
    buckets: dict[tuple[str, str, str, str], dict[float, float]] = {}
    retries: dict[tuple[str, str, str, str], float] = {}
    for (name, label_items), value in after.items():
        labels = dict(label_items)
        key = _key(labels)
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


def table(found: list[Row]) -> str:
    headers = (
        "SERVICE",
        "METHOD",
        "PROTO",
        "DIR",
        "RPS",
        "SUCCESS",
        "P50",
        "P95",
        "P99",
        "RETRIES",
        "EJECTED",
    )
    lines: list[tuple[str, ...]] = [headers]
    for row in found:
        lines.append(
            (
                row.service,
                row.method,
                row.protocol,
                row.direction,
                f"{row.requests_per_s:.1f}",
                "-" if row.success_rate is None else f"{row.success_rate * 100:.2f}%",
                *("-" if v is None else f"{v:.1f}ms" for v in (row.p50_ms, row.p95_ms, row.p99_ms)),
                str(row.retries),
                str(row.ejected_endpoints),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _get(client: Any, path: str) -> bytes:
    with client.stream("GET", path) as response:
        response.raise_for_status()
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > MAX_SCRAPE_BYTES:
                raise ValueError(f"{path} is over {MAX_SCRAPE_BYTES} bytes")
        return bytes(body)


def scrape(client: Any) -> Samples:
    """The agent's call samples now (``client``: an httpx.Client on its API)."""
    return parse_samples(_get(client, "/metrics").decode("utf-8", "replace"))


def ejected_now(client: Any) -> dict[str, int]:
    return ejected_by_service(json.loads(_get(client, "/v1/clusters")))


def sample_window(api: str, window_s: float, timeout_s: float = 5.0) -> list[Row]:
    import httpx

    with httpx.Client(base_url=api, timeout=timeout_s) as client:
        before = scrape(client)
        started = time.monotonic()
        time.sleep(window_s)  # the window itself: what happens in it is the answer
        after = scrape(client)
        elapsed = time.monotonic() - started
        return rows(before, after, elapsed, ejected_now(client))


def add_parser(commands: Any) -> None:
    stat = commands.add_parser(
        "stat", help="calls per service and method of a running agent (like linkerd viz stat)"
    )
    stat.add_argument("--api", default="http://127.0.0.1:15000", help="the agent's API")
    stat.add_argument("--window", type=float, default=10.0, help="seconds between the scrapes")
    stat.add_argument("--watch", action="store_true", help="redraw every window until ^C")
    stat.add_argument("-o", "--output", choices=("table", "json"), default="table")


def run(args: argparse.Namespace) -> int:
    if args.window <= 0:
        print("meshagent stat: --window must be above 0", file=sys.stderr)
        return 2
    try:
        while True:
            try:
                found = sample_window(args.api, args.window)
            except Exception as exc:  # httpx's errors, a bad answer: said in one line
                print(f"meshagent stat: {args.api}: {exc}", file=sys.stderr)
                return 1
            if args.output == "json":
                print(json.dumps([asdict(row) for row in found]), flush=True)
            else:
                if args.watch:
                    print("\x1b[2J\x1b[H", end="")
                print(table(found), flush=True)
            if not args.watch:
                return 0
    except KeyboardInterrupt:
        return 0
