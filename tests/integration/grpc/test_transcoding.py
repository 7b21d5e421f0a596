"""HTTP/JSON → gRPC transcoding by google.api.http rules, and gRPC on the same port.

A real grpcio server of meshtest.library.Library (tests/fixtures/grpc/library.proto, with
annotations) behind the agent as a process; HTTP/1.1 requests (httpx) and gRPC calls
(grpcio) go to the one listener port. The rules come from the server's reflection, and,
for a second server without reflection, from a descriptor set named in the config.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import h2.errors
import httpx
import pytest

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.grpc_peer import (
    LIBRARY,
    LIBRARY_IMPORTS,
    LIBRARY_PROTO,
    LIBRARY_SERVER,
    EchoServer,
    generate_stubs,
)
from tests.fixtures.processes import free_port
from tests.support.grpc_h2 import rapid_reset

pytestmark = pytest.mark.integration

DESCRIBED = "library-by-descriptor-set"
MAX_MESSAGE = 64 * 1024


@pytest.fixture(scope="module")
def library_stubs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    stubs = generate_stubs(
        tmp_path_factory.mktemp("library-stubs"), LIBRARY_PROTO, *LIBRARY_IMPORTS
    )
    sys.path.insert(0, str(stubs))
    return stubs


@pytest.fixture(scope="module")
def descriptor_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import importlib.resources

    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("descriptors") / "library.pb"
    status = protoc.main(
        [
            "protoc",
            f"-I{LIBRARY_PROTO.parent}",
            f"-I{importlib.resources.files('grpc_tools') / '_proto'}",
            f"--descriptor_set_out={out}",
            "--include_imports",
            str(LIBRARY_PROTO),
        ]
    )
    assert status == 0
    return out


@pytest.fixture(scope="module")
def library_agent(
    tmp_path_factory: pytest.TempPathFactory, library_stubs: Path, descriptor_set: Path
) -> Iterator[AgentProcess]:
    workdir = tmp_path_factory.mktemp("library")
    servers = [
        EchoServer(workdir, library_stubs, "lib-a", script=LIBRARY_SERVER),
        EchoServer(workdir, library_stubs, "lib-b", "--no-reflection", script=LIBRARY_SERVER),
    ]
    service = {"protocol": "grpc", "health": {"enabled": False}}
    listener = {
        "protocol": "grpc",
        "config": {"http_transcoding": True, "max_message_bytes": MAX_MESSAGE},
    }
    config = {
        "services": [
            {"name": LIBRARY, **service},
            {
                "name": DESCRIBED,
                **service,
                "options": {"grpc_service": LIBRARY, "descriptor_set": str(descriptor_set)},
            },
        ],
        "listeners": [
            {"port": free_port(), "service": LIBRARY, **listener},
            {"port": free_port(), "service": DESCRIBED, **listener},
        ],
        "drain_timeout_s": 2,
    }
    agent = None
    try:
        for server in servers:
            server.start()
        agent = start_agent(workdir, config)
        with agent.client() as client:
            for name, server in ((LIBRARY, servers[0]), (DESCRIBED, servers[1])):
                client.put(
                    f"/v1/registrations/{name}/{server.name}",
                    json={"host": "127.0.0.1", "port": server.port},
                ).raise_for_status()
        agent.wait_endpoints(LIBRARY, 1)
        agent.wait_endpoints(DESCRIBED, 1)
        yield agent
    finally:
        if agent is not None:
            agent.stop()
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def rest(library_agent: AgentProcess) -> Iterator[httpx.Client]:
    """One keep-alive HTTP/1.1 client on the listener's port (every test's requests reuse it)."""
    base = f"http://127.0.0.1:{library_agent.listener_port(0)}"
    with httpx.Client(base_url=base, timeout=10) as client:
        yield client


def test_get_with_path_template(rest: httpx.Client) -> None:
    response = rest.get("/v1/shelves/1/books/1")
    assert response.status_code == 200, response.text
    book = response.json()
    # protobuf's JSON mapping: int64 as text, camelCase names.
    assert (book["name"], book["title"], book["pages"], book["tags"]) == (
        "shelves/1/books/1",
        "Dune",
        "412",
        ["sf"],
    )
    assert response.headers["x-meshagent-endpoint"] == "lib-a"


def test_additional_binding_with_double_wildcard(rest: httpx.Client) -> None:
    response = rest.get("/v1/books/shelves/1/books/2")
    assert response.status_code == 200, response.text
    assert response.json()["title"] == "Emma"


def test_response_body_field(rest: httpx.Client) -> None:
    response = rest.get("/v1/shelves/1/books/1/title")
    assert response.status_code == 200, response.text
    assert response.json() == "Dune"


@pytest.mark.parametrize(
    ("query", "titles"),
    [
        ("", ["Dune", "Emma"]),
        ("?author=Austen", ["Emma"]),
        ("?availableOnly=true", ["Emma"]),
        ("?tags=sf&tags=sf", ["Dune"]),
        ("?page_size=1", ["Dune"]),
        ("?parent=shelves/2", ["Dune", "Emma"]),  # bound by the path: ignored
    ],
)
def test_query_parameters(rest: httpx.Client, query: str, titles: list[str]) -> None:
    response = rest.get(f"/v1/shelves/1/books{query}")
    assert response.status_code == 200, response.text
    assert [b["title"] for b in response.json()["books"]] == titles


@pytest.mark.parametrize(
    ("query", "path"),
    [
        ("?page_size=ten", "query.page_size"),
        ("?available_only=yes", "query.available_only"),
        ("?no_such=1", "query.no_such"),
    ],
)
def test_bad_query_parameter_is_400(rest: httpx.Client, query: str, path: str) -> None:
    response = rest.get(f"/v1/shelves/1/books{query}")
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["path"] == path


def test_body_field_and_path_variable(rest: httpx.Client) -> None:
    response = rest.post("/v1/shelves/7/books", json={"title": "New", "pages": "10"})
    assert response.status_code == 200, response.text
    created = response.json()
    assert created["name"].startswith("shelves/7/books/")
    assert created["pages"] == "10"
    fetched = rest.get(f"/v1/{created['name']}")
    assert fetched.json()["title"] == "New"


def test_nested_path_variable_with_body_field(rest: httpx.Client) -> None:
    response = rest.patch("/v1/shelves/1/books/2", json={"author": "J. Austen"})
    assert response.status_code == 200, response.text
    book = response.json()
    # The name came from the path into book.name; the body filled the rest of book.
    assert (book["name"], book["title"], book["author"]) == (
        "shelves/1/books/2",
        "Emma",
        "J. Austen",
    )


def test_verb_and_whole_body_where_the_path_wins(rest: httpx.Client) -> None:
    body = {"name": "shelves/1/books/999", "otherShelf": "shelves/9"}
    response = rest.post("/v1/shelves/1/books/1:move", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "shelves/9/books/1"


def test_grpc_status_becomes_http_status(rest: httpx.Client) -> None:
    missing = rest.delete("/v1/shelves/1/books/404")
    assert missing.status_code == 404, missing.text
    assert missing.headers["content-type"] == "application/problem+json"
    details = missing.json()["exception"]["details"]
    assert (details["grpc_status"], details["grpc_code"]) == ("NOT_FOUND", 5)
    assert details["grpc_message"] == "no book shelves/1/books/404"
    invalid = rest.get("/v1/shelves/1/books?pageSize=-1")
    assert invalid.status_code == 400, invalid.text
    assert invalid.json()["exception"]["details"]["grpc_status"] == "INVALID_ARGUMENT"


def test_grpc_metadata_headers(rest: httpx.Client) -> None:
    response = rest.get("/v1/shelves/1/books/1", headers={"Grpc-Metadata-X-Echo": "from-http"})
    assert response.json()["author"] == "from-http"


def test_no_route_and_wrong_method(rest: httpx.Client) -> None:
    assert rest.get("/v2/nothing").status_code == 404
    wrong = rest.put("/v1/shelves/1/books/1", json={})
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "DELETE, GET, PATCH"


def test_bad_bodies(rest: httpx.Client) -> None:
    not_json = rest.post("/v1/shelves/1/books", content=b"{nope")
    assert not_json.status_code == 400
    assert not_json.json()["errors"][0]["path"] == "body"
    unwanted = rest.request("GET", "/v1/shelves/1/books/1", content=b'{"a": 1}')
    assert unwanted.status_code == 400
    wrong_field = rest.post("/v1/shelves/1/books", json={"pages": "many"})
    assert wrong_field.status_code == 400


def test_body_over_the_limit_is_413_and_the_port_serves_on(
    library_agent: AgentProcess, rest: httpx.Client
) -> None:
    port = library_agent.listener_port(0)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = (
            f"POST /v1/shelves/1/books HTTP/1.1\r\nhost: x\r\n"
            f"content-length: {MAX_MESSAGE * 2}\r\n\r\n"
        ).encode()
        sock.sendall(head + b"x" * (MAX_MESSAGE + 4096))
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert rest.get("/v1/shelves/1/books/1").status_code == 200


def test_malformed_http_is_400(library_agent: AgentProcess) -> None:
    with socket.create_connection(("127.0.0.1", library_agent.listener_port(0)), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 400 ")


async def test_grpc_on_the_same_port(library_agent: AgentProcess, library_stubs: Path) -> None:
    import library_pb2 as pb
    import library_pb2_grpc

    address = f"127.0.0.1:{library_agent.listener_port(0)}"
    async with grpc.aio.insecure_channel(address) as channel:
        stub = library_pb2_grpc.LibraryStub(channel)
        book = await stub.GetBook(pb.GetBookRequest(name="shelves/1/books/1"), timeout=10)
        assert book.title == "Dune"
        # A method without an HTTP rule is still there for gRPC clients.
        assert (await stub.Secret(pb.GetBookRequest(), timeout=10)).name == "secret"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetBook(pb.GetBookRequest(name="none"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_http2_on_the_transcoding_port_has_the_relay_defences(
    library_agent: AgentProcess, rest: httpx.Client
) -> None:
    """Issue 25: HTTP/2 on this port went to a grpc.aio server with no rapid-reset limit
    (20,000 HEADERS + RST_STREAM pairs, no GOAWAY); it is the h2 relay's now."""
    code, _sent = rapid_reset(library_agent.listener_port(0), 2_000)
    assert code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert "over 100 stream resets per second (rapid reset)" in library_agent.process.output()
    assert rest.get("/v1/shelves/1/books/1").status_code == 200


def described(library_agent: AgentProcess) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{library_agent.listener_port(1)}", timeout=10)


def test_rules_from_a_descriptor_set_without_reflection(library_agent: AgentProcess) -> None:
    with described(library_agent) as client:
        response = client.get("/v1/shelves/1/books/2/title")
    assert response.status_code == 200, response.text
    assert response.json() == "Emma"
    assert response.headers["x-meshagent-endpoint"] == "lib-b"


def test_json_invoke_by_descriptor_set(library_agent: AgentProcess) -> None:
    with library_agent.client() as client:
        body: dict[str, Any] = {"message": {"name": "shelves/1/books/1"}}
        response = client.post(f"/v1/invoke/grpc/{DESCRIBED}/GetBook", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["result"]["title"] == "Dune"
