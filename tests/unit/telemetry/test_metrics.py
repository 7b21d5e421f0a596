from __future__ import annotations

from agent.config import parse_config
from agent.runtime.agent import Agent
from agent.telemetry.metrics import metrics_registry, render


def test_metrics_read_the_agent_counters_at_scrape_time() -> None:
    agent = Agent(
        parse_config(
            {
                "registries": [
                    {
                        "name": "local",
                        "type": "local",
                        "config": {"services": {"s": [{"host": "127.0.0.1", "port": 9}]}},
                    }
                ],
                "services": [{"name": "s"}],
                "listeners": [{"port": 9999, "service": "s"}],
            }
        )
    )
    registry = metrics_registry(agent)
    agent.listeners[0].context.stats.accepted = 7
    text = render(registry).decode()
    assert 'meshagent_listener_connections_total{listener="tcp:9999",service="s"} 7.0' in text
    agent.listeners[0].context.stats.accepted = 8
    assert 'service="s"} 8.0' in render(registry).decode()
    assert 'meshagent_cluster_endpoints{cluster="s"} 0.0' in text  # no snapshot applied yet


def test_route_counters_of_request_routing_listeners() -> None:
    agent = Agent(
        parse_config(
            {
                "registries": [
                    {
                        "name": "local",
                        "type": "local",
                        "config": {"services": {"s": [{"host": "127.0.0.1", "port": 9}]}},
                    }
                ],
                "services": [{"name": "s"}],
                "listeners": [{"port": 9998, "service": "s"}],
            }
        )
    )
    registry = metrics_registry(agent)
    route = agent.listeners[0].context.stats.route("orders")
    route.requests, route.bytes_in, route.bytes_out = 3, 120, 4567
    text = render(registry).decode()
    labels = '{listener="tcp:9998",route="orders"}'
    assert f"meshagent_listener_route_requests_total{labels} 3.0" in text
    assert f"meshagent_listener_route_received_bytes_total{labels} 120.0" in text
    assert f"meshagent_listener_route_sent_bytes_total{labels} 4567.0" in text
    assert agent.listeners[0].context.stats.route("orders") is route
