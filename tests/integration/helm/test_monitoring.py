"""The chart's Grafana dashboards and Prometheus alert rules (issue 28): rendered by the real
helm, the rules checked and unit-tested by promtool, and every rule and every dashboard
query evaluated by a live Prometheus scraping a live agent under traffic, one alert
(a loop refusal) made to fire end to end."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.helm import CHART, ROOT, Helm, find, helm_binary
from tests.fixtures.net import wait_until
from tests.fixtures.processes import ManagedProcess, free_port
from tests.fixtures.programs import require
from tests.integration.http.conftest import start_uvicorn

pytestmark = pytest.mark.integration

RULES_ON = {"monitoring": {"prometheusRule": {"enabled": True, "labels": {"release": "kps"}}}}
ALERTS = {
    "MeshagentDown",
    "MeshagentRegistryDisconnected",
    "MeshagentHighErrorRate",
    "MeshagentEndpointsEjected",
    "MeshagentRetryBudgetExhausted",
    "MeshagentLoopRefused",
    "MeshagentEventLoopLag",
}


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("dashboards", ROOT / "scripts" / "dashboards.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(helm_binary(), tmp_path_factory.mktemp("helm-monitoring"))


@pytest.fixture(scope="module")
def rules_file(helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The PrometheusRule's groups as a Prometheus rules file."""
    _, documents = helm.render(RULES_ON)
    rule = find(documents, "PrometheusRule", "meshagent")
    path = tmp_path_factory.mktemp("rules") / "meshagent.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def test_the_dashboards_are_what_the_generator_writes() -> None:
    for name, text in _generator().rendered().items():
        assert (CHART / "dashboards" / name).read_text() == text, (
            f"run scripts/dashboards.py ({name})"
        )


def test_dashboards_ship_as_labelled_config_maps(helm: Helm) -> None:
    _, documents = helm.render({})
    maps = [
        d for d in documents if d["kind"] == "ConfigMap" and "dashboard" in d["metadata"]["name"]
    ]
    assert {m["metadata"]["name"] for m in maps} == {
        "meshagent-dashboard-agent",
        "meshagent-dashboard-mesh-overview",
        "meshagent-dashboard-service",
    }
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((name, text),) = config_map["data"].items()
        assert json.loads(text)["uid"] == f"meshagent-{name.removesuffix('.json')}"
    assert not [d for d in documents if d["kind"] == "PrometheusRule"]  # off by default
    _, without = helm.render({"monitoring": {"dashboards": {"enabled": False}}})
    assert not [d for d in without if "dashboard" in d["metadata"]["name"]]


def test_the_prometheus_rule_has_every_alert(helm: Helm) -> None:
    _, documents = helm.render(RULES_ON)
    rule = find(documents, "PrometheusRule", "meshagent")
    assert rule["metadata"]["labels"]["release"] == "kps"
    names = {r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]}
    assert names == ALERTS
    bad = helm.template({"monitoring": {"prometheusRule": {"errorRatio": 2}}})
    assert bad.returncode != 0 and "errorRatio" in bad.stderr


# promtool's rule unit tests: synthetic series, the alerts each must (and must not) raise.
_UNIT_TESTS = {
    "rule_files": ["meshagent.rules.yaml"],
    "evaluation_interval": "1m",
    "tests": [
        {
            "interval": "1m",
            "input_series": [
                {"series": 'up{job="meshagent",instance="a"}', "values": "1 0 0 0"},
                {
                    "series": 'meshagent_registry_connected{instance="a",registry="zk"}',
                    "values": "1 0 0 0",
                },
                {"series": 'meshagent_calls_total{to="orders",outcome="ok"}', "values": "0+90x10"},
                {
                    "series": 'meshagent_calls_total{to="orders",outcome="app_error"}',
                    "values": "0+10x10",
                },
                {"series": 'meshagent_calls_total{to="users",outcome="ok"}', "values": "0+100x10"},
                {"series": 'meshagent_cluster_endpoints{cluster="orders"}', "values": "4x10"},
                {
                    "series": 'meshagent_cluster_endpoints_available{cluster="orders"}',
                    "values": "1x10",
                },
                {"series": 'meshagent_cluster_endpoints{cluster="users"}', "values": "4x10"},
                {
                    "series": 'meshagent_cluster_endpoints_available{cluster="users"}',
                    "values": "3x10",
                },
                {
                    "series": "meshagent_governance_decisions_total"
                    '{instance="a",decision="retries_over_budget"}',
                    "values": "0 0 3 3",
                },
                {"series": 'meshagent_call_loops_total{instance="a"}', "values": "0 0 0 1"},
            ],
            "alert_rule_test": [
                {
                    "eval_time": "3m",
                    "alertname": "MeshagentDown",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "critical",
                                "job": "meshagent",
                                "instance": "a",
                            },
                            "exp_annotations": {"summary": "meshagent a is down"},
                        }
                    ],
                },
                {"eval_time": "1m", "alertname": "MeshagentRegistryDisconnected", "exp_alerts": []},
                {
                    "eval_time": "3m",
                    "alertname": "MeshagentRegistryDisconnected",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "warning",
                                "instance": "a",
                                "registry": "zk",
                            },
                            "exp_annotations": {"summary": "meshagent a lost registry zk"},
                        }
                    ],
                },
                {
                    "eval_time": "8m",
                    "alertname": "MeshagentHighErrorRate",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": "warning", "to": "orders"},
                            "exp_annotations": {"summary": "calls to orders fail: 10%"},
                        }
                    ],
                },
                {
                    "eval_time": "8m",
                    "alertname": "MeshagentEndpointsEjected",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": "warning", "cluster": "orders"},
                            "exp_annotations": {
                                "summary": "orders: 75% of its endpoints unavailable"
                            },
                        }
                    ],
                },
                {
                    "eval_time": "3m",
                    "alertname": "MeshagentRetryBudgetExhausted",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "warning",
                                "instance": "a",
                                "decision": "retries_over_budget",
                            },
                            "exp_annotations": {
                                "summary": "meshagent a refused retries over the budget"
                            },
                        }
                    ],
                },
                {"eval_time": "2m", "alertname": "MeshagentLoopRefused", "exp_alerts": []},
                {
                    "eval_time": "3m",
                    "alertname": "MeshagentLoopRefused",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": "warning", "instance": "a"},
                            "exp_annotations": {
                                "summary": "meshagent a refused calls going round in a loop"
                            },
                        }
                    ],
                },
            ],
        }
    ],
}


