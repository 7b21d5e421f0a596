"""The ``grpc`` plugin's settings: listeners (``listeners[].config``) and services
(``services[].options``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# gRPC's own default receive limit.
DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024


class GrpcConfig(BaseModel):
    """Settings of a gRPC listener (``listeners[].config``) and of JSON invocation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Larger messages, either way, end the call with RESOURCE_EXHAUSTED.
    max_message_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024 * 1024)] = DEFAULT_MAX_MESSAGE
    # A server reflection lookup (JSON invocation) that takes longer fails.
    reflection_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    # HTTP/1.1 requests on the listener's port are transcoded to gRPC calls by the
    # service's google.api.http rules; gRPC (HTTP/2) shares the port (plugins/grpc/front.py).
    http_transcoding: bool = False
    # The listener's engine: "h2", an HTTP/2 frame relay on the agent's own engine
    # (plugins/grpc/h2relay.py, agent/h2), the only one since the grpc.aio relay
    # ("grpcio") was removed in session 11 (docs/grpc.md says why).
    relay: Literal["h2"] = "h2"
    # Relay h2, connections to providers (agent/h2/upstream.py): another connection to
    # an endpoint is made when every one has as many calls as its provider allows
    # (SETTINGS_MAX_CONCURRENT_STREAMS), up to this many.
    max_connections_per_endpoint: Annotated[int, Field(ge=1, le=1024)] = 8
    # A provider connection with calls open on which nothing was read for
    # ping_interval_s gets a PING; with nothing read ping_timeout_s after it, the provider
    # is taken for gone: the connection is closed and its calls end UNAVAILABLE (or go
    # elsewhere when nothing of them was sent). 0 turns the pings off. The default is
    # grpc-go's server enforcement (MinTime, 5 minutes): pinged more often, it answers
    # GOAWAY "too_many_pings"; lower it for providers whose policy allows.
    ping_interval_s: Annotated[float, Field(ge=0)] = 300.0
    ping_timeout_s: Annotated[float, Field(gt=0)] = 20.0

    @field_validator("relay", mode="before")
    @classmethod
    def _removed_relay(cls, value: object) -> object:
        if value == "grpcio":
            raise ValueError(
                "the grpcio relay was removed: the h2 relay (the default) does all it did,"
                " transcoding included; delete this setting"
            )
        return value


class GrpcServiceOptions(BaseModel):
    """``services[].options`` of a gRPC service."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The fully qualified gRPC service (``helloworld.Greeter``) that JSON invocations
    # call; omitted: the service's name.
    grpc_service: str | None = None
    # Deadline of a JSON invocation unless the request sets timeout_ms.
    timeout_ms: Annotated[int, Field(ge=1, le=600_000)] = 5000
    # A FileDescriptorSet (protoc --descriptor_set_out --include_imports) describing the
    # service: used instead of the provider's server reflection.
    descriptor_set: str | None = None
