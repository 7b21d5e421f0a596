"""The Dubbo settings in the agent's config (``services[].options``), as pydantic models.

A module of its own, interpreted: the strategies that read these settings are compiled by
mypyc, which cannot compile pydantic models (their class attributes hold ``Field``s).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

ClusterName = Literal["failover", "failfast", "failsafe", "forking"]
CLUSTERS: tuple[ClusterName, ...] = ("failover", "failfast", "failsafe", "forking")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MethodOptions(_Strict):
    """Per-method overrides in the agent's config (``options.methods.{name}``)."""

    cluster: ClusterName | None = None
    timeout_ms: Annotated[int, Field(ge=1, le=600_000)] | None = None
    retries: Annotated[int, Field(ge=0, le=10)] | None = None
    forks: Annotated[int, Field(ge=1, le=16)] | None = None
    # Dubbo retries a timed-out call on failover; that runs a non-idempotent method twice.
    # Here a timeout is retried only when the method (or service) says it is safe.
    retry_on_timeout: bool | None = None


class DubboServiceOptions(MethodOptions):
    """``services[].options`` of a Dubbo service: service level, then ``methods``."""

    methods: dict[str, MethodOptions] = Field(default_factory=dict)
