"""``meshagent stat``: a running agent's calls per service and method, like ``linkerd viz stat``.

It reads the agent's own ``/metrics`` twice, ``--window`` seconds apart, and shows what
happened in between: requests per second, success rate, latency quantiles (from the
``meshagent_call_duration_seconds`` buckets, interpolated as Prometheus's
``histogram_quantile`` does), retries, and the endpoints ``/v1/clusters`` says are ejected
now. No history is kept anywhere: the window is the two scrapes. ``--watch`` redraws every
window; ``-o json`` prints the rows for scripts.

The arithmetic is agent/telemetry/call_stats.py's (the status page uses it too).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from typing import Any

from agent.telemetry.call_stats import Row, ejected_by_service, parse_samples, rows
from agent.telemetry.call_stats import Samples as Samples

# A scrape is the agent's own metrics; past this it is not (or something is badly wrong).
MAX_SCRAPE_BYTES = 64 * 1024 * 1024


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


def _json(row: Row) -> dict[str, Any]:
    # Rows here are per service and method: the five-tuple's other parts are empty.
    fields = asdict(row)
    for name in ("source", "source_cluster", "target_cluster"):
        del fields[name]
    return fields


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
                print(json.dumps([_json(row) for row in found]), flush=True)
            else:
                if args.watch:
                    print("\x1b[2J\x1b[H", end="")
                print(table(found), flush=True)
            if not args.watch:
                return 0
    except KeyboardInterrupt:
        return 0
