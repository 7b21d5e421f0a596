"""The FastAPI application over an :class:`agent.runtime.agent.Agent`."""

from __future__ import annotations

import dataclasses
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from agent import __version__
from agent.api import config_api, fast_routes, invoke_http, problems, status_page
from agent.api.limits import ApiGuard
from agent.api.models import (
    ClusterLoadView,
    ClusterView,
    EffectiveRule,
    EndpointStats,
    Health,
    InstanceView,
    InvokeResponse,
    PriorityLevelView,
    Readiness,
    RegistrationRequest,
    RegistrationView,
    RegistryState,
    RulesView,
    ServiceSummary,
)
from agent.calls import Route
from agent.cluster.host import Host
from agent.cluster.locality import LEVEL_NAMES, PriorityLevels
from agent.discovery.types import RegistryStatus
from agent.discovery.validate import instance_id_problem
from agent.errors import InvalidRequest
from agent.runtime.agent import Agent
from agent.telemetry.metrics import metrics_registry, render
from agent.telemetry.propagation import propagation_headers

PROMETHEUS_TEXT = fast_routes.PROMETHEUS_TEXT
NDJSON = fast_routes.NDJSON


def _registry_state(name: str, status: RegistryStatus) -> RegistryState:
    return RegistryState(
        name=name, connected=status.connected, since=status.since, detail=status.detail
    )


def _level_views(
    levels: PriorityLevels | None, endpoints: list[EndpointStats]
) -> list[PriorityLevelView]:
    """Each non-empty level, with the requests its endpoints served (summed over the
    workers like the endpoints' own)."""
    if levels is None:
        return []
    served = [0] * len(LEVEL_NAMES)
    for endpoint in endpoints:
        if endpoint.priority is not None:
            served[endpoint.priority] += endpoint.requests
    return [
        PriorityLevelView(
            priority=level,
            locality=name,
            endpoints=levels.endpoints[level],
            available=levels.available[level],
            load=round(levels.loads[level], 4),
            requests=served[level],
        )
        for level, name in enumerate(LEVEL_NAMES)
        if levels.endpoints[level]
    ]


def _instance_fields(host: Host, now: float) -> dict[str, object]:
    instance = host.instance
    return {
        "id": instance.id,
        "host": instance.host,
        "port": instance.port,
        "weight": instance.weight,
        "metadata": dict(instance.metadata),
        "revision": instance.revision,
        "healthy": host.healthy,
        "ejected": host.ejected(now),
        "draining": host.draining,
        "ejected_for_s": round(max(0.0, host.ejected_until - now), 3),
        "times_ejected": host.times_ejected,
        "active_requests": host.active_requests,
    }


