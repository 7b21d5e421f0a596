"""AdmissionReview v1 in, AdmissionReview out: the injector's decision, sans-IO.

Whatever arrives, the answer is a well-formed AdmissionReview. Input the injector cannot
use (a malformed body, another kind, an unknown version) is *allowed unpatched* with the
reason logged: a sidecar injector must never be the reason a pod cannot be created. The
one denial is a pod whose own ``meshagent.io/*`` annotations are invalid, because then
the author asked for something the injector cannot give.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

from agent.injector.config import InjectorConfig
from agent.injector.overrides import INJECT, INJECTED, InvalidAnnotations, settings_for
from agent.injector.patch import build_patch
from agent.injector.sidecar import Json, build_sidecar

API_VERSION = "admission.k8s.io/v1"


class Source(Enum):
    """Which webhook called: the chart registers one per selector (docs/kubernetes.md)."""

    POD = "pod"  # the pod carries meshagent.io/inject=enabled (objectSelector)
    NAMESPACE = "namespace"  # its namespace does (namespaceSelector); the pod has no label


@dataclass(frozen=True)
class Verdict:
    uid: str
    allowed: bool
    reason: str  # why, for the log line (and the denial's message)
    patch: list[Json] | None = None
    api_version: str = API_VERSION
    pod: str = ""  # namespace/name, for the log line

    @property
    def injected(self) -> bool:
        return self.patch is not None

    def response(self) -> Json:
        answer: Json = {"uid": self.uid, "allowed": self.allowed}
        if self.patch is not None:
            answer["patchType"] = "JSONPatch"
            answer["patch"] = base64.b64encode(json.dumps(self.patch).encode()).decode()
        if not self.allowed:
            answer["status"] = {"code": 400, "reason": "BadRequest", "message": self.reason}
        return {"apiVersion": self.api_version, "kind": "AdmissionReview", "response": answer}


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def review(body: bytes, source: Source, config: InjectorConfig) -> Verdict:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return Verdict("", True, f"malformed body: {exc}")
    if not isinstance(document, dict) or document.get("kind") != "AdmissionReview":
        return Verdict("", True, "not an AdmissionReview")
    request = document.get("request")
    uid = request.get("uid") if isinstance(request, dict) else None
    if not isinstance(request, dict) or not isinstance(uid, str):
        return Verdict("", True, "an AdmissionReview without a request uid")
    version = document.get("apiVersion")
    if version != API_VERSION:
        # Echo an admission.k8s.io version back, so a server that sent it can read the answer.
        echo = (
            version
            if isinstance(version, str) and version.startswith("admission.k8s.io/")
            else API_VERSION
        )
        return Verdict(uid, True, f"unknown AdmissionReview version {version!r}", api_version=echo)
    return _review_pod(uid, request, source, config)


def _review_pod(uid: str, request: Json, source: Source, config: InjectorConfig) -> Verdict:
    kind = request.get("kind")
    if not isinstance(kind, dict) or kind.get("kind") != "Pod" or request.get("subResource"):
        return Verdict(uid, True, f"not a pod: {kind!r}")
    if request.get("operation") != "CREATE":
        return Verdict(uid, True, f"operation {request.get('operation')!r} is not CREATE")
    pod = request.get("object")
    if not isinstance(pod, dict) or not isinstance(pod.get("spec"), dict):
        return Verdict(uid, True, "the request's object is not a pod with a spec")
    metadata = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
    assert isinstance(metadata, dict)
    namespace = request.get("namespace") or metadata.get("namespace") or ""
    name = metadata.get("name") or metadata.get("generateName") or ""
    where = f"{namespace}/{name}"
    labels = _str_map(metadata.get("labels"))
    annotations = _str_map(metadata.get("annotations"))

    def allow(reason: str) -> Verdict:
        return Verdict(uid, True, reason, pod=where)

    label = labels.get(INJECT)
    if label == "disabled":
        return allow(f"{INJECT}=disabled on the pod")
    if source is Source.POD and label != "enabled":
        return allow(f"called for a pod label, but the pod has {INJECT}={label!r}")
    if pod["spec"].get("hostNetwork") is True:
        return allow("hostNetwork pod: the node's network cannot be captured per pod")
    if INJECTED in annotations:
        return allow("already injected")
    names = {
        c.get("name")
        for key in ("containers", "initContainers")
        for c in (pod["spec"].get(key) or [])
        if isinstance(c, dict)
    }
    if config.container_name in names:
        return allow(f"already has a container named {config.container_name!r}")
    try:
        settings = settings_for(config, annotations, pod["spec"])
    except InvalidAnnotations as exc:
        return Verdict(uid, False, f"meshagent injection: {exc}", pod=where)
    sidecar = build_sidecar(config, settings, labels)
    try:
        patch = build_patch(pod, sidecar)
    except ValueError as exc:
        return allow(f"cannot patch: {exc}")
    return Verdict(uid, True, "injected", patch=patch, pod=where)
