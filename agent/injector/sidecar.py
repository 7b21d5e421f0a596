"""The Kubernetes objects injected into a pod: the agent container, the iptables init
container, the config volume, and the app containers' environment. Pure data.

The agent is configured by its ConfigMap (registries, services, listeners) plus
``MESHAGENT_*`` overrides that pin what must agree with the pod spec (ports, capture,
inbound): the init container's iptables flags and the agent's listeners come from the same
:class:`~agent.injector.overrides.Settings`, so they cannot disagree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent import __version__
from agent.injector.config import InjectorConfig
from agent.injector.overrides import Settings

CONFIG_VOLUME = "meshagent-config"
CONFIG_DIR = "/etc/meshagent"
CONFIG_FILE = f"{CONFIG_DIR}/agent.yaml"
ADMIN_PORT_NAME = "meshagent-admin"  # container port names are at most 15 characters
APP_NAME_LABELS = ("app.kubernetes.io/name", "app")

# The init container runs once, briefly: small, fixed resources (a pod's effective
# request is the max of its init containers and the sum of its containers).
INIT_RESOURCES = {
    "requests": {"cpu": "10m", "memory": "32Mi"},
    "limits": {"cpu": "500m", "memory": "128Mi"},
}

Json = dict[str, Any]


@dataclass(frozen=True)
class Sidecar:
    agent: Json
    init: Json | None  # the iptables init container; None when capture is off
    volume: Json
    app_env: Json  # added to each app container that does not set it already
    native: bool  # the agent goes into initContainers with restartPolicy Always
    status: str  # the value of the meshagent.io/injected annotation


def _env(name: str, value: object) -> Json:
    text = value if isinstance(value, str) else json.dumps(value)
    return {"name": name, "value": text}


def _field(name: str, path: str) -> Json:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _agent_env(config: InjectorConfig, settings: Settings, labels: Mapping[str, str]) -> list[Json]:
    # Probes come from the kubelet on the pod's address, so the admin port listens wide;
    # state-changing requests stay loopback-only (admin.allow_remote_writes is false).
    admin_host = "::" if config.capture.ipv6 else "0.0.0.0"
    env = [
        _env("MESHAGENT_ADMIN__HOST", admin_host),
        _env("MESHAGENT_ADMIN__PORT", settings.admin_port),
        _env("MESHAGENT_CAPTURE__ENABLED", settings.capture),
    ]
    if settings.capture:
        env.append(_env("MESHAGENT_CAPTURE__PORT", settings.capture_port))
        if config.capture.ipv6:
            env.append(_env("MESHAGENT_CAPTURE__IPV6", True))
    env.append(_env("MESHAGENT_INBOUND__ENABLED", settings.inbound))
    if settings.inbound:
        env.append(_env("MESHAGENT_INBOUND__PORT", settings.inbound_port))
        env.append(_env("MESHAGENT_INBOUND__APP_PORT", settings.app_port))
    app_name = next((labels[k] for k in APP_NAME_LABELS if isinstance(labels.get(k), str)), "")
    if app_name:
        env.append(_env("MESHAGENT_APP__NAME", app_name))
    env += [
        _field("POD_NAME", "metadata.name"),
        _field("POD_NAMESPACE", "metadata.namespace"),
        _field("POD_IP", "status.podIP"),
    ]
    return env + [dict(entry) for entry in config.env]


def _iptables_args(config: InjectorConfig, settings: Settings) -> list[str]:
    # The admin port is always excluded from inbound capture: kubelet probes reach it.
    exclude_in = [settings.admin_port, *settings.exclude_inbound_ports]
    args = [
        "iptables",
        "install",
        "--capture-port",
        str(settings.capture_port),
        "--inbound-port",
        str(settings.inbound_port if settings.inbound else 0),
        "--uid",
        str(config.uid),
        "--gid",
        str(config.gid),
        "--exclude-inbound-ports",
        ",".join(str(p) for p in dict.fromkeys(exclude_in)),
    ]
    if settings.exclude_outbound_ports:
        ports = ",".join(str(p) for p in settings.exclude_outbound_ports)
        args += ["--exclude-outbound-ports", ports]
    if settings.exclude_outbound_cidrs:
        args += ["--exclude-outbound-cidrs", ",".join(settings.exclude_outbound_cidrs)]
    if settings.include_outbound_cidrs:
        args += ["--include-outbound-cidrs", ",".join(settings.include_outbound_cidrs)]
    if config.capture.ipv6:
        args.append("--ipv6")
    return args


def build_sidecar(config: InjectorConfig, settings: Settings, labels: Mapping[str, str]) -> Sidecar:
    admin = settings.admin_port
    agent: Json = {
        "name": config.container_name,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["meshagent"],
        "args": ["run", "-c", CONFIG_FILE],
        "env": _agent_env(config, settings, labels),
        "ports": [{"name": ADMIN_PORT_NAME, "containerPort": admin, "protocol": "TCP"}],
        # The agent may wait for its registries before the API answers (connect_timeout_s):
        # the startup probe gives it two minutes before liveness counts.
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": admin},
            "periodSeconds": 1,
            "failureThreshold": 120,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": admin},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": admin},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "securityContext": {
            "runAsUser": config.uid,
            "runAsGroup": config.gid,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True}],
    }
    resources = settings.resources.to_k8s()
    if resources:
        agent["resources"] = resources
    if config.native_sidecar:
        agent["restartPolicy"] = "Always"
    elif config.hold_application:
        healthz = f"http://127.0.0.1:{admin}/healthz"
        wait = [
            "meshagent",
            "wait-ready",
            "--url",
            healthz,
            "--timeout",
            str(config.hold_timeout_s),
        ]
        agent["lifecycle"] = {"postStart": {"exec": {"command": wait}}}

    init: Json | None = None
    if settings.capture:
        init = {
            "name": config.init_container_name,
            "image": config.image,
            "imagePullPolicy": config.image_pull_policy,
            "command": ["meshagent"],
            "args": _iptables_args(config, settings),
            "resources": INIT_RESOURCES,
            # Root with only the two capabilities iptables needs, in the pod's own netns.
            "securityContext": {
                "runAsUser": 0,
                "runAsGroup": 0,
                "runAsNonRoot": False,
                "allowPrivilegeEscalation": False,
                "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            },
        }
    status = {
        "version": __version__,
        "containers": [] if config.native_sidecar else [config.container_name],
        "initContainers": [
            *([init["name"]] if init is not None else []),
            *([config.container_name] if config.native_sidecar else []),
        ],
        "volumes": [CONFIG_VOLUME],
        "capture": settings.capture,
        "inbound": settings.inbound,
        "adminPort": admin,
    }
    return Sidecar(
        agent=agent,
        init=init,
        volume={"name": CONFIG_VOLUME, "configMap": {"name": settings.config_map}},
        app_env=_env(config.app_env_name, f"http://127.0.0.1:{admin}"),
        native=config.native_sidecar,
        status=json.dumps(status, separators=(",", ":"), sort_keys=True),
    )
