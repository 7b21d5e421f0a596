"""No caller input gives the agent's 500 (issue 23): generated JSON for the fields of
meshtest.EchoRequest, sent through the agent's gRPC invocation to a real grpcio server.
Each answer is a 200, a 400 naming a path, or the provider's own status (problem details
titled "Provider exception"); never an internal error of the agent. Seeded and bounded."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.agent_process import AgentProcess
from tests.fixtures.grpc_peer import ECHO
from tests.support.json_values import json_values

pytestmark = pytest.mark.integration

JSON = json_values(["1_000", "١٢", "AAEC", "not base64!", "NaN", "-0", "+7"])
# delay_ms is left out: the provider would sleep for it.
MESSAGES = st.fixed_dictionaries(
    {}, optional={name: JSON for name in ("message", "count", "code", "payload")}
)


@settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(message=MESSAGES | JSON)
def test_generated_messages_never_get_the_agents_500(
    grpc_agent: AgentProcess, message: Any
) -> None:
    with grpc_agent.client() as http:
        response = http.post(
            f"/v1/invoke/grpc/{ECHO}/Unary",
            content=json.dumps({"message": message}),
            headers={"content-type": "application/json"},
        )
    if response.status_code in (200, 400):
        return
    # Anything else is the provider's answer: an echo with "code" set answers that status.
    assert response.json()["title"] == "Provider exception", response.text
