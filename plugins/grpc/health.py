"""The ``grpc`` active health check: grpc.health.v1 ``Check`` on a fresh channel.

Passes when the endpoint answers SERVING for the configured service ("" asks about the
server as a whole). An endpoint without the health service (UNIMPLEMENTED) has still
answered a gRPC call, so it passes unless ``require_health_service`` is set: the check
says "alive" for every gRPC server and "serving" for those that can tell.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from agent.cluster.host import Host
from agent.plugins import Plugin, PluginKind
from agent.runtime.health import HealthChecker
from plugins.grpc.channels import target


class GrpcHealthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    service: str = ""
    require_health_service: bool = False


class GrpcHealthChecker(HealthChecker):
    def __init__(self, config: GrpcHealthConfig) -> None:
        self.config = config

    async def check(self, host: Host) -> bool:
        import grpc  # type: ignore[import-untyped]
        from grpc_health.v1 import health_pb2  # type: ignore[import-untyped]

        address = target(host.instance.host, host.instance.port)
        # A channel of its own, not the pooled one: a probe must see a new connection
        # fail, where a pooled channel would report its old one's state.
        async with grpc.aio.insecure_channel(address) as channel:
            check = channel.unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString,
            )
            try:
                reply = await check(health_pb2.HealthCheckRequest(service=self.config.service))
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    return not self.config.require_health_service
                return False
            serving: bool = reply.status == health_pb2.HealthCheckResponse.SERVING
            return serving


PLUGIN: Plugin[HealthChecker] = Plugin(
    PluginKind.HEALTH_CHECKER, "grpc", GrpcHealthConfig, GrpcHealthChecker
)
