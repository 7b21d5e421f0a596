"""JDK value classes through the JSON invocation, to the real Java provider and back (issue 23).

Each value of tests/support/jdk_values.py goes to ``jdkReceived(T)``, which answers the class
and ``toString`` of what arrived, and to ``jdk(T)``, which returns it: the provider receives
the real object (the agent writes it as hessian-lite does, test_hessian2_java.py) and its
generalized result reads back as the text that was sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.java_dubbo import INTERFACE, DubboProvider
from tests.fixtures.zookeeper import ZooKeeperServer
from tests.interop.dubbo_invoke_support import call, invoke_agent_config
from tests.support.jdk_values import ARRAY_VALUES, JDK_VALUES

pytestmark = pytest.mark.integration

# What Java's toString says and the runtime class, where not the declared class and text.
_RECEIVED = {
    "java.time.ZoneId": "java.time.ZoneRegion Europe/Paris",
    "java.util.Calendar": "java.util.GregorianCalendar 2023-11-14T22:13:20.123Z",
    "java.lang.Class": "java.lang.Class class java.lang.String",
    "char": "char x",
    "char[]": "char[] ab\u00e9",
}
# The provider cannot generalize these results on Java 17, after the method ran: PojoUtils
# reflects on java.time's and sun.util.calendar's closed modules, and a File's getters
# (getAbsoluteFile, ...) are Files again, without end. What the provider says:
_NOT_GENERALIZED = {
    "java.time.ZonedDateTime": "InaccessibleObjectException",
    "java.time.ZoneId": "InaccessibleObjectException",
    "java.util.Calendar": "does not export sun.util.calendar",
    "java.io.File": "StackOverflowError",
}


@pytest.fixture(scope="module")
def agent(
    zookeeper: ZooKeeperServer, dubbo_provider: DubboProvider, interop_workdir: Path
) -> Iterator[AgentProcess]:
    config = invoke_agent_config(zookeeper.hosts, "interface")
    process = start_agent(interop_workdir / "agent-jdk-types", config, name="agent-jdk-types")
    try:
        process.process.wait_for(
            lambda: dubbo_provider.address in {i["id"] for i in process.instances(INTERFACE)},
            30,
            what="the agent to discover the session provider",
        )
        yield process
    finally:
        process.stop()


def _id(value: tuple[str, object]) -> str:
    return f"{value[0]}={value[1]}"


@pytest.mark.parametrize(("declared", "text"), JDK_VALUES, ids=[_id(v) for v in JDK_VALUES])
def test_the_provider_receives_the_java_value(
    agent: AgentProcess, declared: str, text: object
) -> None:
    with agent.client() as client:
        response, _ = call(client, "jdkReceived", {"types": [declared], "args": [text]})
    assert response.status_code == 200, response.text
    assert response.json()["result"] == _RECEIVED.get(declared, f"{declared} {text}")


@pytest.mark.parametrize(("declared", "text"), JDK_VALUES, ids=[_id(v) for v in JDK_VALUES])
def test_a_result_reads_back_as_the_text_sent(
    agent: AgentProcess, declared: str, text: object
) -> None:
    with agent.client() as client:
        response, _ = call(client, "jdk", {"types": [declared], "args": [text]})
    if declared in _NOT_GENERALIZED:
        assert response.status_code == 502, response.text
        assert _NOT_GENERALIZED[declared] in response.text
        return
    assert response.status_code == 200, response.text
    assert response.json()["result"] == text


@pytest.mark.parametrize(
    ("declared", "value", "why"),
    [
        ("java.time.Instant", "2024-02-30T00:00:00Z", "day is out of range"),
        ("java.time.Instant", "2024-02-29T13:45:30", "not a java.time.Instant"),
        ("java.time.Duration", "1 hour", "not a duration"),
        ("java.util.Locale", "not a locale", "not a locale"),
        ("java.util.Currency", "eur", "ISO 4217"),
        ("char", "xy", "one character"),
        ("java.time.Year", True, "a number"),
        ("java.util.Optional", "x", "not Serializable"),
        ("java.util.EnumMap", {"RED": 1}, "back as a HashMap"),
        ("java.net.URL", "https://example.com", "cannot read it"),
        ("java.net.InetAddress", "10.0.0.1", "cannot read it"),
    ],
)
def test_a_value_java_cannot_take_is_400_naming_it(
    agent: AgentProcess, declared: str, value: object, why: str
) -> None:
    with agent.client() as client:
        response, _ = call(client, "jdkReceived", {"types": [declared], "args": [value]})
    assert response.status_code == 400, response.text
    error = response.json()["errors"][0]
    assert error["path"] == "body.args[0]"
    assert why in error["message"]


def test_a_class_key_in_a_map_argument(agent: AgentProcess) -> None:
    """PojoUtils reads "class" in a Map as the class to make of it: {"class":
    "java.lang.String"} reached echoMap as an empty String (a silent wrong value). A map
    class keeps the map and the entry; anything else is refused with the path."""
    with agent.client() as client:
        kept, _ = call(
            client,
            "echoMap",
            {"types": ["java.util.Map"], "args": [{"class": "java.util.HashMap", "a": 1}]},
        )
        refused, _ = call(
            client,
            "echoMap",
            {"types": ["java.util.Map"], "args": [{"class": "java.lang.String", "a": 1}]},
        )
    assert kept.status_code == 200, kept.text
    assert kept.json()["result"]["a"] == 1 and kept.json()["result"]["class"] == "java.util.HashMap"
    assert refused.status_code == 400, refused.text
    assert refused.json()["errors"][0]["path"] == "body.args[0].class"


def test_a_provider_exception_carries_its_causes_and_suppressed(agent: AgentProcess) -> None:
    """A generic call's exception is a GenericException whose message is the provider's
    printed stack (StringUtils.toString): the agent gives the causes and the suppressed
    exceptions, outermost first, without the stack."""
    with agent.client() as client:
        response, _ = call(
            client, "failWithCauses", {"types": ["java.lang.String"], "args": ["boom"]}
        )
    print(response.text)
    assert response.status_code == 502
    exception = response.json()["exception"]
    assert exception["type"] == "java.lang.IllegalStateException"
    assert exception["message"] == "boom"
    assert exception["details"] == {
        "causes": [
            {"type": "java.io.IOException", "message": "disk gone"},
            {"type": "java.io.EOFException", "message": "at byte 7"},
        ],
        "suppressed": [{"type": "java.lang.IllegalArgumentException", "message": "cleanup failed"}],
    }
    assert "\tat " not in response.text


def test_a_throwable_result_reads_without_its_stack(agent: AgentProcess) -> None:
    """A Throwable returned (not thrown) is generalized by the provider into a map of its
    getters, the stack frames included: it reads as class, message, cause and suppressed."""
    with agent.client() as client:
        response, _ = call(client, "failure", {"types": ["java.lang.String"], "args": ["boom"]})
    assert response.status_code == 200, response.text
    assert response.json()["result"] == {
        "class": "java.lang.IllegalStateException",
        "message": "boom",
        "cause": {
            "class": "java.io.IOException",
            "message": "disk gone",
            "cause": {"class": "java.io.EOFException", "message": "at byte 7"},
        },
        "suppressed": [
            {"class": "java.lang.IllegalArgumentException", "message": "cleanup failed"}
        ],
    }


@pytest.mark.parametrize(("declared", "items"), ARRAY_VALUES, ids=[v[0] for v in ARRAY_VALUES])
def test_arrays_of_every_kind_both_ways(
    agent: AgentProcess, declared: str, items: list[object]
) -> None:
    """Written as hessian-lite writes each kind (test_hessian2_java.py "arrays"): the
    provider receives that array, and its result reads back as the JSON sent."""
    java = declared.removeprefix("java.lang.")
    with agent.client() as client:
        received, _ = call(client, "jdkReceived", {"types": [declared], "args": [items]})
        echoed, _ = call(client, "jdk", {"types": [declared], "args": [items]})
    assert received.status_code == 200, received.text
    shown = ", ".join(_java_text(item, declared) for item in items)
    assert received.json()["result"] == f"{java} [{shown}]"
    assert echoed.status_code == 200, echoed.text
    assert echoed.json()["result"] == [
        float(i) if "double" in declared.lower() or "float" in declared else i for i in items
    ]


def _java_text(item: object, declared: str) -> str:
    if item is None:
        return "null"
    if isinstance(item, bool):
        return "true" if item else "false"
    if "float" in declared or "ouble" in declared:
        return str(float(item))  # type: ignore[arg-type]
    return str(item)


def test_an_array_element_of_the_wrong_kind_is_400_with_its_index(agent: AgentProcess) -> None:
    with agent.client() as client:
        response, _ = call(client, "jdkReceived", {"types": ["short[]"], "args": [[1, 40000]]})
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["path"] == "body.args[0][1]"
