"""JSON invocation of gRPC methods through the agent's API, by server reflection."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.fixtures.agent_process import AgentProcess
from tests.fixtures.grpc_peer import (
    BARE,
    ECHO,
    NOBODY,
    EchoServer,
    cancelled_calls,
    wait_cancelled,
)

pytestmark = pytest.mark.integration


def invoke(agent: AgentProcess, method: str, body: Any, service: str = ECHO) -> httpx.Response:
    with agent.client() as client:
        return client.post(f"/v1/invoke/grpc/{service}/{method}", json=body)


def test_unary(grpc_agent: AgentProcess) -> None:
    response = invoke(
        grpc_agent, "Unary", {"message": {"message": "hi"}, "metadata": {"x-echo": "m"}}
    )
    assert response.status_code == 200, response.text
    outcome = response.json()
    assert outcome["result"]["message"] == "hi"
    assert outcome["result"]["echoed"] == "m"
    # Fields at their zero value are written too, in protobuf's JSON names (int64 as text).
    assert outcome["result"]["index"] == 0
    assert 0 < int(outcome["result"]["deadlineMs"]) <= 5100
    assert outcome["endpoint"] in {"echo-a", "echo-b"}


def test_an_any_of_a_type_the_methods_files_lack_is_found_by_reflection(
    grpc_agent: AgentProcess,
) -> None:
    """EchoReply.attached holds a meshtest.extra.Note, from a file echo.proto does not
    import: the agent asks the provider's reflection for it (it was a 502, issue 23)."""
    for _ in range(2):  # the second time the type is known already
        response = invoke(grpc_agent, "Unary", {"message": {"message": "attach"}})
        assert response.status_code == 200, response.text
        assert response.json()["result"]["attached"] == {
            "@type": "type.googleapis.com/meshtest.extra.Note",
            "text": "from the provider",
            "count": str(2**40),
        }


def test_a_status_carries_its_details(grpc_agent: AgentProcess) -> None:
    """grpc-status-details-bin (a google.rpc.Status) in the problem: a google.rpc error
    type, a type the provider's reflection gives, and an unknown one as bytes."""
    response = invoke(grpc_agent, "Unary", {"message": {"message": "with details", "code": 3}})
    assert response.status_code == 400, response.text
    details = response.json()["exception"]["details"]
    assert details["grpc_status"] == "INVALID_ARGUMENT"
    assert details["grpc_status_details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": "message", "description": "rude"}],
        },
        {"@type": "type.googleapis.com/meshtest.extra.Note", "text": "see me", "count": "3"},
        {"@type": "type.googleapis.com/nobody.Knows", "value": "CAE="},
    ]


def test_fully_qualified_method_name(grpc_agent: AgentProcess) -> None:
    response = invoke(grpc_agent, "meshtest.Echo.Unary", {"message": {"message": "fq"}})
    assert response.status_code == 200, response.text
    assert response.json()["result"]["message"] == "fq"


def test_server_streaming_is_ndjson(grpc_agent: AgentProcess) -> None:
    response = invoke(grpc_agent, "ServerStream", {"message": {"message": "s", "count": 3}})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [line["index"] for line in lines] == [0, 1, 2]
    assert response.headers["x-meshagent-endpoint"] in {"echo-a", "echo-b"}


def test_error_while_streaming_is_a_last_line(grpc_agent: AgentProcess) -> None:
    body = {"message": {"message": "gone", "count": 2, "code": 14}}
    response = invoke(grpc_agent, "ServerStream", body)
    assert response.status_code == 200
    *items, last = [json.loads(line) for line in response.text.splitlines()]
    assert [item["index"] for item in items] == [0, 1]
    assert last["error"]["status"] == 503
    assert last["error"]["exception"]["details"]["grpc_status"] == "UNAVAILABLE"


def test_client_streaming(grpc_agent: AgentProcess) -> None:
    body = {"messages": [{"message": "a"}, {"message": "b"}]}
    response = invoke(grpc_agent, "ClientStream", body)
    assert response.status_code == 200, response.text
    assert response.json()["result"]["message"] == "a,b"


