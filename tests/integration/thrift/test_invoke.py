"""JSON → the agent's OpenAPI → thriftpy2 servers, arguments and results mapped by the IDL."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from tests.fixtures.agent_process import AgentProcess
from tests.fixtures.thrift_server import EMPTY, FORMS

pytestmark = pytest.mark.integration


def invoke(agent: AgentProcess, service: str, method: str, body: dict[str, Any]) -> Any:
    # json.dumps escapes non-ASCII: a lone surrogate goes as JSON can say it ("\ud800").
    content = json.dumps(body)
    with agent.client() as http:
        return http.post(
            f"/v1/invoke/thrift/{service}/{method}",
            content=content,
            headers={"content-type": "application/json"},
        )


ITEM = {
    "name": "n",
    "id": str(2**62),
    "blob": base64.b64encode(bytes(range(256))).decode(),
    "numbers": [1, -2, 2**31 - 1],
    "scores": {"a": 0.5, "b": -1},
    "tags": ["t"],
    "color": "BLUE",
    "flag": True,
    "children": [{"name": "child", "id": 7}],
    "small": -3,
    "tiny": 9,
    "flags": {"3": [True, False], "-1": []},
    # Keys JSON carries as text, and a double JSON cannot say (issue 23).
    "switches": {"true": "on", "false": "off"},
    "places": {'{"x":1,"y":-2}': "here"},
    "ratio": "NaN",
    "shape": {"point": {"x": 3, "y": 4}},
}


@pytest.mark.parametrize("form", list(FORMS))
def test_every_type_round_trips(agent: AgentProcess, form: str) -> None:
    response = invoke(agent, form, "echo", {"args": {"item": ITEM}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["result"] == {**ITEM, "scores": {"a": 0.5, "b": -1.0}}
    assert body["endpoint"]
    assert invoke(agent, form, "ping", {}).json()["result"] == "pong"
    # i64 past JavaScript's safe range comes back as a string; inside it, as a number.
    added = invoke(agent, form, "add", {"args": {"a": str(2**62), "b": 2**53}}).json()
    assert added["result"] == str(2**62 + 2**53)
    assert invoke(agent, form, "add", {"args": {"a": 1, "b": 2}}).json()["result"] == 3


def test_declared_exception_is_a_502_with_its_type(agent: AgentProcess) -> None:
    response = invoke(agent, "framed-binary", "find", {"args": {"name": "missing"}})
    assert response.status_code == 502
    exception = response.json()["exception"]
    assert exception["type"] == "NotFound"
    assert exception["details"] == {"message": "no missing", "code": 404}


def test_oneway_returns_at_once(agent: AgentProcess) -> None:
    response = invoke(agent, "framed-compact", "record", {"args": {"note": "hi"}})
    assert response.status_code == 200
    assert response.json()["result"] is None


def test_unknown_method_lists_the_idl(agent: AgentProcess) -> None:
    response = invoke(agent, "framed-binary", "nope", {})
    assert response.status_code == 404
    assert "ping, echo, add, slow, find, whoami, record, recorded" in response.json()["detail"]


@pytest.mark.parametrize(
    ("args", "path"),
    [
        ({"item": {**ITEM, "color": "PURPLE"}}, "body.args.item.color"),
        ({"item": {**ITEM, "blob": "!!"}}, "body.args.item.blob"),
        ({"item": {**ITEM, "tiny": 300}}, "body.args.item.tiny"),
        ({"item": {**ITEM, "extra": 1}}, "body.args.item.extra"),
        ({"item": {"id": 1}}, "body.args.item.name"),
        ({"item": {**ITEM, "flags": {"x": []}}}, "body.args.item.flags.x"),
        ({"item": {**ITEM, "numbers": ["1"]}}, "body.args.item.numbers[0]"),
        # Each of these was a 500 with a traceback (issue 23).
        ({"item": {**ITEM, "ratio": 10**400}}, "body.args.item.ratio"),
        ({"item": {**ITEM, "name": "\ud800"}}, "body.args.item.name"),
        ({"item": {**ITEM, "color": "mro"}}, "body.args.item.color"),
        ({"item": {**ITEM, "tags": ["a", "a"]}}, "body.args.item.tags[1]"),
        # A union takes exactly one field (issue 23).
        ({"item": {**ITEM, "shape": {}}}, "body.args.item.shape"),
        ({"item": {**ITEM, "shape": {"radius": 1, "label": "x"}}}, "body.args.item.shape"),
        ({"item": {**ITEM, "shape": {"radius": None}}}, "body.args.item.shape"),
    ],
)
def test_bad_arguments_name_their_path(agent: AgentProcess, args: Any, path: str) -> None:
    response = invoke(agent, "framed-binary", "echo", {"args": args})
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["path"] == path


def test_timeout_and_no_provider(agent: AgentProcess) -> None:
    slow = invoke(agent, "buffered-binary", "slow", {"args": {"ms": 800}, "timeout_ms": 200})
    assert slow.status_code == 504
    # The provider still works through its slow call, and calls pooled behind it wait
    # (thriftpy2 answers one connection's calls in turn): let it finish for later tests.
    agent.process.wait_for(
        lambda: (
            {invoke(agent, "buffered-binary", "whoami", {}).json().get("result") for _ in range(4)}
            == {"buffered-binary-a", "buffered-binary-b"}
            or None
        ),
        10,
    )
    assert invoke(agent, EMPTY, "ping", {}).status_code == 503


def test_base_at_field_255_carries_the_context(agent: AgentProcess) -> None:
    before_ms = time.time() * 1000
    response = invoke(agent, "framed-binary", "context", {"args": {"note": "n"}, "timeout_ms": 700})
    spent_ms = time.time() * 1000 - before_ms
    assert response.status_code == 200, response.text
    body = response.json()
    seen = body["result"]
    assert seen["Caller"] == "json-app"  # the service's ``caller`` option
    assert seen["LogID"] == body["attachments"]["log_id"] and len(seen["LogID"]) == 32
    # The budget left when the attempt was sent: 700 ms less what the call had spent.
    assert 700 - spent_ms <= int(seen["timeout_ms"]) <= 700
    assert abs(int(seen["deadline_ms"]) - time.time() * 1000) < 60_000
    # A Base given by the caller is sent as given.
    given = {"note": "n", "Base": {"LogID": "mine", "Caller": "me"}}
    response = invoke(agent, "framed-binary", "context", {"args": given})
    assert response.json()["result"] == {"LogID": "mine", "Caller": "me"}
    assert response.json()["attachments"] == {}
