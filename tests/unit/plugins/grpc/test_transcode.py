from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from agent.errors import InvalidRequest
from plugins.grpc.reflection import MethodInfo, load_descriptor_set
from plugins.grpc.transcode import NoRoute, Route, match, reply_json, request_message, routes


@pytest.fixture(scope="module")
def table(library_descriptor_set: Path) -> list[Route]:
    return routes(load_descriptor_set(str(library_descriptor_set), "meshtest.library.Library"))


def build(table: list[Route], method: str, target: str, body: Any = None) -> dict[str, Any]:
    path, _, query = target.partition("?")
    route, variables = match(table, method, path)
    pairs = [tuple(p.split("=", 1)) for p in query.split("&") if p]
    raw = b"" if body is None else json.dumps(body).encode()
    message = request_message(route, variables, pairs, raw)  # type: ignore[arg-type]
    # What the agent sends must parse as the method's input.
    json_format.ParseDict(message, route.info.input())
    return message


def test_declaration_order_and_methods(table: list[Route]) -> None:
    assert [(r.method, r.binding.method) for r in table][:3] == [
        ("GetBook", "GET"),
        ("GetBook", "GET"),
        ("GetBookTitle", "GET"),
    ]
    assert "Secret" not in {r.method for r in table}


def test_path_variables(table: list[Route]) -> None:
    assert build(table, "GET", "/v1/shelves/1/books/2") == {"name": "shelves/1/books/2"}
    assert build(table, "GET", "/v1/books/a/b/c") == {"name": "a/b/c"}


def test_query_converted_by_field_type(table: list[Route]) -> None:
    message = build(
        table, "GET", "/v1/shelves/1/books?pageSize=3&available_only=true&tags=a&tags=b"
    )
    assert message == {
        "parent": "shelves/1",
        "page_size": 3,
        "available_only": True,
        "tags": ["a", "b"],
    }


def test_query_cannot_override_the_path(table: list[Route]) -> None:
    assert build(table, "GET", "/v1/shelves/1/books?parent=shelves/9")["parent"] == "shelves/1"


def test_body_field_and_nested_path_variable(table: list[Route]) -> None:
    message = build(table, "PATCH", "/v1/shelves/1/books/2?update_mask=title", {"title": "T"})
    assert message == {
        "book": {"title": "T", "name": "shelves/1/books/2"},
        "update_mask": "title",
    }


def test_whole_body_and_verb(table: list[Route]) -> None:
    body = {"name": "ignored", "otherShelf": "shelves/2"}
    message = build(table, "POST", "/v1/shelves/1/books/3:move?x=1", body)
    # The path wins over the body; query parameters are not read with body "*".
    assert message == {"name": "shelves/1/books/3", "otherShelf": "shelves/2"}


def test_json_name_in_the_body_is_one_field_with_ours(table: list[Route]) -> None:
    route, variables = match(table, "POST", "/v1/shelves/1/books")
    message = request_message(route, variables, [("request_id", "r")], b'{"pages": 3}')
    assert message == {"parent": "shelves/1", "book": {"pages": 3}, "request_id": "r"}


@pytest.mark.parametrize(
    ("method", "target", "body", "where"),
    [
        ("GET", "/v1/shelves/1/books?page_size=x", None, "query.page_size"),
        ("GET", "/v1/shelves/1/books?available_only=maybe", None, "query.available_only"),
        ("GET", "/v1/shelves/1/books?nope=1", None, "query.nope"),
        ("GET", "/v1/shelves/1/books?author.x=1", None, "query.author.x"),
        ("GET", "/v1/shelves/1/books/2", {"a": 1}, "body"),
        ("POST", "/v1/shelves/1/books/3:move", [1, 2], "body"),
    ],
)
def test_bad_requests_name_the_part(
    table: list[Route], method: str, target: str, body: Any, where: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        build(table, method, target, body)
    assert caught.value.errors[0][0] == where


def test_not_json_body(table: list[Route]) -> None:
    route, variables = match(table, "POST", "/v1/shelves/1/books")
    with pytest.raises(InvalidRequest, match="not JSON"):
        request_message(route, variables, [], b"{")


def test_no_route_and_wrong_method(table: list[Route]) -> None:
    with pytest.raises(NoRoute) as caught:
        match(table, "GET", "/v2/x")
    assert caught.value.status == 404
    with pytest.raises(NoRoute) as caught:
        match(table, "PUT", "/v1/shelves/1/books/2")
    assert (caught.value.status, caught.value.allowed) == (405, ("DELETE", "GET", "PATCH"))


def test_response_body(table: list[Route]) -> None:
    title = next(r for r in table if r.method == "GetBookTitle")
    assert reply_json(title, {"name": "n", "title": "T"}) == "T"
    whole = next(r for r in table if r.method == "GetBook")
    assert reply_json(whole, {"title": "T"}) == {"title": "T"}


def test_client_streaming_methods_get_no_route() -> None:
    from plugins.grpc.httprule import Binding

    info = MethodInfo("/s/M", object, object, True, False, (Binding("POST", "/v1/m", "*"),))
    assert routes({"M": info}) == []