@pytest.mark.parametrize(
    ("code", "name", "http"),
    [(5, "NOT_FOUND", 404), (3, "INVALID_ARGUMENT", 400), (7, "PERMISSION_DENIED", 403)],
)
def test_grpc_status_maps_to_http(
    grpc_agent: AgentProcess, code: int, name: str, http: int
) -> None:
    response = invoke(grpc_agent, "Unary", {"message": {"message": "why", "code": code}})
    assert response.status_code == http
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["exception"]["details"] == {
        "grpc_code": code,
        "grpc_status": name,
        "grpc_message": "why",
    }
    assert "why" in problem["detail"]


def test_deadline(grpc_agent: AgentProcess) -> None:
    body = {"message": {"message": "slow", "delay_ms": 3000}, "timeout_ms": 200}
    response = invoke(grpc_agent, "Unary", body)
    assert response.status_code == 504
    assert response.json()["exception"]["details"]["grpc_status"] == "DEADLINE_EXCEEDED"


@pytest.mark.parametrize("method", ["Nope", "no.Such.Method"])
def test_unknown_method_is_unimplemented(grpc_agent: AgentProcess, method: str) -> None:
    response = invoke(grpc_agent, method, {})
    assert response.status_code == 501
    assert response.json()["exception"]["details"]["grpc_status"] == "UNIMPLEMENTED"


def test_bad_message_field_is_a_400_with_its_path(grpc_agent: AgentProcess) -> None:
    response = invoke(grpc_agent, "Unary", {"message": {"nosuchfield": 1}})
    assert response.status_code == 400
    assert response.json()["errors"][0]["path"] == "body.message"
    response = invoke(grpc_agent, "Unary", {"message": {"count": "many"}})
    assert response.status_code == 400
    response = invoke(grpc_agent, "Unary", {"messages": [{}]})
    assert response.status_code == 400
    assert response.json()["errors"][0]["path"] == "body.messages"


@pytest.mark.parametrize(
    ("method", "body", "path"),
    [
        # Each reached the provider as something else (issue 23): 1000, 12, empty bytes,
        # and a client stream of no message at all (answered 200).
        ("Unary", {"message": {"count": "1_000"}}, "body.message.count"),
        ("Unary", {"message": {"count": "١٢"}}, "body.message.count"),
        ("Unary", {"message": {"payload": "not base64!"}}, "body.message.payload"),
        ("ClientStream", {"message": {"message": "a"}}, "body.message"),
    ],
)
def test_values_protobufs_json_parser_would_take_wrongly_are_400(
    grpc_agent: AgentProcess, method: str, body: dict[str, Any], path: str
) -> None:
    response = invoke(grpc_agent, method, body)
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["path"] == path
    # The same values written as protobuf means them go through.
    fine = invoke(grpc_agent, "Unary", {"message": {"count": "12", "payload": "AAEC"}})
    assert fine.status_code == 200, fine.text


def test_no_provider_is_503(grpc_agent: AgentProcess) -> None:
    response = invoke(grpc_agent, "Unary", {}, service=NOBODY)
    assert response.status_code == 503


def test_provider_without_reflection_is_502(grpc_agent: AgentProcess) -> None:
    response = invoke(grpc_agent, "Unary", {"message": {"message": "x"}}, service=BARE)
    assert response.status_code == 502
    assert "reflection" in response.json()["detail"]


async def test_client_hanging_up_mid_stream_cancels_the_provider_call(
    grpc_agent: AgentProcess, echo_servers: list[EchoServer]
) -> None:
    before = await cancelled_calls(echo_servers)
    body = {"message": {"message": "long", "count": 100_000, "delay_ms": 10}}
    async with (
        grpc_agent.async_client() as client,
        client.stream("POST", f"/v1/invoke/grpc/{ECHO}/ServerStream", json=body) as response,
    ):
        assert response.status_code == 200
        lines = response.aiter_lines()
        assert json.loads(await anext(lines))["index"] == 0
        assert json.loads(await anext(lines))["index"] == 1
    await wait_cancelled(echo_servers, before)
