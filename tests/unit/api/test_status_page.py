"""agent/api/status_page.py against an Agent in process (the browser is
tests/integration/http/test_status_page.py's)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent.api import status_page
from agent.calls import Direction, Outcome
from agent.config import parse_config
from agent.errors import UpstreamError
from agent.runtime.agent import Agent
from tests.fixtures.net import async_wait_until

HOSTILE = '<script>alert("x")</script>'


def config() -> dict[str, Any]:
    return {
        "app": {"name": "shop"},
        "admin": {"port": 0},
        "registries": [
            {
                "name": "local",
                "type": "local",
                "config": {"services": {"orders": [{"host": "127.0.0.1", "port": 9}]}},
            }
        ],
        "services": [{"name": "orders", "health": {"enabled": False}}],
        "governance": {"rules": {"rules": [{"match": {"to": "orders"}, "timeout_ms": 700}]}},
    }


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    agent = Agent(parse_config(config()))
    await agent.start()
    await async_wait_until(lambda: len(agent.clusters["orders"].hosts()) == 1, what="endpoint")
    yield agent
    await agent.stop()


async def test_the_sections_and_their_content(agent: Agent) -> None:
    calls = agent.calls
    for outcome in (Outcome.OK, Outcome.OK, Outcome.UPSTREAM_ERROR):
        call = calls.start("http", Direction.OUTBOUND, calls.outbound_route("orders", "GET"))
        if outcome is Outcome.OK:
            call.finish(outcome, "200")
        else:
            call.fail(UpstreamError(f"broke {HOSTILE}"), "502")
    html = status_page.render(agent, {"to": "orders", "method": "GET"}, fragment=False)
    assert html.startswith("<!doctype html>") and "<script>" in html
    for section in ("services", "calls", "failures", "registries", "rules", "listeners"):
        assert f'<section id="{section}">' in html
    assert "127.0.0.1:9" in html and "round_robin" in html
    assert "66.67%" in html  # 2 of 3 calls ok, over the window so far
    assert "upstream_error" in html and "shop:orders" in html
    assert "orders GET: rule #0" in html and "700" in html
    assert HOSTILE not in html and "&lt;script&gt;" in html  # a provider's text is escaped


async def test_the_fragment_is_the_tables_alone(agent: Agent) -> None:
    fragment = status_page.render(agent, {}, fragment=True)
    assert fragment.startswith('<section id="services">') and "<script>" not in fragment
    assert status_page.render(agent, {"to": HOSTILE}, fragment=True).count("<script>") == 0


async def test_every_table_row_has_a_cell_per_header(agent: Agent) -> None:
    calls = agent.calls
    call = calls.start("http", Direction.OUTBOUND, calls.outbound_route("orders", "GET"))
    call.fail(UpstreamError("broke"), "502")
    html = status_page.render(agent, {}, fragment=True)
    for table in html.split("<table>")[1:]:
        body = table.split("</table>")[0]
        headers = body.split("</thead>")[0].count("<th>")
        for row in body.split("<tbody>")[1].split("</tr>")[:-1]:
            assert row.count("<td") == headers, row