def create_app(agent: Agent) -> FastAPI:
    app = FastAPI(
        title="meshagent",
        version=__version__,
        description="The localhost API of the meshagent sidecar.",
        docs_url="/docs",
        redoc_url=None,
    )
    problems.install(app)
    admin = agent.config.admin
    app.add_middleware(
        ApiGuard,
        max_body_bytes=admin.max_body_bytes,
        allow_remote_writes=admin.allow_remote_writes,
        allow_remote_invoke=admin.allow_remote_invoke,
    )
    registry = metrics_registry(agent)

    probes = APIRouter(tags=["health"])

    @probes.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health(status="ok")

    @probes.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Not ready, with the reasons"}},
    )
    async def readyz() -> Response:
        status, body = fast_routes.readiness(agent)
        return Response(body, status_code=status, media_type="application/json")

    @probes.get(
        "/metrics", response_class=Response, responses={200: {"content": {PROMETHEUS_TEXT: {}}}}
    )
    async def metrics() -> Response:
        return Response(render(registry), media_type=PROMETHEUS_TEXT)

    @app.get("/ui", include_in_schema=False, response_class=HTMLResponse)
    async def status_page_view(request: Request) -> HTMLResponse:
        """The status page (agent/api/status_page.py); its script asks for the tables
        alone with ``x-fragment: 1``."""
        fragment = request.headers.get("x-fragment") == "1"
        return HTMLResponse(status_page.render(agent, dict(request.query_params), fragment))

    v1 = APIRouter(prefix="/v1")

    @v1.get("/services", response_model=list[ServiceSummary], tags=["discovery"])
    async def services() -> list[ServiceSummary]:
        return [
            ServiceSummary(
                name=name,
                protocol=agent.services[name].protocol,
                registry=agent.services[name].registry,
                endpoints=len(cluster.hosts()),
                available=cluster.available_count(),
            )
            for name, cluster in agent.clusters.items()
        ]

    @v1.get(
        "/services/{service}/instances",
        response_model=list[InstanceView],
        tags=["discovery"],
        responses={404: {"description": "Unknown service"}},
    )
    async def instances(service: str) -> list[InstanceView]:
        agent.service(service)
        now = time.monotonic()
        return [
            InstanceView.model_validate(_instance_fields(host, now))
            for host in agent.clusters[service].hosts()
        ]

    @v1.get("/registries", response_model=list[RegistryState], tags=["discovery"])
    async def registries() -> list[RegistryState]:
        return [_registry_state(n, s) for n, s in agent.registry_statuses().items()]

    @v1.get("/clusters", response_model=list[ClusterView], tags=["clusters"])
    async def clusters() -> list[ClusterView]:
        # With workers, each counts the requests it sent: summed here (docs/workers.md).
        summed = await agent.endpoint_stats() if agent.endpoint_stats is not None else None
        now = time.monotonic()
        statuses = agent.registry_statuses()
        views = []
        for name, cluster in agent.clusters.items():
            registry_name = agent.services[name].registry
            endpoints = []
            for host in cluster.hosts():
                fields = _instance_fields(host, now) | {
                    "requests": host.stats.requests,
                    "failures": host.stats.failures,
                    "connect_failures": host.stats.connect_failures,
                    "ejections": host.stats.ejections,
                }
                if summed is not None:
                    fields |= summed.get((name, host.id), {})
                if cluster.levels is not None:
                    fields["priority"] = cluster.levels.level(host.id)
                endpoints.append(EndpointStats.model_validate(fields))
            views.append(
                ClusterView(
                    name=name,
                    lb_policy=cluster.lb_policy,
                    registry=_registry_state(registry_name, statuses[registry_name]),
                    initialized=cluster.initialized,
                    revision=cluster.revision,
                    panic=cluster.panic,
                    endpoints=endpoints,
                    levels=_level_views(cluster.levels, endpoints),
                )
            )
        return views

    @v1.get("/registrations", response_model=list[RegistrationView], tags=["registration"])
    async def registrations() -> list[RegistrationView]:
        return [
            RegistrationView(
                service=entry.registration.service,
                instance_id=entry.registration.instance_id,
                host=entry.registration.host,
                port=entry.registration.port,
                weight=entry.registration.weight,
                metadata=dict(entry.registration.metadata),
                registry=agent.services[entry.registration.service].registry,
                ttl_s=entry.ttl_s,
            )
            for entry in agent.registrations.entries()
        ]

    @v1.put(
        "/registrations/{service}/{instance_id}",
        status_code=200,
        response_model=RegistrationView,
        tags=["registration"],
        responses={
            201: {"model": RegistrationView, "description": "Registered"},
            400: {"description": "Invalid host, port or instance id"},
            404: {"description": "Unknown service"},
            409: {"description": "The instance id is one the configuration declares"},
            503: {"description": "The agent is draining, or the registry failed"},
        },
    )
    async def put_registration(
        service: str, instance_id: str, body: RegistrationRequest
    ) -> Response:
        problem = instance_id_problem(instance_id)
        if problem is not None:
            raise InvalidRequest([("instance_id", problem)])
        created = await agent.register(
            service, instance_id, body.host, body.port, body.weight, body.metadata, body.ttl_s
        )
        view = RegistrationView(
            service=service,
            instance_id=instance_id,
            host=body.host,
            port=body.port,
            weight=body.weight,
            metadata=body.metadata,
            registry=agent.services[service].registry,
            ttl_s=body.ttl_s,
        )
        return JSONResponse(view.model_dump(), status_code=201 if created else 200)

    @v1.delete(
        "/registrations/{service}/{instance_id}",
        status_code=204,
        response_class=Response,
        tags=["registration"],
        responses={404: {"description": "Unknown service, or no such registration"}},
    )
    async def delete_registration(service: str, instance_id: str) -> Response:
        if not await agent.deregister(service, instance_id):
            return problems.problem(404, f"no registration {instance_id!r} of service {service!r}")
        return Response(status_code=204)

    @v1.post(
        "/invoke/{protocol}/{service}/{method}",
        response_model=InvokeResponse,
        tags=["invoke"],
        responses={
            200: {
                "content": {NDJSON: {}},
                "description": "The result; streamed replies (gRPC server streaming) as "
                "NDJSON, one JSON value a line, and an error while streaming as a last "
                '{"error": problem details} line',
            },
            400: {"description": "Invalid request, or the protocol has no JSON invocation"},
            404: {"description": "Unknown service"},
            502: {"description": "The provider raised an exception, or the call failed"},
            503: {"description": "No provider available"},
            504: {"description": "The provider did not answer in time"},
        },
    )
    async def invoke(
        protocol: str,
        service: str,
        method: str,
        request: Request,
        body: Annotated[dict[str, Any] | None, Body()] = None,
    ) -> Response:
        # The fast path's own function (agent/api/fast_routes.py), so both answer alike.
        reply = await fast_routes.invoke(
            agent, protocol, service, method, body or {}, propagation_headers(request.headers)
        )
        headers = {name.decode(): value.decode("latin-1") for name, value in reply.headers}
        if reply.stream is not None:
            return StreamingResponse(
                reply.stream, media_type=reply.content_type.decode(), headers=headers
            )
        return Response(
            reply.body,
            status_code=reply.status,
            media_type=reply.content_type.decode(),
            headers=headers,
        )

    @v1.get("/rules", response_model=RulesView, tags=["governance"])
    async def rules() -> RulesView:
        policy = agent.governance
        state = policy.state
        document = agent.rules_status()
        return RulesView(
            source=state.source,
            version=document.version if document is not None else None,
            applied_at=state.applied_at,
            rejected_version=document.rejected_version if document is not None else None,
            errors=document.errors if document is not None else [],
            watch_error=document.watch_error if document is not None else "",
            rules=state.rules.model_dump(mode="json", by_alias=True, exclude_defaults=True),
            counters=dataclasses.asdict(policy.counters),
            clusters=[
                ClusterLoadView(
                    cluster=name,
                    in_flight=load.in_flight,
                    pending=load.pending,
                    overflows=load.overflows,
                )
                for name, load in sorted(policy.loads.items())
            ],
        )

    @v1.get("/rules/effective", response_model=EffectiveRule, tags=["governance"])
    async def effective_rule(
        to: str,
        method: str = "",
        source: Annotated[str | None, Query(alias="from")] = None,
        from_cluster: str | None = None,
        to_cluster: str = "",
    ) -> EffectiveRule:
        """The rule a call with this five-tuple gets (``from``/``from_cluster`` default to
        the agent's own app, as for its outbound calls)."""
        route = Route(
            agent.calls.app if source is None else source,
            agent.calls.app_cluster if from_cluster is None else from_cluster,
            to,
            to_cluster,
            method,
        )
        found = agent.effective_rule(route)
        limits = agent.governance.table.breaker(to)
        return EffectiveRule(
            route={
                "from": route.source,
                "from_cluster": route.source_cluster,
                "to": route.target,
                "to_cluster": route.target_cluster,
                "method": route.method,
            },
            rule_index=found.position if found is not None else None,
            rule=found.rule.model_dump(mode="json", by_alias=True, exclude_defaults=True)
            if found is not None
            else None,
            circuit_breaker=limits.model_dump(mode="json", exclude_none=True)
            if limits is not None
            else None,
        )

    app.include_router(probes)
    # Before v1: its POST /v1/invoke/{protocol}/{service}/{method} would take
    # POST /v1/invoke/http/{service}/{one-segment path}.
    app.include_router(invoke_http.router(agent))
    app.include_router(config_api.router(agent))
    app.include_router(v1)
    return app
