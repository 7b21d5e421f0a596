"""Per-pod annotations that override the injector's defaults, and the settings that result.

A bad annotation is the pod author's mistake, named in the denial: injecting defaults the
author explicitly asked to change would produce a pod that looks right and is not.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from agent.injector.config import NAME, QUANTITY, InjectorConfig, Resources

PREFIX = "meshagent.io/"
INJECT = PREFIX + "inject"  # label (pod or namespace): enabled | disabled
INJECTED = PREFIX + "injected"  # annotation: what was injected (JSON)

ADMIN_PORT = PREFIX + "admin-port"
CAPTURE_PORT = PREFIX + "capture-port"
INBOUND_PORT = PREFIX + "inbound-port"
APP_PORT = PREFIX + "app-port"
CAPTURE = PREFIX + "capture"  # enabled | disabled
INBOUND = PREFIX + "inbound"  # enabled | disabled
CONFIG_MAP = PREFIX + "config-map"
EXCLUDE_OUTBOUND_PORTS = PREFIX + "exclude-outbound-ports"
EXCLUDE_INBOUND_PORTS = PREFIX + "exclude-inbound-ports"
EXCLUDE_OUTBOUND_CIDRS = PREFIX + "exclude-outbound-cidrs"
RESOURCES = {
    PREFIX + "cpu-request": ("requests", "cpu"),
    PREFIX + "memory-request": ("requests", "memory"),
    PREFIX + "cpu-limit": ("limits", "cpu"),
    PREFIX + "memory-limit": ("limits", "memory"),
}


class InvalidAnnotations(ValueError):
    """One or more override annotations cannot be honoured; ``errors`` names each."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("; ".join(errors))


@dataclass(frozen=True)
class Settings:
    """What one pod gets: the injector's config with the pod's annotations applied."""

    admin_port: int
    capture: bool
    capture_port: int
    inbound: bool
    inbound_port: int
    app_port: int | None
    config_map: str
    exclude_outbound_ports: tuple[int, ...]
    exclude_inbound_ports: tuple[int, ...]
    exclude_outbound_cidrs: tuple[str, ...]
    include_outbound_cidrs: tuple[str, ...]
    resources: Resources


def _port(key: str, text: str, errors: list[str]) -> int | None:
    if not text.strip().isdigit() or not 1 <= int(text) <= 65535:
        errors.append(f"{key}: {text!r} is not a port between 1 and 65535")
        return None
    return int(text)


def _ports(key: str, text: str, errors: list[str]) -> tuple[int, ...]:
    ports = []
    for part in text.split(","):
        if part.strip():
            port = _port(key, part.strip(), errors)
            if port is not None:
                ports.append(port)
    return tuple(ports)


def _cidrs(key: str, text: str, errors: list[str]) -> tuple[str, ...]:
    cidrs = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            ipaddress.ip_network(part, strict=False)
        except ValueError:
            errors.append(f"{key}: {part!r} is not a CIDR")
            continue
        cidrs.append(part)
    return tuple(cidrs)


def _switch(key: str, text: str, default: bool, errors: list[str]) -> bool:
    if text == "enabled":
        return True
    if text == "disabled":
        return False
    errors.append(f"{key}: {text!r} is neither 'enabled' nor 'disabled'")
    return default


def _first_container_port(pod_spec: Mapping[str, object]) -> int | None:
    """The app's port when no annotation names it: the first TCP containerPort declared."""
    containers = pod_spec.get("containers")
    if not isinstance(containers, list):
        return None
    for container in containers:
        ports = container.get("ports") if isinstance(container, dict) else None
        for port in ports if isinstance(ports, list) else ():
            if (
                isinstance(port, dict)
                and isinstance(port.get("containerPort"), int)
                and port.get("protocol", "TCP") == "TCP"
            ):
                return int(port["containerPort"])
    return None


def settings_for(
    config: InjectorConfig, annotations: Mapping[str, str], pod_spec: Mapping[str, object]
) -> Settings:
    """Apply the pod's annotations to ``config``; raise :class:`InvalidAnnotations`."""
    errors: list[str] = []

    def get(key: str) -> str | None:
        value = annotations.get(key)
        return value if isinstance(value, str) else None

    def port(key: str, default: int) -> int:
        text = get(key)
        return default if text is None else (_port(key, text, errors) or default)

    admin_port = port(ADMIN_PORT, config.admin_port)
    capture_port = port(CAPTURE_PORT, config.capture.port)
    inbound_port = port(INBOUND_PORT, config.inbound.port)
    text = get(APP_PORT)
    app_port = _port(APP_PORT, text, errors) if text is not None else None
    if app_port is None and text is None:
        app_port = _first_container_port(pod_spec)
    capture = config.capture.enabled
    if (text := get(CAPTURE)) is not None:
        capture = _switch(CAPTURE, text, capture, errors)
    inbound = config.inbound.enabled
    if (text := get(INBOUND)) is not None:
        inbound = _switch(INBOUND, text, inbound, errors)
    # Inbound relays to one app port: without one there is nothing to relay to.
    inbound = inbound and app_port is not None
    config_map = get(CONFIG_MAP) or config.config_map
    if not NAME.match(config_map) or len(config_map) > 63:
        errors.append(f"{CONFIG_MAP}: {config_map!r} is not a ConfigMap name (DNS-1123 label)")
    exclude_out = tuple(config.capture.exclude_outbound_ports)
    if (text := get(EXCLUDE_OUTBOUND_PORTS)) is not None:
        exclude_out = _ports(EXCLUDE_OUTBOUND_PORTS, text, errors)
    exclude_in = tuple(config.capture.exclude_inbound_ports)
    if (text := get(EXCLUDE_INBOUND_PORTS)) is not None:
        exclude_in = _ports(EXCLUDE_INBOUND_PORTS, text, errors)
    exclude_cidrs = tuple(config.capture.exclude_outbound_cidrs)
    if (text := get(EXCLUDE_OUTBOUND_CIDRS)) is not None:
        exclude_cidrs = _cidrs(EXCLUDE_OUTBOUND_CIDRS, text, errors)

    requests: dict[str, str] = {str(k): v for k, v in config.resources.requests.items()}
    limits: dict[str, str] = {str(k): v for k, v in config.resources.limits.items()}
    for key, (section, resource) in RESOURCES.items():
        if (text := get(key)) is None:
            continue
        if not QUANTITY.match(text):
            errors.append(f"{key}: {text!r} is not a Kubernetes quantity (e.g. 100m, 128Mi)")
            continue
        (requests if section == "requests" else limits)[resource] = text

    used = [("admin", admin_port)]
    if capture:
        used.append(("capture", capture_port))
    if inbound:
        used.append(("inbound", inbound_port))
    if app_port is not None:
        used.append(("app", app_port))
    seen: dict[int, str] = {}
    for name, number in used:
        if number in seen:
            errors.append(f"the {name} port {number} is also the {seen[number]} port")
        seen.setdefault(number, name)
    if errors:
        raise InvalidAnnotations(errors)
    return Settings(
        admin_port=admin_port,
        capture=capture,
        capture_port=capture_port,
        inbound=inbound,
        inbound_port=inbound_port,
        app_port=app_port,
        config_map=config_map,
        exclude_outbound_ports=exclude_out,
        exclude_inbound_ports=exclude_in,
        exclude_outbound_cidrs=exclude_cidrs,
        include_outbound_cidrs=tuple(config.capture.include_outbound_cidrs),
        resources=Resources.model_validate({"requests": requests, "limits": limits}),
    )
