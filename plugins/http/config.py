"""The ``http`` plugin's settings: listeners (``listeners[].config``, with their routes) and
services (``services[].options``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpRoute(Strict):
    """Requests whose Host and path match go to ``service``; routes are tried in order."""

    # Exact host name, case-insensitive, port ignored; None matches any host.
    host: str | None = None
    path_prefix: str = "/"
    service: str = Field(min_length=1)

    @model_validator(mode="after")
    def _prefix_is_absolute(self) -> HttpRoute:
        if not self.path_prefix.startswith("/"):
            raise ValueError("path_prefix must start with '/'")
        return self

    def matches(self, host: str, path: str) -> bool:
        return (self.host is None or self.host.lower() == host) and path.startswith(
            self.path_prefix
        )


class HttpConfig(Strict):
    """Settings of an HTTP listener (``listeners[].config``) and of HTTP invocation."""

    # Requests matching no route go to the listener's own ``service``.
    routes: list[HttpRoute] = Field(default_factory=list)

    def service_references(self) -> list[tuple[str, str]]:
        return [(f"routes[{i}].service", route.service) for i, route in enumerate(self.routes)]

    # The request line plus headers; past it the client gets 431 (nginx: 8 KiB per
    # line, 4 lines of large buffers; Envoy: 60 KiB total). 16 KiB is h11's default.
    max_header_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024)] = 16 * 1024
    # Set X-Forwarded-For/-Proto/-Host from the client's connection (off by default: a
    # sidecar that adds them to every localhost call would tell the provider nothing).
    x_forwarded: bool = False
    # Append this hop to Forwarded (RFC 7239: for, host, proto); off by default, likewise.
    forwarded: bool = False
    # Idle keep-alive connections per endpoint kept for reuse, and for how long. HTTP/2
    # clients multiplex many requests, each on a provider connection of its own: with
    # fewer kept than are in flight at once, every burst reconnects (h2load -c32 -m10
    # over two endpoints: 160 per endpoint; at 64 kept, a fifth of the agent's CPU went to
    # connecting). Envoy keeps every connection, up to the breaker's max_connections.
    max_idle_per_endpoint: Annotated[int, Field(ge=0, le=10_000)] = 256
    idle_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    # A client connection with no request in progress for this long is closed.
    client_idle_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    # Chunks of body read from one side before waiting for the other to take them.
    read_chunk_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024)] = 64 * 1024
    # HTTP/2 from clients (prior knowledge and h2c upgrade); providers get HTTP/1.1
    # unless their service says upstream_protocol: h2.
    http2: bool = True
    # Streams open at once on one client connection (nginx and Envoy: 100 and 100).
    h2_max_concurrent_streams: Annotated[int, Field(ge=1, le=10_000)] = 100
    # Past these, per connection and second, the client gets GOAWAY: streams it resets
    # (rapid reset), and SETTINGS and PING frames (control frame floods).
    h2_max_resets_per_s: Annotated[int, Field(ge=1)] = 100
    h2_max_control_frames_per_s: Annotated[int, Field(ge=1)] = 100


class HttpServiceOptions(Strict):
    """``services[].options`` for HTTP services."""

    # From sending the request to the response head (bodies may stream for longer).
    timeout_ms: Annotated[int, Field(ge=1, le=600_000)] = 15_000
    # Further tries on another endpoint when a try fails before a response head arrives
    # (connection refused or reset; not a timeout). Only requests that can be sent again
    # are retried: idempotent methods without a body (a streamed body is not kept).
    retries: Annotated[int, Field(ge=0, le=5)] = 0
    # How the listener talks to the providers: "http1" (pooled keep-alive connections),
    # or "h2": HTTP/2 with prior knowledge (cleartext h2c), every request a stream on a
    # pooled, multiplexed connection (agent/h2/upstream.py), whichever protocol the
    # client spoke. TLS to providers is not offered on either.
    upstream_protocol: Literal["http1", "h2"] = "http1"