def test_promtool_checks_the_rules_and_their_unit_tests_pass(rules_file: Path) -> None:
    check = subprocess.run(
        [require("promtool"), "check", "rules", str(rules_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in check.stdout
    tests = rules_file.parent / "tests.yaml"
    tests.write_text(yaml.safe_dump(_UNIT_TESTS))
    result = subprocess.run(
        [require("promtool"), "test", "rules", str(tests)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=rules_file.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # A test that can fail: the same series, an alert expected that does not fire.
    wrong = json.loads(json.dumps(_UNIT_TESTS))
    wrong["tests"][0]["alert_rule_test"][1]["exp_alerts"] = [{"exp_labels": {"severity": "x"}}]
    tests.write_text(yaml.safe_dump(wrong))
    failing = subprocess.run(
        [require("promtool"), "test", "rules", str(tests)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=rules_file.parent,
    )
    assert failing.returncode != 0


# -- a live Prometheus scraping a live agent --------------------------------------------


@pytest.fixture(scope="module")
def live(
    rules_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AgentProcess, str]]:
    workdir = tmp_path_factory.mktemp("prometheus")
    provider, port = start_uvicorn(workdir, "orders")
    config = {
        "app": {"name": "shop"},
        "services": [{"name": "orders", "protocol": "http", "health": {"enabled": False}}],
        "listeners": [{"port": free_port(), "service": "orders", "protocol": "http"}],
    }
    agent = start_agent(workdir / "agent", config)
    prometheus_port = free_port()
    (workdir / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules_file)],
                "scrape_configs": [
                    {
                        "job_name": "meshagent",
                        "static_configs": [{"targets": [agent.base_url.removeprefix("http://")]}],
                    }
                ],
            }
        )
    )
    prometheus = ManagedProcess(
        [
            require("prometheus"),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ],
        name="prometheus",
        log_path=workdir / "prometheus.log",
    )
    prometheus.start()
    try:
        with agent.client() as client:
            client.put(
                "/v1/registrations/orders/a", json={"host": "127.0.0.1", "port": port}
            ).raise_for_status()
        agent.wait_endpoints("orders", 1)
        yield agent, f"http://127.0.0.1:{prometheus_port}"
    finally:
        prometheus.stop()
        agent.stop()
        provider.stop()


def _query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", (expr, answer)
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def _ready(prometheus: str) -> bool:
    try:
        return httpx.get(f"{prometheus}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_live_prometheus_evaluates_every_rule_and_query(live: tuple[AgentProcess, str]) -> None:
    agent, prometheus = live
    wait_until(lambda: _ready(prometheus), 60, what="Prometheus ready")
    listener = f"http://127.0.0.1:{agent.listener_port(0)}"

    def traffic() -> None:
        with httpx.Client(base_url=listener, timeout=10) as app:
            for _ in range(5):
                app.get("/hello")
            app.get("/status/503")

    # Calls until Prometheus has two scrapes of them (a rate needs two).
    def rated() -> bool:
        traffic()
        return bool(_query(prometheus, 'sum(rate(meshagent_calls_total{to="orders"}[1m])) > 0'))

    wait_until(rated, 60, what="a call rate in Prometheus")
    # A loop refusal (the hop count at the limit) fires MeshagentLoopRefused end to end.
    with httpx.Client(base_url=listener, timeout=10) as app:
        assert app.get("/hello", headers={"x-meshagent-hops": "16"}).status_code == 508

    def firing() -> bool:
        alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        return any(
            a["labels"]["alertname"] == "MeshagentLoopRefused" and a["state"] == "firing"
            for a in alerts
        )

    wait_until(firing, 60, what="MeshagentLoopRefused firing")
    groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(rules) == ALERTS
    assert all(rule["health"] == "ok" for rule in rules.values()), rules
    # Every dashboard query, its variables filled in, evaluates; the core ones have data.
    generator = _generator()
    empty = []
    for key in generator.DASHBOARDS:
        for panel in generator.dashboard(key)["panels"]:
            for target in panel["targets"]:
                expr = (
                    target["expr"]
                    .replace("$__rate_interval", "1m")
                    .replace("$service", "orders")
                    .replace("$job", "meshagent")
                )
                if not _query(prometheus, expr):
                    empty.append(panel["title"])
    # Nothing was retried, broken or ejected in this run: those panels are empty.
    assert set(empty) <= {
        "Retries by service",
        "Retries",
        "Calls refused as loops",
        "Ejections",
        "Circuit breaker: in flight and pending",
        "Governance decisions (retry budget, breakers, limits)",
    } - {"Calls refused as loops"}, empty
