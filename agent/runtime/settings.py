"""The agent's own dynamic settings: one document in the config source, applied without restart.

```yaml
services:
  orders:
    lb_policy: round_robin        # any installed LB policy (its config: lb_config)
    weights: {"10.0.0.7:8080": 0} # endpoint id -> weight, over the registry's
```

The document is validated whole before anything changes (unknown service, unknown policy,
bad weight): a bad one is rejected with every error path, logged, shown in ``/v1/config``,
and the previous settings stay in force (:class:`~agent.runtime.dynamic.WatchedDocument`).
A service the document no longer names gets its static configuration back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from agent.cluster.lb import LoadBalancerFactory
from agent.errors import ConfigError, PluginError
from agent.plugins import PluginKind, load

if TYPE_CHECKING:
    from agent.runtime.agent import Agent


class ServiceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    lb_policy: str | None = None
    lb_config: dict[str, Any] = Field(default_factory=dict)
    weights: dict[str, Annotated[int, Field(ge=0, le=10000)]] = Field(default_factory=dict)


class DynamicSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    services: dict[str, ServiceSettings] = Field(default_factory=dict)


class SettingsApplier:
    """Turns a validated document into cluster changes, all or nothing."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    def __call__(self, settings: DynamicSettings | None) -> None:
        wanted = settings.services if settings is not None else {}
        # Check everything first: a ValueError here rejects the whole document.
        errors: list[str] = []
        balancers: dict[str, tuple[LoadBalancerFactory, str]] = {}
        for name, service in wanted.items():
            if name not in self._agent.clusters:
                errors.append(f"services.{name}: no such service in the agent's config")
                continue
            if service.lb_policy is not None:
                try:
                    factory: LoadBalancerFactory = load(
                        PluginKind.LB_POLICY, service.lb_policy
                    ).build(service.lb_config, f"services.{name}.lb_config")
                except (PluginError, ConfigError) as exc:
                    errors.append(f"services.{name}.lb_policy: {exc}")
                    continue
                balancers[name] = (factory, service.lb_policy)
        if errors:
            raise ValueError("\n".join(errors))
        for config in self._agent.config.services:
            cluster = self._agent.clusters[config.name]
            override = wanted.get(config.name)
            factory_policy = balancers.get(config.name)
            if factory_policy is None:
                factory_policy = (
                    load(PluginKind.LB_POLICY, config.lb.policy).build(
                        config.lb.config, f"services.{config.name}.lb.config"
                    ),
                    config.lb.policy,
                )
            if cluster.lb_policy != factory_policy[1] or config.name in balancers:
                cluster.set_balancer(factory_policy[0], factory_policy[1])
            cluster.set_weight_overrides(dict(override.weights) if override is not None else {})
