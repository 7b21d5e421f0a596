"""The API's hot routes, answered without a web framework; everything else goes to FastAPI.

``GET /healthz``, ``GET /readyz`` (kubelet probes every few seconds per pod), ``GET
/metrics`` and ``POST /v1/invoke/{protocol}/{service}/{method}`` (the JSON invocation,
every protocol but ``http``) are answered here, on the server's parsed request
(agent/api/http1.py): the probes and metrics at once, with no coroutine; an invocation is
one task around the protocol's invoker. The FastAPI app declares the same routes, for
the contract (openapi/openapi.yaml) and for in-process callers, and answers them with the
same functions below, so the bodies, statuses and problem details cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from agent.api.http1 import ApiRequest, Handler, Reply, problem_reply
from agent.api.limits import REMOTE_INVOKE_REFUSED, is_loopback
from agent.api.ndjson import ndjson
from agent.api.problem_details import PROBLEM_JSON, dumps, error_problem, invalid_request
from agent.errors import MeshAgentError
from agent.telemetry.exposition import CONTENT_TYPE
from agent.telemetry.metrics import metrics_registry, render
from agent.telemetry.propagation import INCOMING

if TYPE_CHECKING:
    from agent.runtime.agent import Agent

JSON = b"application/json"
NDJSON = "application/x-ndjson"
PROMETHEUS_TEXT = CONTENT_TYPE

HEALTH_BODY = b'{"status":"ok"}'
_HEALTHZ = Reply(200, HEALTH_BODY, JSON).constant()
_PROBLEM = PROBLEM_JSON.encode()
_INCOMING = {name.encode(): name for name in INCOMING}
_NOT_A_DICT = [{"path": "body", "message": "Input should be a valid dictionary"}]


# shared with the FastAPI routes ---------------------------------------------------------


def readiness(agent: Agent) -> tuple[int, bytes]:
    ready, reasons = agent.ready()
    registries = [
        {"name": name, "connected": s.connected, "since": s.since, "detail": s.detail}
        for name, s in agent.registry_statuses().items()
    ]
    document: dict[str, Any] = {"ready": ready, "reasons": reasons, "registries": registries}
    workers = agent.describe_workers()
    if workers:
        document["workers"] = workers
    return (200 if ready else 503), dumps(document)


def invoke_reply_body(result: Any, attachments: Mapping[str, Any], endpoint: str) -> bytes:
    return dumps({"result": result, "attachments": attachments, "endpoint": endpoint})


async def invoke(
    agent: Agent,
    protocol: str,
    service: str,
    method: str,
    body: dict[str, Any],
    incoming: dict[str, str],
) -> Reply:
    """The JSON invocation: the reply, or the problem details of the agent's error."""
    try:
        outcome = await agent.invoke(protocol, service, method, body, incoming)
    except MeshAgentError as exc:
        status, problem = error_problem(exc)
        return Reply(status, problem, _PROBLEM)
    if outcome.stream is not None:
        endpoint = ((b"x-meshagent-endpoint", outcome.endpoint.encode("latin-1")),)
        return Reply(200, b"", NDJSON.encode(), endpoint, ndjson(outcome.stream))
    return Reply(
        200, invoke_reply_body(outcome.result, outcome.attachments, outcome.endpoint), JSON
    )


# the fast path --------------------------------------------------------------------------


def _is_json(content_type: bytes) -> bool:
    # As FastAPI decides whether a body is JSON: application/json or application/*+json.
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


def invoke_body(request: ApiRequest) -> dict[str, Any] | Reply:
    """The invocation's JSON object (none: ``{}``), or the 400 answer FastAPI gave."""
    raw = request.body
    if not raw:
        return {}
    content_type = request.header(b"content-type")
    if content_type is None or not _is_json(content_type):
        return Reply(*invalid_request(_NOT_A_DICT), _PROBLEM)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        errors = [{"path": f"body.{exc.pos}", "message": "JSON decode error"}]
        return Reply(*invalid_request(errors), _PROBLEM)
    except UnicodeDecodeError:
        errors = [{"path": "body.0", "message": "JSON decode error"}]
        return Reply(*invalid_request(errors), _PROBLEM)
    if value is None:
        return {}
    if not isinstance(value, dict):
        return Reply(*invalid_request(_NOT_A_DICT), _PROBLEM)
    return value


_FORBIDDEN = problem_reply(403, REMOTE_INVOKE_REFUSED, "Forbidden")


class FastRoutes:
    """The server's handler: the hot routes here, the rest through ``bridge``."""

    def __init__(
        self,
        agent: Agent,
        bridge: Handler,
        allow_remote_invoke: bool,
        metrics: Callable[[], Awaitable[bytes]] | None = None,
        own_probes: bool = True,
    ) -> None:
        """``metrics``: the scrape's text when it is not this process's alone (the
        supervisor's, merging its workers': agent/telemetry/worker_merge.py);
        ``own_probes`` False: ``/readyz`` and ``/metrics`` are the bridge's (a worker's
        API passes them to its supervisor, agent/api/forward.py)."""
        self.agent = agent
        self.bridge = bridge
        self.allow_remote_invoke = allow_remote_invoke
        self.registry = metrics_registry(agent)
        self.metrics = metrics
        self.own_probes = own_probes

    def __call__(self, request: ApiRequest) -> Reply | Awaitable[Reply]:
        method = request.method
        path = request.path
        if method == "GET":
            if path == b"/healthz":
                return _HEALTHZ
            if not self.own_probes:
                return self.bridge(request)
            if path == b"/readyz":
                return Reply(*readiness(self.agent), JSON)
            if path == b"/metrics":
                if self.metrics is not None:
                    return self._merged_metrics(self.metrics)
                return Reply(200, render(self.registry), PROMETHEUS_TEXT.encode())
        elif method == "POST" and path.startswith(b"/v1/invoke/"):
            parts = path.split(b"/")
            # ['', 'v1', 'invoke', protocol, service, method]; http has routes of its own.
            if len(parts) == 6 and parts[3] != b"http" and parts[3] and parts[4] and parts[5]:
                names = [unquote(p.decode("utf-8", "replace")) for p in parts[3:]]
                if all("/" not in n for n in names):
                    return self._invoke(request, names[0], names[1], names[2])
        return self.bridge(request)

    async def _merged_metrics(self, metrics: Callable[[], Awaitable[bytes]]) -> Reply:
        return Reply(200, await metrics(), PROMETHEUS_TEXT.encode())

    def _invoke(
        self, request: ApiRequest, protocol: str, service: str, method: str
    ) -> Reply | Awaitable[Reply]:
        if not self.allow_remote_invoke and not is_loopback(request.client):
            return _FORBIDDEN
        body = invoke_body(request)
        if isinstance(body, Reply):
            return body
        incoming: dict[str, str] = {}
        for name, value in request.headers:
            field = _INCOMING.get(name)
            if field is not None:
                incoming[field] = value.decode("latin-1")
        return invoke(self.agent, protocol, service, method, body, incoming)
