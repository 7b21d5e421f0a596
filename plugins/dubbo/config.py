"""The ``dubbo`` plugin's listener and invocation settings (``listeners[].config``).

Service options (``services[].options``) are in plugins/dubbo/options.py.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from plugins.dubbo.frame import DEFAULT_MAX_BODY
from plugins.dubbo.upstream import DEFAULT_HEARTBEAT_S


class DubboConfig(BaseModel):
    """Settings of a Dubbo listener (``listeners[].config``) and of generic invocation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Dubbo's own ``payload`` default: 8 MiB per frame body.
    max_body_bytes: Annotated[int, Field(ge=1024, le=256 * 1024 * 1024)] = DEFAULT_MAX_BODY
    # Dubbo's consumer default ``timeout`` is 1000 ms; per-method settings override it.
    timeout_ms: Annotated[int, Field(ge=1, le=600_000)] = 1000
    heartbeat_s: Annotated[float, Field(gt=0)] = DEFAULT_HEARTBEAT_S
    connect_timeout_s: Annotated[float, Field(gt=0)] = 1.0
    # Requests one client connection may have waiting for providers; past it the client
    # gets SERVER_THREADPOOL_EXHAUSTED_ERROR, as from a Dubbo provider whose pool is full.
    max_in_flight: Annotated[int, Field(ge=1, le=1_000_000)] = 1024
    # Connections per provider (Dubbo's ``connections``; 0 there means one shared). More
    # than one keeps a slow call from holding up the calls behind it on its connection;
    # the pool opens them as calls find every connection busy.
    connections_per_endpoint: Annotated[int, Field(ge=1, le=64)] = 1
    connection_pick: Literal["least_pending", "round_robin"] = "least_pending"
