"""What the injector adds to a pod: one YAML file (the chart renders it into a ConfigMap).

Validated whole at startup, like the agent's own config: a typo in the chart's values is a
startup error with its path, not a wrong sidecar on every pod.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.config import Port
from agent.errors import ConfigError
from agent.plugins import format_validation_errors

# Kubernetes' resource.Quantity grammar (k8s.io/apimachinery/pkg/api/resource), which the
# API server would reject later anyway; checking here names the annotation at fault.
QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i)?$")

# DNS-1123 label: what Kubernetes accepts for ConfigMap, container and volume names.
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# AdmissionReview bodies over this are refused with 413 (the CLI's --max-body-bytes).
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


def check_quantity(value: str) -> str:
    if not QUANTITY.match(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 100m, 0.5, 128Mi)")
    return value


def _check_name(value: str) -> str:
    if len(value) > 63 or not NAME.match(value):
        raise ValueError(f"{value!r} is not a DNS-1123 label")
    return value


Quantity = Annotated[str, AfterValidator(check_quantity)]
Name = Annotated[str, AfterValidator(_check_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(_Strict):
    requests: dict[Literal["cpu", "memory", "ephemeral-storage"], Quantity] = Field(
        default_factory=dict
    )
    limits: dict[Literal["cpu", "memory", "ephemeral-storage"], Quantity] = Field(
        default_factory=dict
    )

    def to_k8s(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        if self.requests:
            out["requests"] = {str(k): v for k, v in self.requests.items()}
        if self.limits:
            out["limits"] = {str(k): v for k, v in self.limits.items()}
        return out


class CaptureSettings(_Strict):
    """Transparent capture: the init container's iptables flags and the agent's capture
    listener (docs/capture.md). Off: no init container, no NET_ADMIN anywhere."""

    enabled: bool = True
    port: Port = 15001
    ipv6: bool = False
    exclude_outbound_ports: list[Port] = Field(default_factory=list)
    exclude_outbound_cidrs: list[str] = Field(default_factory=list)
    include_outbound_cidrs: list[str] = Field(default_factory=list)
    exclude_inbound_ports: list[Port] = Field(default_factory=list)


class InboundSettings(_Strict):
    """The inbound listener in front of the app; the app's port comes from the pod."""

    enabled: bool = True
    port: Port = 15006


class InjectorConfig(_Strict):
    image: str = Field(min_length=1)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    container_name: Name = "meshagent"
    init_container_name: Name = "meshagent-init"
    # The agent's config file comes from this ConfigMap, in the pod's own namespace
    # (a ConfigMap volume cannot reach across namespaces).
    config_map: Name = "meshagent-agent"
    uid: Annotated[int, Field(ge=1, le=2**31 - 1)] = 1337
    gid: Annotated[int, Field(ge=1, le=2**31 - 1)] = 1337
    admin_port: Port = 15000
    capture: CaptureSettings = Field(default_factory=CaptureSettings)
    inbound: InboundSettings = Field(default_factory=InboundSettings)
    resources: Resources = Field(default_factory=Resources)
    # Run the agent as a Kubernetes native sidecar (an init container that keeps running,
    # 1.29+): it starts before the app and outlives it. Otherwise it is the first app
    # container and holds the others until it answers (see ``hold_application``).
    native_sidecar: bool = False
    # Without native sidecars: a postStart hook that waits for the agent's /healthz, so the
    # kubelet starts the app containers only once the agent listens (Istio's
    # holdApplicationUntilProxyStarts). /healthz, not /readyz: readiness waits for the app.
    hold_application: bool = True
    hold_timeout_s: Annotated[int, Field(ge=1, le=600)] = 60
    # Extra environment for the agent container, as Kubernetes EnvVar objects (so that
    # registry credentials can come from Secrets with valueFrom.secretKeyRef).
    env: list[dict[str, Any]] = Field(default_factory=list)
    # The variable each app container gets with the OpenAPI's URL.
    app_env_name: str = "MESHAGENT_OPENAPI"

    @field_validator("env")
    @classmethod
    def _env_named(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, entry in enumerate(value):
            if not isinstance(entry.get("name"), str) or not entry["name"]:
                raise ValueError(f"entry {i} has no name")
        return value


def parse_injector_config(raw: object, source: str = "<config>") -> InjectorConfig:
    if not isinstance(raw, dict):
        raise ConfigError([f"{source}: the injector configuration must be a mapping"])
    try:
        return InjectorConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(list(format_validation_errors(exc))) from None


def load_injector_config(path: str | Path) -> InjectorConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: invalid YAML: {exc}"]) from None
    return parse_injector_config(raw, str(path))
