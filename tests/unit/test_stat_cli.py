"""agent/stat_cli.py's table (the arithmetic is tests/unit/telemetry/test_call_stats.py's,
the live agent tests/integration/http/test_stat.py's)."""

from __future__ import annotations

from agent import stat_cli
from agent.telemetry import call_stats


def test_table_has_a_header_and_a_dash_for_no_calls() -> None:
    row = call_stats.Row("api", "GET", "http", "outbound", 0.0, None, None, None, None, 0, 0)
    text = stat_cli.table([row])
    assert text.splitlines()[0].split() == [
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
    ]
    assert text.splitlines()[1].split()[5:9] == ["-", "-", "-", "-"]
