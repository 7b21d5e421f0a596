"""Write the chart's Grafana dashboards (helm/meshagent/dashboards/*.json) from the panels
below: one place for their queries, which tests/integration/helm/test_monitoring.py runs
against a live Prometheus scraping an agent. Run it after editing a panel:

    .venv/bin/python scripts/dashboards.py

(tests/integration/helm/test_monitoring.py fails while the JSON files are stale.)
"""

# ruff: noqa: E501 (the panels' queries stay whole on their lines, as read in Grafana)
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "helm" / "meshagent" / "dashboards"
RATE = "$__rate_interval"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# (title, unit, [(expr, legend)]) per panel, two panels a row.
Panel = tuple[str, str, list[tuple[str, str]]]


def _ok_share(by: str, where: str = "") -> str:
    inner = f"{{{where}}}" if where else ""
    ok = f'{{{where + "," if where else ""}outcome="ok"}}'
    return (
        f"sum by ({by}) (rate(meshagent_calls_total{ok}[{RATE}]))"
        f" / sum by ({by}) (rate(meshagent_calls_total{inner}[{RATE}]))"
    )


def _quantile(q: float, by: str, where: str = "") -> str:
    inner = f"{{{where}}}" if where else ""
    return (
        f"histogram_quantile({q}, sum by ({by}, le) "
        f"(rate(meshagent_call_duration_seconds_bucket{inner}[{RATE}])))"
    )


SERVICE = 'to="$service"'
DASHBOARDS: dict[str, tuple[str, list[str], list[Panel]]] = {
    "mesh-overview": (
        "meshagent · mesh overview",
        [],
        [
            (
                "Requests by service",
                "reqps",
                [(f"sum by (to) (rate(meshagent_calls_total[{RATE}]))", "{{to}}")],
            ),
            ("Success rate by service", "percentunit", [(_ok_share("to"), "{{to}}")]),
            ("p99 latency by service", "s", [(_quantile(0.99, "to"), "{{to}}")]),
            (
                "Endpoints available by cluster",
                "percentunit",
                [
                    (
                        "sum by (cluster) (meshagent_cluster_endpoints_available)"
                        " / sum by (cluster) (meshagent_cluster_endpoints)",
                        "{{cluster}}",
                    )
                ],
            ),
            (
                "Retries by service",
                "reqps",
                [(f"sum by (to) (rate(meshagent_call_retries_total[{RATE}]))", "{{to}}")],
            ),
            (
                "Calls refused as loops",
                "short",
                [(f"sum (increase(meshagent_call_loops_total[{RATE}]))", "loops")],
            ),
        ],
    ),
    "service": (
        "meshagent · service",
        ["service"],
        [
            (
                "Requests by method",
                "reqps",
                [
                    (
                        f"sum by (method) (rate(meshagent_calls_total{{{SERVICE}}}[{RATE}]))",
                        "{{method}}",
                    )
                ],
            ),
            (
                "Success rate by method",
                "percentunit",
                [(_ok_share("method", SERVICE), "{{method}}")],
            ),
            (
                "Latency by method",
                "s",
                [
                    (_quantile(q, "method", SERVICE), f"p{int(q * 100)} {{{{method}}}}")
                    for q in (0.5, 0.95, 0.99)
                ],
            ),
            (
                "Failures by outcome",
                "reqps",
                [
                    (
                        f'sum by (outcome) (rate(meshagent_calls_total{{{SERVICE},outcome!="ok"}}[{RATE}]))',
                        "{{outcome}}",
                    )
                ],
            ),
            (
                "Requests by caller",
                "reqps",
                [(f"sum by (from) (rate(meshagent_calls_total{{{SERVICE}}}[{RATE}]))", "{{from}}")],
            ),
            (
                "Provider endpoints: requests and failures",
                "reqps",
                [
                    (
                        f'sum by (endpoint) (rate(meshagent_upstream_requests_total{{cluster="$service"}}[{RATE}]))',
                        "{{endpoint}}",
                    ),
                    (
                        f'sum by (endpoint) (rate(meshagent_upstream_failures_total{{cluster="$service"}}[{RATE}]))',
                        "failed {{endpoint}}",
                    ),
                ],
            ),
            (
                "Retries",
                "reqps",
                [
                    (
                        f"sum by (method) (rate(meshagent_call_retries_total{{{SERVICE}}}[{RATE}]))",
                        "{{method}}",
                    )
                ],
            ),
            (
                "Governance decisions (retry budget, breakers, limits)",
                "short",
                [
                    (
                        f"sum by (decision) (increase(meshagent_governance_decisions_total[{RATE}]))",
                        "{{decision}}",
                    )
                ],
            ),
            (
                "Circuit breaker: in flight and pending",
                "short",
                [
                    ('sum (meshagent_governance_in_flight{cluster="$service"})', "in flight"),
                    ('sum (meshagent_governance_pending{cluster="$service"})', "pending"),
                ],
            ),
            (
                "Ejections",
                "short",
                [
                    (
                        f'sum by (endpoint) (increase(meshagent_upstream_ejections_total{{cluster="$service"}}[{RATE}]))',
                        "{{endpoint}}",
                    )
                ],
            ),
        ],
    ),
    "agent": (
        "meshagent · agent",
        [],
        [
            (
                "CPU",
                "percentunit",
                [(f'rate(process_cpu_seconds_total{{job=~"$job"}}[{RATE}])', "{{instance}}")],
            ),
            (
                "Resident memory",
                "bytes",
                [('process_resident_memory_bytes{job=~"$job"}', "{{instance}}")],
            ),
            (
                "Open connections by listener",
                "short",
                [
                    (
                        "sum by (instance, listener) (meshagent_listener_connections_active)",
                        "{{instance}} {{listener}}",
                    )
                ],
            ),
            (
                "Event-loop lag (p99)",
                "s",
                [
                    (
                        f"histogram_quantile(0.99, sum by (instance, le) (rate(meshagent_event_loop_lag_seconds_bucket[{RATE}])))",
                        "{{instance}}",
                    )
                ],
            ),
            (
                "Registry connected",
                "short",
                [("meshagent_registry_connected", "{{instance}} {{registry}}")],
            ),
            ("Config version", "short", [("meshagent_config_info", "{{instance}} {{version}}")]),
            ("Open file descriptors", "short", [('process_open_fds{job=~"$job"}', "{{instance}}")]),
            (
                "Seconds since the last registry update",
                "s",
                [("meshagent_discovery_last_update_age_seconds", "{{service}}")],
            ),
        ],
    ),
}


