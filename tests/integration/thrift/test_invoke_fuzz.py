"""No caller input gives a 500 (issue 23): generated JSON for every field of the IDL's
Item, sent through the agent's Thrift invocation to a real thriftpy2 server. Each answer is
a 200 (the value fit), a 400 naming a path (it did not), or the provider's own answer; never
the agent's 500. Seeded and bounded, so CI is repeatable."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.agent_process import AgentProcess
from tests.fixtures.thrift_server import load_idl
from tests.support.json_values import json_values

pytestmark = pytest.mark.integration

echo_thrift = load_idl()

# Past a double too (10**300 times an integer), and names the enum class has as attributes.
JSON = json_values(
    ["NaN", "Infinity", "mro", "__class__", "1_000", "١٢", "GREEN", "true", str(10**400)],
    max_leaves=12,
) | st.integers().map(lambda n: n * 10**300)
FIELDS = [spec[1] for spec in echo_thrift.Item.thrift_spec.values()]
ITEMS = st.fixed_dictionaries(
    {"name": JSON}, optional={name: JSON for name in FIELDS if name != "name"}
)


@settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(item=ITEMS)
def test_generated_items_never_get_the_agents_500(agent: AgentProcess, item: Any) -> None:
    with agent.client() as http:
        response = http.post(
            "/v1/invoke/thrift/framed-binary/echo",
            content=json.dumps({"args": {"item": item}}),
            headers={"content-type": "application/json"},
        )
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert response.json()["errors"][0]["path"].startswith("body.args.item")
