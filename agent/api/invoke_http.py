"""``ANY /v1/invoke/http/{service}/{path}``: call an HTTP service through the agent.

After Dapr's ``/v1.0/invoke/{app}/method/{method}``: the method, the rest of the path (as
the caller encoded it), the query, the headers and the body are forwarded to an endpoint
of the service, and the provider's response comes back untouched. Errors of the agent's
own (no endpoint, connect failure, timeout) are problem details naming the service.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask

from agent.api import problems
from agent.errors import UpstreamError
from agent.governance.policy import Degraded
from agent.runtime.agent import Agent

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The provider's response, whatever its status"},
    400: {"description": "The service's protocol has no HTTP invocation"},
    404: {"description": "Unknown service"},
    502: {"description": "No endpoint could be reached, or it failed"},
    503: {"description": "No endpoint available"},
    504: {"description": "The provider did not answer in time"},
}


def router(agent: Agent) -> APIRouter:
    routes = APIRouter(prefix="/v1", tags=["invoke"])

    async def invoke_http(service: str, path: str, request: Request) -> Response:
        # The raw path keeps the caller's percent-encoding ('%2F' stays one segment).
        raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
        rest = raw_path.split(b"/", 5)[5] if raw_path.count(b"/") >= 5 else b""
        query = request.scope.get("query_string", b"").decode("latin-1")
        try:
            result = await agent.invoke_http(
                service,
                request.method,
                "/" + rest.decode("latin-1"),
                query,
                list(request.headers.raw),
                request.stream(),
            )
        except UpstreamError as exc:
            chain: dict[str, Any] = {"chain": list(exc.chain)} if exc.chain else {}
            return problems.problem(problems.status_for(exc), str(exc), service=service, **chain)
        except Degraded as exc:
            if not exc.has_value:
                raise
            # A degradation rule's fallback value: answered as the provider would, in JSON.
            return JSONResponse(exc.value)
        response = StreamingResponse(
            result.body, status_code=result.status, background=BackgroundTask(result.close)
        )
        # Repeated fields (Set-Cookie) stay repeated; ASGI wants lower-case names.
        response.raw_headers = [(name.lower(), value) for name, value in result.headers]
        return response

    for method in METHODS:
        # One route per method: each needs its own operation id in the contract.
        routes.add_api_route(
            "/invoke/http/{service}/{path:path}",
            invoke_http,
            methods=[method],
            response_class=Response,
            operation_id=f"invoke_http_{method.lower()}",
            summary="Invoke an HTTP service",
            responses=RESPONSES,
        )
    return routes
