from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agent.api.app import create_app
from agent.config import parse_config
from agent.runtime.agent import Agent
from tests.fixtures.net import async_wait_until


def config(**admin: Any) -> dict[str, Any]:
    return {
        "admin": {"port": 0, "max_body_bytes": 2048, **admin},
        "registries": [
            {
                "name": "local",
                "type": "local",
                "config": {"services": {"echo": [{"host": "127.0.0.1", "port": 9}]}},
            }
        ],
        "services": [{"name": "echo", "health": {"enabled": False}}],
    }


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    agent = Agent(parse_config(config()))
    await agent.start()
    yield agent
    await agent.stop()


def client(agent: Agent, peer: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(agent), client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://agent")


async def test_health_and_readiness(agent: Agent) -> None:
    async with client(agent) as api:
        assert (await api.get("/healthz")).json() == {"status": "ok"}
        ready = await api.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["ready"] is True and ready.json()["reasons"] == []
        (registry,) = ready.json()["registries"]
        assert registry["name"] == "local" and registry["connected"] is True
        agent.draining = True
        not_ready = await api.get("/readyz")
        assert not_ready.status_code == 503 and not_ready.json()["reasons"] == ["draining"]


async def test_register_list_and_deregister(agent: Agent) -> None:
    async with client(agent) as api:
        body = {"host": "127.0.0.1", "port": 9100, "weight": 20, "metadata": {"zone": "a"}}
        created = await api.put("/v1/registrations/echo/app-1", json=body)
        assert created.status_code == 201
        assert created.json()["registry"] == "local"
        assert (await api.put("/v1/registrations/echo/app-1", json=body)).status_code == 200

        async def mine_listed() -> list[dict[str, Any]]:
            instances = (await api.get("/v1/services/echo/instances")).json()
            return [i for i in instances if i["id"] == "app-1"]

        # Discovery is a stream: the cluster applies the registry's update asynchronously.
        mine = await async_wait_until(mine_listed, what="registration in the cluster")
        assert isinstance(mine, list)
        assert mine and mine[0]["weight"] == 20 and mine[0]["metadata"]["zone"] == "a"
        assert mine[0]["healthy"] and not mine[0]["ejected"]
        listed = (await api.get("/v1/registrations")).json()
        assert [r["instance_id"] for r in listed] == ["app-1"]
        await async_wait_until(lambda: len(agent.clusters["echo"].hosts()) == 2)
        services = (await api.get("/v1/services")).json()
        assert services == [
            {"name": "echo", "protocol": "tcp", "registry": "local", "endpoints": 2, "available": 2}
        ]
        assert (await api.delete("/v1/registrations/echo/app-1")).status_code == 204
        gone = await api.delete("/v1/registrations/echo/app-1")
        assert gone.status_code == 404
        assert gone.headers["content-type"] == "application/problem+json"

        async def only_static() -> bool:
            ids = [i["id"] for i in (await api.get("/v1/services/echo/instances")).json()]
            return ids == ["127.0.0.1:9"]

        await async_wait_until(only_static, what="registration removed from the cluster")


async def test_no_registration_while_draining(agent: Agent) -> None:
    # The drain has withdrawn every registration; a PUT now (a new one or a TTL renewal)
    # would advertise the app again until the process exits.
    async with client(agent) as api:
        body = {"host": "127.0.0.1", "port": 9100, "ttl_s": 30}
        assert (await api.put("/v1/registrations/echo/app-1", json=body)).status_code == 201
        agent.draining = True
        await agent.registrations.delete_all()
        refused = await api.put("/v1/registrations/echo/app-1", json=body)
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/problem+json"
        assert "draining" in refused.json()["detail"]
        assert (await api.get("/v1/registrations")).json() == []
        assert [h.id for h in agent.clusters["echo"].hosts()] == ["127.0.0.1:9"]


async def test_bad_input_gets_problem_details_and_loses_nothing(agent: Agent) -> None:
    async with client(agent) as api:
        body = {"host": "127.0.0.1", "port": 9100}
        assert (await api.put("/v1/registrations/echo/keep", json=body)).status_code == 201

        unknown = await api.put("/v1/registrations/nope/x", json=body)
        assert unknown.status_code == 404
        assert unknown.json()["detail"] == "unknown service 'nope'; configured: echo"

        broken = await api.put(
            "/v1/registrations/echo/x",
            content=b'{"host": ',
            headers={"content-type": "application/json"},
        )
        assert broken.status_code == 400
        assert "JSON decode error" in broken.json()["detail"]

        invalid = await api.put("/v1/registrations/echo/x", json={"host": "h", "port": 0})
        assert invalid.status_code == 400
        assert invalid.json()["errors"][0]["path"] == "body.port"

        extra = await api.put("/v1/registrations/echo/x", json={**body, "color": "red"})
        assert extra.status_code == 400

        huge = await api.put(
            "/v1/registrations/echo/x", json={**body, "metadata": {"k": "v" * 5000}}
        )
        assert huge.status_code == 413
        assert huge.json()["title"] == "Content Too Large"

        listed = (await api.get("/v1/registrations")).json()
        assert [r["instance_id"] for r in listed] == ["keep"]


async def test_streamed_body_over_the_limit_is_refused(agent: Agent) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    async with client(agent) as api:
        response = await api.put(
            "/v1/registrations/echo/x",
            content=chunks(),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 413


async def test_writes_from_the_network_need_configuration(agent: Agent) -> None:
    body = {"host": "10.1.1.1", "port": 80}
    async with client(agent, peer="192.0.2.10") as remote:
        refused = await remote.put("/v1/registrations/echo/r", json=body)
        assert refused.status_code == 403
        assert (await remote.get("/v1/services")).status_code == 200
    open_agent = Agent(parse_config(config(allow_remote_writes=True)))
    async with client(open_agent, peer="192.0.2.10") as remote:
        assert (await remote.put("/v1/registrations/echo/r", json=body)).status_code == 201


async def test_the_network_may_not_invoke_with_any_method_unless_configured() -> None:
    # Issue 25: with the API bound wide, a remote GET on /v1/invoke/http/... reached the
    # provider as if the local app had made it (only non-GET methods were guarded).
    open_writes = Agent(parse_config(config(allow_remote_writes=True)))
    async with client(open_writes, peer="192.0.2.10") as remote:
        for method in ("GET", "OPTIONS", "HEAD", "POST", "DELETE"):
            refused = await remote.request(method, "/v1/invoke/http/echo/anything")
            assert refused.status_code == 403, method
            if method != "HEAD":
                assert "allow_remote_invoke" in refused.json()["detail"]
    open_invoke = Agent(parse_config(config(allow_remote_invoke=True)))
    async with client(open_invoke, peer="192.0.2.10") as remote:
        # Past the guard: the service is not an HTTP one, so the invocation itself answers.
        passed = await remote.get("/v1/invoke/http/echo/anything")
        assert passed.status_code != 403


async def test_clusters_and_registries_views(agent: Agent) -> None:
    async with client(agent) as api:
        (cluster,) = (await api.get("/v1/clusters")).json()
        assert cluster["name"] == "echo" and cluster["lb_policy"] == "round_robin"
        assert cluster["initialized"] and not cluster["panic"]
        assert cluster["registry"]["connected"]
        (endpoint,) = cluster["endpoints"]
        assert endpoint["id"] == "127.0.0.1:9" and endpoint["connect_failures"] == 0
        (registry,) = (await api.get("/v1/registries")).json()
        assert registry["name"] == "local" and registry["connected"]
        assert (await api.get("/v1/services/nope/instances")).status_code == 404


async def test_locality_levels_are_shown_per_endpoint_and_per_level() -> None:
    settings = config()
    settings["locality"] = {"dc": "a", "zone": "a-1"}
    settings["registries"][0]["config"]["services"]["echo"] = [
        {"host": "127.0.0.1", "port": 9, "metadata": {"zone": "a-1"}},
        {"host": "127.0.0.1", "port": 10, "metadata": {"zone": "a-2"}},
        {"host": "127.0.0.2", "port": 9, "metadata": {"dc": "b"}},
    ]
    agent = Agent(parse_config(settings))
    await agent.start()
    try:
        cluster = agent.clusters["echo"]
        await async_wait_until(lambda: len(cluster.hosts()) == 3)
        near = cluster.get("127.0.0.1:9")
        assert near is not None
        near.healthy = False  # the zone has none left: its region takes the calls
        cluster.set_weight_overrides({})  # (rebalances)
        cluster.choose().stats.requests += 1  # type: ignore[union-attr]
        async with client(agent) as api:
            (view,) = (await api.get("/v1/clusters")).json()
            metrics = (await api.get("/metrics")).text
    finally:
        await agent.stop()
    priority = {e["id"]: e["priority"] for e in view["endpoints"]}
    assert priority == {"127.0.0.1:9": 0, "127.0.0.1:10": 1, "127.0.0.2:9": 3}
    assert [(v["locality"], v["available"], v["load"], v["requests"]) for v in view["levels"]] == [
        ("zone", 0, 0.0, 0),
        ("region", 1, 1.0, 1),
        ("remote", 1, 0.0, 0),
    ]
    assert 'meshagent_upstream_priority{cluster="echo",endpoint="127.0.0.2:9"} 3.0' in metrics
    assert 'meshagent_cluster_priority_load{cluster="echo",locality="region"} 1.0' in metrics
    assert (
        'meshagent_upstream_locality{cluster="echo",dc="b",endpoint="127.0.0.2:9",region="",'
        'zone=""} 1.0' in metrics
    )


async def test_without_a_locality_there_are_no_levels(agent: Agent) -> None:
    async with client(agent) as api:
        (view,) = (await api.get("/v1/clusters")).json()
    assert view["levels"] == [] and view["endpoints"][0]["priority"] is None
    # governance.zone is the rules' zone, not a place to balance by: no levels either.
    settings = config()
    settings["governance"] = {"zone": "b"}
    assert Agent(parse_config(settings)).clusters["echo"].levels is None


async def test_metrics_are_prometheus_text(agent: Agent) -> None:
    host = agent.clusters["echo"].hosts()[0]
    host.stats.connect_failures = 3
    async with client(agent) as api:
        response = await api.get("/metrics")
        assert response.headers["content-type"].startswith("text/plain")
        text = response.text
        line = (
            'meshagent_upstream_connect_failures_total{cluster="echo",endpoint="127.0.0.1:9"} 3.0'
        )
        assert line in text
        assert 'meshagent_registry_connected{registry="local"} 1.0' in text


async def test_invoke_needs_a_protocol_with_json_invocation(agent: Agent) -> None:
    async with client(agent) as api:
        raw = await api.post("/v1/invoke/tcp/echo/anything", json={})
        assert raw.status_code == 400
        assert raw.json()["detail"] == "protocol 'tcp' has no JSON invocation"
        wrong = await api.post("/v1/invoke/dubbo/echo/sayHello", json={})
        assert wrong.status_code == 400
        assert wrong.json()["detail"] == "service 'echo' speaks 'tcp', not 'dubbo'"
        missing = await api.post("/v1/invoke/dubbo/nope/sayHello", json={})
        assert missing.status_code == 404
        not_object = await api.post("/v1/invoke/tcp/echo/x", json=[1, 2])
        assert not_object.status_code == 400


async def test_registrations_with_junk_hosts_or_ids_are_refused_at_the_door(agent: Agent) -> None:
    # Issue 25: a host of "\u009e" was accepted (201), then every call to the service
    # failed inside the connect with an unhandled idna UnicodeError.
    async with client(agent) as api:
        for host in ["\u009e", "-bad-.example", "a..b", "x" * 300, "has space"]:
            refused = await api.put("/v1/registrations/echo/app-1", json={"host": host, "port": 1})
            assert refused.status_code == 400, host
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["errors"][0]["path"].endswith("host")
        for instance_id in ["a%0Ab", "a%5Cb", "%20lead", "a%E2%80%AEb", "x" * 256]:
            refused = await api.put(
                f"/v1/registrations/echo/{instance_id}", json={"host": "127.0.0.1", "port": 1}
            )
            assert refused.status_code == 400, instance_id
            assert refused.json()["errors"][0]["path"] == "instance_id"
        # A slash, even escaped, is a path separator to the router: no such route.
        slash = await api.put("/v1/registrations/echo/a%2Fb", json={"host": "127.0.0.1", "port": 1})
        assert slash.status_code == 404
        assert agent.registrations.entries() == []
        ok = await api.put(
            "/v1/registrations/echo/b\u00fccher-1", json={"host": "b\u00fccher.example", "port": 1}
        )
        assert ok.status_code == 201
        assert agent.registrations.entries()[0].registration.host == "b\u00fccher.example"


async def test_a_registration_may_not_replace_or_delete_a_configured_endpoint(
    agent: Agent,
) -> None:
    # Issue 25: PUT then DELETE of the config's own "127.0.0.1:9" left the service empty.
    async with client(agent) as api:
        replaced = await api.put(
            "/v1/registrations/echo/127.0.0.1:9", json={"host": "127.0.0.1", "port": 10}
        )
        assert replaced.status_code == 409
        assert "declared in the config" in replaced.json()["detail"]
        assert (await api.delete("/v1/registrations/echo/127.0.0.1:9")).status_code == 404
    assert [h.instance.address for h in agent.clusters["echo"].hosts()] == ["127.0.0.1:9"]


async def test_a_wrong_method_gets_405_with_allow(agent: Agent) -> None:
    async with client(agent) as api:
        wrong = await api.post("/v1/services")
        assert wrong.status_code == 405
        assert wrong.headers["allow"] == "GET"
        assert wrong.headers["content-type"] == "application/problem+json"


def test_the_contract_documents_validation_errors_as_the_api_answers_them(agent: Agent) -> None:
    schema = create_app(agent).openapi()
    put = schema["paths"]["/v1/registrations/{service}/{instance_id}"]["put"]["responses"]
    assert "422" not in put
    assert put["400"]["content"]["application/problem+json"]["schema"] == {
        "$ref": "#/components/schemas/ProblemDetails"
    }
    assert "HTTPValidationError" not in schema["components"]["schemas"]
