"""No caller input gives the agent's 500 (issue 23): generated JSON arguments, declared as
the Java types generic invocation converts, sent through the agent's Dubbo invocation to the
real Java provider. Each answer is a 200, a 400 naming an argument's path, or the provider's
own refusal (502); never an internal error of the agent. Seeded and bounded."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.agent_process import AgentProcess
from tests.interop.dubbo_invoke_support import INVOKE
from tests.interop.test_dubbo_invoke import agent  # noqa: F401 (the module's agent)
from tests.support.json_values import json_values

pytestmark = pytest.mark.integration

JSON = json_values(
    ["NaN", "2023-11-14T22:13:20Z", "1_000", "AAEC", "LOW", "class", "PT1H", "zh_CN", "--02-29"],
    int_bits=80,
)
PERSON = "org.meshagent.interop.api.Person"
# (method, declared types): the provider's methods whose parameters these are.
CALLS = st.sampled_from(
    [
        ("echo", ["java.lang.String"]),
        ("addInt", ["int", "int"]),
        ("addDays", ["java.util.Date", "int"]),
        ("addDecimal", ["java.math.BigDecimal", "java.math.BigDecimal"]),
        ("laterBy", ["java.sql.Timestamp", "long"]),
        ("doubled", ["java.math.BigInteger"]),
        ("nextUuid", ["java.util.UUID"]),
        ("echoMap", ["java.util.Map"]),
        ("echoPerson", [PERSON]),
        ("describe", [PERSON]),
        # JDK classes and arrays (plugins/dubbo/jdk_types.py, generic.py's _ARRAYS).
        ("jdkReceived", ["java.time.Instant"]),
        ("jdkReceived", ["java.time.Duration"]),
        ("jdkReceived", ["java.time.ZonedDateTime"]),
        ("jdkReceived", ["java.util.Locale"]),
        ("jdkReceived", ["java.time.Year"]),
        ("jdkReceived", ["java.util.Calendar"]),
        ("jdkReceived", ["char"]),
        ("jdkReceived", ["long[]"]),
        ("jdkReceived", ["java.lang.Integer[]"]),
    ]
)


@settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(call=CALLS, data=st.data())
def test_generated_arguments_never_get_the_agents_500(
    agent: AgentProcess,  # noqa: F811
    call: tuple[str, list[str]],
    data: st.DataObject,
) -> None:
    method, types = call
    args: list[Any] = [data.draw(JSON) for _ in types]
    with agent.client() as http:
        response = http.post(
            f"{INVOKE}/{method}",
            content=json.dumps({"types": types, "args": args}),
            headers={"content-type": "application/json"},
        )
    assert response.status_code in (200, 400, 502), response.text
    if response.status_code == 400:
        assert response.json()["errors"][0]["path"].startswith("body"), response.text
