"""Plugins: found through entry points, loaded lazily by the name the configuration uses.

Each kind of plugin is one entry point group (``meshagent.registries``, ...). An entry point
resolves to a :class:`Plugin`: a name, a pydantic model for its configuration (validated
before anything is built) and a factory. Nothing is imported until the configuration names
it, so an agent that uses only the embedded registry never imports kazoo.

The built-in plugins register the same way a third party would, in pyproject.toml.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, ValidationError

from agent.errors import ConfigError, PluginError

T = TypeVar("T")


class PluginKind(StrEnum):
    """Each kind is one entry point group."""

    REGISTRY = "meshagent.registries"
    PROTOCOL = "meshagent.protocols"
    LB_POLICY = "meshagent.lb_policies"
    HEALTH_CHECKER = "meshagent.health_checkers"


class EmptyConfig(BaseModel):
    """The configuration model of a plugin that takes no settings."""

    model_config = ConfigDict(extra="forbid")


@runtime_checkable
class NamesServices(Protocol):
    """A listener config model that names services besides the listener's own (routes):
    the agent checks them when it is built, so ``check-config`` refuses an unknown one."""

    def service_references(self) -> list[tuple[str, str]]:
        """(path inside the listener's config, service name) of each one named."""
        ...


@dataclass(frozen=True)
class Plugin(Generic[T]):
    """What an entry point resolves to.

    ``factory`` receives the validated config model instance (of ``config_model``) and
    returns the plugin's product (a registry, a load balancer factory, ...).
    """

    kind: PluginKind
    name: str
    config_model: type[BaseModel]
    factory: Callable[[Any], T]
    # Protocol plugins: the model of ``services[].options`` for services speaking the
    # protocol (timeouts, retries, cluster strategy...); None means it takes none.
    service_options_model: type[BaseModel] | None = None

    def validate_config(self, raw: object, path: str) -> BaseModel:
        """Validate ``raw`` against the plugin's model; errors carry ``path`` as prefix."""
        try:
            return self.config_model.model_validate(raw if raw is not None else {})
        except ValidationError as exc:
            raise ConfigError(format_validation_errors(exc, prefix=path)) from None

    def validate_service_options(self, raw: dict[str, Any], path: str) -> BaseModel | None:
        """Validate a service's ``options`` against ``service_options_model``."""
        if self.service_options_model is None:
            if raw:
                raise ConfigError([f"{path}: {self.kind.value} plugin {self.name!r} takes none"])
            return None
        try:
            return self.service_options_model.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(format_validation_errors(exc, prefix=path)) from None

    def build(self, raw: object, path: str) -> T:
        return self.factory(self.validate_config(raw, path))


def format_validation_errors(exc: ValidationError, prefix: str = "") -> list[str]:
    """Turn pydantic errors into ``listeners[1].port: must be ...`` lines."""
    lines = []
    for error in exc.errors():
        path = prefix
        for part in error["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            else:
                path += f".{part}" if path else str(part)
        message = error["msg"]
        # pydantic prefixes validator messages with "Value error, "; the path says enough.
        message = message.removeprefix("Value error, ")
        lines.append(f"{path or '<root>'}: {message}")
    return lines


def installed(kind: PluginKind) -> dict[str, importlib.metadata.EntryPoint]:
    """The installed plugins of ``kind`` by name; two plugins of one name are refused."""
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for entry_point in importlib.metadata.entry_points(group=kind.value):
        previous = found.get(entry_point.name)
        if previous is not None and previous.value != entry_point.value:
            raise PluginError(
                f"two {kind.value} plugins are named {entry_point.name!r}: "
                f"{previous.value} and {entry_point.value}"
            )
        found[entry_point.name] = entry_point
    return found


_loaded: dict[tuple[PluginKind, str], Plugin[Any]] = {}


def load(kind: PluginKind, name: str) -> Plugin[Any]:
    """Import and return the plugin ``name`` of ``kind``, or a PluginError naming the choices."""
    key = (kind, name)
    cached = _loaded.get(key)
    if cached is not None:
        return cached
    available = installed(kind)
    entry_point = available.get(name)
    if entry_point is None:
        choices = ", ".join(sorted(available)) or "none"
        raise PluginError(f"unknown {kind.value} plugin {name!r}; installed: {choices}")
    try:
        plugin = entry_point.load()
    except Exception as exc:  # an extra not installed, a broken plugin: say which and why
        raise PluginError(
            f"{kind.value} plugin {name!r} ({entry_point.value}) failed to load: {exc}"
        ) from exc
    if not isinstance(plugin, Plugin) or plugin.kind is not kind or plugin.name != name:
        raise PluginError(
            f"{kind.value} entry point {name!r} ({entry_point.value}) is not a "
            f"{kind.name} Plugin named {name!r}"
        )
    _loaded[key] = plugin
    return plugin
