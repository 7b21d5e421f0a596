from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from agent.injector.config import InjectorConfig
from agent.injector.review import Source, Verdict, review

CONFIG = InjectorConfig(image="m:1")


def _pod(labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labels": labels or {}},
        "spec": {"containers": [{"name": "app", "image": "x"}], **spec},
    }


def _body(
    pod: Any, *, version: str = "admission.k8s.io/v1", kind: str = "Pod", operation: str = "CREATE"
) -> bytes:
    return json.dumps(
        {
            "apiVersion": version,
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": kind},
                "namespace": "ns",
                "operation": operation,
                "object": pod,
            },
        }
    ).encode()


ENABLED = {"meshagent.io/inject": "enabled"}


def test_labelled_pod_is_patched() -> None:
    verdict = review(_body(_pod(ENABLED)), Source.POD, CONFIG)
    assert verdict.injected and verdict.allowed and verdict.uid == "u-1" and verdict.pod == "ns/p"
    answer = verdict.response()
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert answer["response"]["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(answer["response"]["patch"])) == verdict.patch


@pytest.mark.parametrize(
    ("pod", "source", "reason"),
    [
        (_pod({"meshagent.io/inject": "disabled"}), Source.NAMESPACE, "disabled"),
        (_pod(), Source.POD, "called for a pod label"),
        (_pod(ENABLED, hostNetwork=True), Source.POD, "hostNetwork"),
        (
            {
                **_pod(ENABLED),
                "metadata": {"labels": ENABLED, "annotations": {"meshagent.io/injected": "{}"}},
            },
            Source.POD,
            "already injected",
        ),
        (
            _pod(ENABLED, initContainers=[{"name": "meshagent", "image": "x"}]),
            Source.POD,
            "already has a container",
        ),
    ],
)
def test_skipped_pods_are_allowed_unpatched(
    pod: dict[str, Any], source: Source, reason: str
) -> None:
    verdict = review(_body(pod), source, CONFIG)
    assert verdict.allowed and not verdict.injected and reason in verdict.reason
    assert "patch" not in verdict.response()["response"]


def test_namespace_webhook_injects_an_unlabelled_pod() -> None:
    assert review(_body(_pod()), Source.NAMESPACE, CONFIG).injected


def test_bad_annotations_are_a_denial_with_a_status() -> None:
    pod = _pod(ENABLED)
    pod["metadata"]["annotations"] = {"meshagent.io/admin-port": "x"}
    verdict = review(_body(pod), Source.POD, CONFIG)
    assert not verdict.allowed
    status = verdict.response()["response"]["status"]
    assert status["code"] == 400 and "meshagent.io/admin-port" in status["message"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{", "malformed body"),
        (b"\xff", "malformed body"),
        (b"null", "not an AdmissionReview"),
        (b'{"kind": "Pod"}', "not an AdmissionReview"),
        (b'{"kind": "AdmissionReview", "request": {}}', "without a request uid"),
        (b'{"kind": "AdmissionReview", "request": []}', "without a request uid"),
        (_body(_pod(ENABLED), kind="Deployment"), "not a pod"),
        (_body(_pod(ENABLED), operation="UPDATE"), "is not CREATE"),
        (_body(["not", "a", "pod"]), "not a pod with a spec"),
        (_body({"metadata": {}}), "not a pod with a spec"),
    ],
)
def test_bad_input_is_allowed_with_a_reason(body: bytes, reason: str) -> None:
    verdict = review(body, Source.POD, CONFIG)
    assert verdict.allowed and not verdict.injected and reason in verdict.reason


@pytest.mark.parametrize(
    ("version", "echo"),
    [
        ("admission.k8s.io/v1beta1", "admission.k8s.io/v1beta1"),
        ("admission.k8s.io/v2", "admission.k8s.io/v2"),
        ("something/else", "admission.k8s.io/v1"),
        (None, "admission.k8s.io/v1"),
    ],
)
def test_unknown_versions_are_allowed_and_answered_in_kind(version: Any, echo: str) -> None:
    verdict = review(_body(_pod(ENABLED), version=version), Source.POD, CONFIG)
    assert (
        verdict.allowed
        and not verdict.injected
        and "unknown AdmissionReview version" in verdict.reason
    )
    assert verdict.response()["apiVersion"] == echo
    assert verdict.response()["response"]["uid"] == "u-1"


def test_verdict_response_of_a_plain_allow() -> None:
    assert Verdict("u", True, "why").response() == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "u", "allowed": True},
    }