def _variables(names: list[str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
        {
            "name": "job",
            "type": "custom",
            "query": "meshagent",
            "current": {"text": "meshagent", "value": "meshagent"},
            "label": "scrape job",
        },
    ]
    if "service" in names:
        found.append(
            {
                "name": "service",
                "type": "query",
                "datasource": DATASOURCE,
                "query": {"query": "label_values(meshagent_calls_total, to)", "refId": "service"},
                "refresh": 2,
                "label": "service",
            }
        )
    return found


def dashboard(key: str) -> dict[str, Any]:
    title, variables, panels = DASHBOARDS[key]
    built = []
    for i, (panel_title, unit, targets) in enumerate(panels):
        built.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": panel_title,
                "datasource": DATASOURCE,
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [
                    {
                        "refId": chr(ord("A") + j),
                        "expr": expr,
                        "legendFormat": legend,
                        "datasource": DATASOURCE,
                    }
                    for j, (expr, legend) in enumerate(targets)
                ],
            }
        )
    return {
        "uid": f"meshagent-{key}",
        "title": title,
        "tags": ["meshagent"],
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": _variables(variables)},
        "panels": built,
    }


def rendered() -> dict[str, str]:
    return {f"{key}.json": json.dumps(dashboard(key), indent=2) + "\n" for key in DASHBOARDS}


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in rendered().items():
        (OUT / name).write_text(text)
    print(f"wrote {len(DASHBOARDS)} dashboards to {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
