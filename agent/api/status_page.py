"""The agent's status page, ``/ui`` on the API port: the mesh as this agent sees it (issue 28).

Server-rendered HTML tables, so the basics work with JavaScript off (a refresh link); a few
lines of script refetch the page every ``REFRESH_S`` and swap its ``<main>``. Nothing from a
CDN, no build step: the CSS and the script are in this module. Every value that comes from
a config, a registry, a caller or a provider is escaped (``html.escape``).

Sections: services and their endpoints (health, ejection, draining, the LB policy); calls by
five-tuple over the last minute (agent/telemetry/call_window.py); registries and since when;
the governance rules in force, and the rule a call would get (a small form: ``?to=&method=``);
the last failed calls with their error chain; listeners and their connections.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.calls import Route

if TYPE_CHECKING:
    from agent.runtime.agent import Agent

REFRESH_S = 5
MAX_FAILED_SHOWN = 20

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
header { background: #1d2330; color: #fff; padding: 10px 20px; display: flex; gap: 24px;
  align-items: baseline; flex-wrap: wrap; }
header h1 { font-size: 18px; margin: 0; }
main { padding: 12px 20px; }
section { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; margin: 12px 0;
  padding: 8px 14px; overflow-x: auto; }
h2 { font-size: 15px; margin: 6px 0 8px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid #eceef2;
  white-space: nowrap; }
th { font-weight: 600; color: #4a5263; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #137333; } .bad { color: #b3261e; font-weight: 600; } .warn { color: #b06000; }
.muted { color: #7a8394; }
pre { margin: 0; white-space: pre-wrap; font-size: 12px; }
form { margin: 6px 0; } input { font: inherit; padding: 2px 4px; }
"""

# Refetch the page and swap <main> (the tables); a failed fetch leaves the last one.
_SCRIPT = """
(function () {
  async function refresh() {
    try {
      const response = await fetch(window.location.href, {headers: {"x-fragment": "1"}});
      if (response.ok) {
        document.querySelector("main").innerHTML = await response.text();
      }
    } catch (e) { /* the agent is restarting: try again next time */ }
  }
  setInterval(refresh, REFRESH_MS);
})();
""".replace("REFRESH_MS", str(REFRESH_S * 1000))


def _cell(value: object, css: str = "") -> str:
    attribute = f' class="{css}"' if css else ""
    return f"<td{attribute}>{escape(str(value))}</td>"


def _num(value: float | int | None, suffix: str = "", digits: int = 1) -> str:
    if value is None:
        return '<td class="num muted">-</td>'
    text = f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return f'<td class="num">{escape(text + suffix)}</td>'


def _table(headers: list[str], rows: list[str], empty: str) -> str:
    if not rows:
        return f'<p class="muted">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _since(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _services(agent: Agent) -> str:
    now = time.monotonic()
    statuses = agent.registry_statuses()
    out = []
    for name, cluster in agent.clusters.items():
        service = agent.services[name]
        hosts = list(cluster.hosts())
        ejected = sum(host.ejected(now) for host in hosts)
        status = statuses.get(service.registry)
        registry = (
            f"{service.registry} ({'connected' if status.connected else 'disconnected'})"
            if status is not None
            else service.registry
        )
        summary = (
            f"{len(hosts)} endpoints, {sum(h.healthy for h in hosts)} healthy, {ejected} ejected"
            + (", panic" if cluster.panic else "")
        )
        rows = []
        for host in hosts:
            instance = host.instance
            is_ejected = host.ejected(now)
            state = (
                ("ejected", "bad")
                if is_ejected
                else ("draining", "warn")
                if host.draining
                else ("healthy", "ok")
                if host.healthy
                else ("unhealthy", "bad")
            )
            rows.append(
                "<tr>"
                + _cell(instance.id)
                + _cell(f"{instance.host}:{instance.port}")
                + _cell(state[0], state[1])
                + _num(round(max(0.0, host.ejected_until - now), 1) if is_ejected else None, " s")
                + _num(host.active_requests)
                + _num(host.stats.requests)
                + _num(host.stats.failures)
                + _num(host.times_ejected)
                + "</tr>"
            )
        table = _table(
            [
                "endpoint",
                "address",
                "state",
                "ejected for",
                "active",
                "requests",
                "failures",
                "ejections",
            ],
            rows,
            "no endpoint",
        )
        out.append(
            f'<h3 id="service-{escape(name)}">{escape(name)} '
            f'<span class="muted">{escape(service.protocol)} · {escape(cluster.lb_policy)} · '
            f"{escape(registry)} · {escape(summary)}</span></h3>{table}"
        )
    return "".join(out) or '<p class="muted">no service configured</p>'


def _calls(agent: Agent) -> str:
    found, span = agent.call_window.rows()
    rows = []
    for row in found:
        success = row.success_rate
        css = (
            ""
            if success is None
            else ("ok" if success >= 0.99 else "bad" if success < 0.9 else "warn")
        )
        caller = f"{row.source or '-'}" + (f" ({row.source_cluster})" if row.source_cluster else "")
        target = row.service + (f" ({row.target_cluster})" if row.target_cluster else "")
        rows.append(
            "<tr>"
            + _cell(caller)
            + _cell(target)
            + _cell(row.method)
            + _cell(row.protocol)
            + _cell(row.direction)
            + _num(row.requests_per_s, "/s", 2)
            + (
                '<td class="num muted">-</td>'
                if success is None
                else f'<td class="num {css}">{success * 100:.2f}%</td>'
            )
            + _num(row.p50_ms, " ms")
            + _num(row.p95_ms, " ms")
            + _num(row.p99_ms, " ms")
            + _num(row.retries)
            + "</tr>"
        )
    note = f'<p class="muted">over the last {span:.0f} s</p>'
    return note + _table(
        [
            "from",
            "to",
            "method",
            "protocol",
            "direction",
            "rate",
            "success",
            "p50",
            "p95",
            "p99",
            "retries",
        ],
        rows,
        "no calls yet",
    )


