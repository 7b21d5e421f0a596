"""RFC 6902 JSON Patch operations that add a :class:`~agent.injector.sidecar.Sidecar` to a
pod. Pure: a pod (as JSON) in, a list of operations out.

Order matters: the app containers' environment is patched at their original indices
before the agent container is inserted in front of them.
"""

from __future__ import annotations

from typing import Any

from agent.injector.overrides import INJECTED
from agent.injector.sidecar import Json, Sidecar


def escape(key: str) -> str:
    """A map key as a JSON Pointer token (RFC 6901): ``~`` → ``~0``, ``/`` → ``~1``."""
    return key.replace("~", "~0").replace("/", "~1")


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _add_to_list(ops: list[Json], path: str, current: Any, items: list[Json], at: int) -> None:
    """Insert ``items`` at index ``at`` (-1: append) of the list at ``path``, creating it."""
    if not items:
        return
    if not isinstance(current, list) or not current:
        ops.append({"op": "add", "path": path, "value": items})
        return
    for offset, item in enumerate(items):
        where = "-" if at < 0 else str(at + offset)
        ops.append({"op": "add", "path": f"{path}/{where}", "value": item})


def build_patch(pod: Json, sidecar: Sidecar) -> list[Json]:
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        raise ValueError("the pod has no spec")
    ops: list[Json] = []

    containers = _list(spec.get("containers"))
    env_name = sidecar.app_env["name"]
    for i, container in enumerate(containers):
        if not isinstance(container, dict):
            continue
        env = container.get("env")
        if isinstance(env, list) and any(
            isinstance(e, dict) and e.get("name") == env_name for e in env
        ):
            continue  # the app set it itself: its value wins
        _add_to_list(ops, f"/spec/containers/{i}/env", env, [sidecar.app_env], -1)

    # iptables first, before any other init container; a native sidecar right after it, so
    # the app's own init containers already have the agent (their traffic is captured too).
    init_items = [c for c in (sidecar.init, sidecar.agent if sidecar.native else None) if c]
    _add_to_list(ops, "/spec/initContainers", spec.get("initContainers"), init_items, 0)
    if not sidecar.native:
        # First: the kubelet starts containers in order and waits for its postStart hook.
        _add_to_list(ops, "/spec/containers", containers, [sidecar.agent], 0)
    _add_to_list(ops, "/spec/volumes", spec.get("volumes"), [sidecar.volume], -1)

    metadata = pod.get("metadata")
    if not isinstance(metadata, dict):
        ops.append(
            {"op": "add", "path": "/metadata", "value": {"annotations": {INJECTED: sidecar.status}}}
        )
    elif isinstance(metadata.get("annotations"), dict):
        path = f"/metadata/annotations/{escape(INJECTED)}"
        ops.append({"op": "add", "path": path, "value": sidecar.status})
    else:
        ops.append(
            {"op": "add", "path": "/metadata/annotations", "value": {INJECTED: sidecar.status}}
        )
    return ops
