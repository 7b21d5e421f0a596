"""The ``thrift`` plugin's settings: listeners (``listeners[].config``) and services
(``services[].options``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from plugins.thrift.codec import DEFAULT_MAX_MESSAGE


class ThriftConfig(BaseModel):
    """Settings of a Thrift listener (``listeners[].config``) and of JSON invocation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # What clients speak; ``auto`` detects it from each connection's first bytes.
    protocol: Literal["auto", "binary", "compact"] = "auto"
    transport: Literal["auto", "framed", "buffered"] = "auto"
    max_message_bytes: Annotated[int, Field(ge=1024, le=256 * 1024 * 1024)] = DEFAULT_MAX_MESSAGE
    timeout_ms: Annotated[int, Field(ge=1, le=600_000)] = 1000
    connect_timeout_s: Annotated[float, Field(gt=0)] = 1.0
    # Calls one client connection may have waiting for providers; past it the client gets
    # a TApplicationException (INTERNAL_ERROR) for the call.
    max_in_flight: Annotated[int, Field(ge=1, le=1_000_000)] = 1024
    # Connections per provider and wire form. Thrift servers answer a connection's calls
    # one at a time, so with one connection a slow call holds up every call behind it;
    # the pool opens more (up to this) as calls find every connection busy, and spreads
    # calls over them by ``connection_pick``.
    connections_per_endpoint: Annotated[int, Field(ge=1, le=64)] = 1
    connection_pick: Literal["least_pending", "round_robin"] = "least_pending"
    # Per-method routing: a method (the message name the client sends, "Service:method"
    # under TMultiplexedProtocol) -> the service (services[].name) whose providers get it.
    # Methods not named here go to the listener's service.
    routes: dict[str, str] = Field(default_factory=dict)
    # The Base struct at field 255 (plugins/thrift/base.py): "auto" fills it in for the
    # methods whose service's IDL (services[].options.idl) ends their arguments with it;
    # "off" passes every body unread.
    base: Literal["auto", "off"] = "auto"
    # Base.Caller where the app leaves it empty; default: the agent's app.name.
    caller: str = ""

    def service_references(self) -> list[tuple[str, str]]:
        return [(f"routes.{method}", service) for method, service in self.routes.items()]


class ThriftServiceOptions(BaseModel):
    """``services[].options`` of a Thrift service: what JSON invocation needs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The IDL file defining the service (its includes are resolved relative to it) and
    # the service's name in it; both needed for ``POST /v1/invoke/thrift/...``.
    idl: str | None = None
    idl_service: str | None = None
    include_dirs: list[str] = Field(default_factory=list)
    # What the providers speak (invocation only; a listener passes its clients' form on).
    protocol: Literal["binary", "compact"] = "binary"
    transport: Literal["framed", "buffered"] = "framed"
    timeout_ms: Annotated[int, Field(ge=1, le=600_000)] | None = None
    # Base.Caller of JSON invocations, for IDLs with the Base struct at field 255 (the
    # calling app's name: the provider sees who called without code changes).
    caller: str = ""