def _registries(agent: Agent) -> str:
    rows = []
    for name, status in agent.registry_statuses().items():
        rows.append(
            "<tr>"
            + _cell(name)
            + _cell(
                "connected" if status.connected else "disconnected",
                "ok" if status.connected else "bad",
            )
            + _cell(_since(status.since))
            + _cell(status.detail or "")
            + "</tr>"
        )
    return _table(["registry", "state", "since", "detail"], rows, "no registry")


def _rules(agent: Agent, to: str, method: str) -> str:
    state = agent.governance.state
    rules = state.rules.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    text = json.dumps(rules, indent=1, sort_keys=True) if rules.get("rules") else ""
    shown = f"<pre>{escape(text)}</pre>" if text else '<p class="muted">no rule in force</p>'
    form = (
        '<form method="get" action="/ui"><label>Which rule does a call get? to '
        f'<input name="to" value="{escape(to)}" size="16"></label> <label>method '
        f'<input name="method" value="{escape(method)}" size="12"></label> '
        '<button type="submit">look up</button></form>'
    )
    answer = ""
    if to:
        route = Route(agent.calls.app, agent.calls.app_cluster, to, "", method)
        found = agent.effective_rule(route)
        if found is None:
            answer = f'<p>{escape(to)} {escape(method)}: <span class="muted">no rule</span></p>'
        else:
            rule = found.rule.model_dump(mode="json", by_alias=True, exclude_defaults=True)
            answer = (
                f"<p>{escape(to)} {escape(method)}: rule #{found.position}</p>"
                f"<pre>{escape(json.dumps(rule, indent=1, sort_keys=True))}</pre>"
            )
    source = escape(str(state.source or "config"))
    return f'<p class="muted">from {source}</p>{shown}{form}{answer}'


def _failures(agent: Agent) -> str:
    rows = []
    for failed in list(agent.recent_failures.calls)[::-1][:MAX_FAILED_SHOWN]:
        hops = " → ".join(
            f"{hop.get('app') or '?'}:{hop.get('service', '')}"
            + (f"@{hop['endpoint']}" if hop.get("endpoint") else "")
            + (f" [{hop['outcome']}]" if hop.get("outcome") else "")
            for hop in failed.chain
        )
        rows.append(
            "<tr>"
            + _cell(datetime.fromtimestamp(failed.at, UTC).strftime("%H:%M:%S"))
            + _cell(f"{failed.source or '-'} → {failed.target}")
            + _cell(failed.method)
            + _cell(failed.protocol)
            + _cell(failed.outcome, "bad")
            + _cell(failed.status)
            + _cell(failed.error[:200])
            + _cell(hops)
            + "</tr>"
        )
    return _table(
        ["time", "call", "method", "protocol", "outcome", "status", "error", "chain"],
        rows,
        "no failed call",
    )


def _listeners(agent: Agent) -> str:
    rows = []
    for listener in agent.listeners:
        host, port = listener.address
        stats = listener.context.stats
        rows.append(
            "<tr>"
            + _cell(listener.config.display_name)
            + _cell(f"{host}:{port}")
            + _cell(listener.config.protocol)
            + _cell(listener.config.service)
            + _num(stats.active)
            + _num(stats.accepted)
            + _num(stats.rejected)
            + _num(stats.requests)
            + "</tr>"
        )
    return _table(
        ["listener", "address", "protocol", "service", "open", "accepted", "rejected", "requests"],
        rows,
        "no listener",
    )


def main_html(agent: Agent, to: str = "", method: str = "") -> str:
    """The tables (what the script swaps on each refresh)."""
    sections = [
        ("services", "Services and endpoints", _services(agent)),
        ("calls", "Calls", _calls(agent)),
        ("failures", "Last failed calls", _failures(agent)),
        ("registries", "Registries", _registries(agent)),
        ("rules", "Governance rules", _rules(agent, to, method)),
        ("listeners", "Listeners", _listeners(agent)),
    ]
    return "".join(
        f'<section id="{key}"><h2>{escape(title)}</h2>{body}</section>'
        for key, title, body in sections
    )


def page(agent: Agent, to: str = "", method: str = "") -> str:
    uptime = time.time() - agent.started_at
    app = agent.config.app
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'  # no favicon request (a 404 in the console)
        f"<title>meshagent · {escape(app.name or 'agent')}</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<header><h1>meshagent · {escape(app.name or 'agent')}</h1>"
        f"<span>version {escape(__version__)}</span>"
        f"<span>config {escape(agent.config_version)}</span>"
        f"<span>up {uptime / 60:.0f} min</span>"
        f"<span>loop lag {agent.loop_lag.last_s * 1000:.1f} ms</span>"
        f'<a href="/ui" style="color:#9cc4ff">refresh</a></header>'
        f"<main>{main_html(agent, to, method)}</main>"
        f"<script>{_SCRIPT}</script></body></html>"
    )


def render(agent: Agent, query: dict[str, Any], fragment: bool) -> str:
    to = str(query.get("to", ""))[:200]
    method = str(query.get("method", ""))[:200]
    return main_html(agent, to, method) if fragment else page(agent, to, method)
