"""``meshagent injector`` as a real process over HTTPS, sent AdmissionReview requests built
from pod specs; every patched pod is applied with a JSON Patch library and validated
against the Kubernetes Pod schema (kubernetes-validate, strict)."""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from cryptography import x509

from tests.fixtures.injector import Injector, admission_review, start_injector
from tests.fixtures.processes import LOOPBACK
from tests.fixtures.tls import issue

pytestmark = pytest.mark.integration

KUBE_VERSION = "1.37.0"
MAX_BODY = 256 * 1024
CONFIG = {
    "image": "registry.example/meshagent:0.1.0",
    "config_map": "meshagent-agent",
    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
    "env": [
        {
            "name": "MESHAGENT_SECRET_0_0",
            "valueFrom": {"secretKeyRef": {"name": "nacos", "key": "password"}},
        },
        {
            "name": "MESHAGENT_REGISTRIES__0__CONFIG__PASSWORD",
            "value": "|2-\n  $(MESHAGENT_SECRET_0_0)",
        },
    ],
}


def web_pod(**labels: str) -> dict[str, Any]:
    """A Deployment's pod as the API server sees it at create: generateName, no name."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "shop-7d9f8c-",
            "namespace": "shop",
            "labels": {"app.kubernetes.io/name": "shop", **labels},
        },
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": "nginx:1.27",
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "env": [{"name": "MODE", "value": "prod"}],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                },
                {"name": "worker", "image": "busybox:1.36", "command": ["sleep", "infinity"]},
            ],
            "initContainers": [{"name": "migrate", "image": "busybox:1.36", "command": ["true"]}],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    }


def bare_pod(**labels: str) -> dict[str, Any]:
    """A hand-written pod: no annotations, env, init containers, volumes or ports."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bare", "namespace": "shop", "labels": dict(labels)},
        "spec": {"containers": [{"name": "app", "image": "python:3.11-slim"}]},
    }


def containers(pod: dict[str, Any], key: str = "containers") -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod["spec"].get(key, [])}


def agents(pod: dict[str, Any]) -> int:
    names = [c["name"] for k in ("containers", "initContainers") for c in pod["spec"].get(k, [])]
    return names.count("meshagent")


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def valid(pod: dict[str, Any]) -> dict[str, Any]:
    kubernetes_validate.validate(pod, KUBE_VERSION, strict=True)
    return pod


@pytest.fixture(scope="module")
def injector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Injector]:
    started = start_injector(tmp_path_factory.mktemp("injector"), CONFIG, max_body_bytes=MAX_BODY)
    try:
        yield started
    finally:
        code = started.process.stop()
        assert code == 0, started.process.tail()


@pytest.fixture(scope="module")
def native_injector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Injector]:
    config = CONFIG | {"native_sidecar": True}
    started = start_injector(tmp_path_factory.mktemp("native"), config)
    try:
        yield started
    finally:
        started.process.stop()


@pytest.mark.parametrize("make_pod", [web_pod, bare_pod])
def test_labelled_pod_is_injected_once_and_stays_valid(injector: Injector, make_pod: Any) -> None:
    pod = valid(make_pod(**{"meshagent.io/inject": "enabled"}))
    once = valid(injector.inject(pod))
    assert agents(once) == 1
    agent = containers(once)["meshagent"]
    assert once["spec"]["containers"][0]["name"] == "meshagent"  # started first
    assert agent["image"] == CONFIG["image"]
    assert agent["securityContext"]["runAsUser"] == 1337
    assert agent["securityContext"]["runAsNonRoot"] is True
    assert agent["resources"] == CONFIG["resources"]
    assert agent["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 15000}
    assert agent["lifecycle"]["postStart"]["exec"]["command"][:2] == ["meshagent", "wait-ready"]
    assert {"name": "meshagent-config", "configMap": {"name": "meshagent-agent"}} in once["spec"][
        "volumes"
    ]
    agent_env = env(agent)
    assert agent_env["MESHAGENT_CAPTURE__ENABLED"] == "true"
    assert (
        agent_env["MESHAGENT_REGISTRIES__0__CONFIG__PASSWORD"] == "|2-\n  $(MESHAGENT_SECRET_0_0)"
    )
    init = once["spec"]["initContainers"][0]
    assert init["name"] == "meshagent-init"
    assert init["args"][:2] == ["iptables", "install"]
    assert sorted(init["securityContext"]["capabilities"]["add"]) == ["NET_ADMIN", "NET_RAW"]
    assert "--uid" in init["args"] and init["args"][init["args"].index("--uid") + 1] == "1337"
    for name, container in containers(once).items():
        if name != "meshagent":
            assert env(container)["MESHAGENT_OPENAPI"] == "http://127.0.0.1:15000"
    status = json.loads(once["metadata"]["annotations"]["meshagent.io/injected"])
    assert status["containers"] == ["meshagent"] and status["initContainers"] == ["meshagent-init"]

    twice = valid(injector.inject(once))
    assert twice == once
    assert agents(twice) == 1


def test_app_containers_keep_what_they_had(injector: Injector) -> None:
    pod = web_pod(**{"meshagent.io/inject": "enabled"})
    pod["spec"]["containers"][1]["env"] = [
        {"name": "MESHAGENT_OPENAPI", "value": "http://elsewhere"}
    ]
    patched = valid(injector.inject(pod))
    web, worker = containers(patched)["web"], containers(patched)["worker"]
    assert env(web)["MODE"] == "prod"
    assert env(worker)["MESHAGENT_OPENAPI"] == "http://elsewhere"  # the app's own value wins
    assert [c["name"] for c in patched["spec"]["initContainers"]] == ["meshagent-init", "migrate"]
    assert [v["name"] for v in patched["spec"]["volumes"]] == ["data", "meshagent-config"]
    # The inbound listener relays to the first declared containerPort.
    assert env(containers(patched)["meshagent"])["MESHAGENT_INBOUND__APP_PORT"] == "8080"


def test_namespace_webhook_injects_unlabelled_pods_and_respects_opt_out(injector: Injector) -> None:
    patched = valid(injector.inject(web_pod(), path="/inject/namespace"))
    assert agents(patched) == 1
    opted_out = web_pod(**{"meshagent.io/inject": "disabled"})
    response = injector.review(opted_out, "/inject/namespace")
    assert response["allowed"] is True and "patch" not in response
    # The pod webhook only injects what carries the label (its objectSelector's promise).
    response = injector.review(web_pod(), "/inject/pod")
    assert response["allowed"] is True and "patch" not in response


def test_host_network_pods_are_skipped(injector: Injector) -> None:
    pod = web_pod(**{"meshagent.io/inject": "enabled"})
    pod["spec"]["hostNetwork"] = True
    response = injector.review(pod)
    assert response["allowed"] is True and "patch" not in response
    assert injector.process.wait_for_line(r"skipped: hostNetwork pod", 10)


def test_annotations_override_ports_and_resources(injector: Injector) -> None:
    pod = web_pod(**{"meshagent.io/inject": "enabled"})
    pod["metadata"]["annotations"] = {
        "meshagent.io/admin-port": "16000",
        "meshagent.io/capture-port": "16001",
        "meshagent.io/inbound-port": "16006",
        "meshagent.io/app-port": "9090",
        "meshagent.io/cpu-request": "250m",
        "meshagent.io/memory-limit": "1Gi",
        "meshagent.io/exclude-outbound-ports": "22,3306",
        "meshagent.io/exclude-outbound-cidrs": "10.0.0.0/8",
    }
    patched = valid(injector.inject(pod))
    agent = containers(patched)["meshagent"]
    agent_env = env(agent)
    assert agent_env["MESHAGENT_ADMIN__PORT"] == "16000"
    assert agent_env["MESHAGENT_CAPTURE__PORT"] == "16001"
    assert agent_env["MESHAGENT_INBOUND__PORT"] == "16006"
    assert agent_env["MESHAGENT_INBOUND__APP_PORT"] == "9090"
    assert agent["resources"] == {
        "requests": {"cpu": "250m", "memory": "128Mi"},
        "limits": {"memory": "1Gi"},
    }
    assert agent["readinessProbe"]["httpGet"]["port"] == 16000
    args = patched["spec"]["initContainers"][0]["args"]
    flags = dict(zip(args[2::2], args[3::2], strict=True))
    assert flags["--capture-port"] == "16001" and flags["--inbound-port"] == "16006"
    assert flags["--exclude-inbound-ports"] == "16000"  # kubelet probes reach the admin port
    assert flags["--exclude-outbound-ports"] == "22,3306"
    assert flags["--exclude-outbound-cidrs"] == "10.0.0.0/8"
    assert env(containers(patched)["web"])["MESHAGENT_OPENAPI"] == "http://127.0.0.1:16000"


def test_capture_off_means_no_init_container_and_no_net_admin(injector: Injector) -> None:
    pod = bare_pod(**{"meshagent.io/inject": "enabled"})
    pod["metadata"]["annotations"] = {"meshagent.io/capture": "disabled"}
    patched = valid(injector.inject(pod))
    assert "initContainers" not in patched["spec"]
    assert "NET_ADMIN" not in json.dumps(patched)
    agent_env = env(containers(patched)["meshagent"])
    assert agent_env["MESHAGENT_CAPTURE__ENABLED"] == "false"
    # No containerPort in the pod and none annotated: inbound has nothing to relay to.
    assert agent_env["MESHAGENT_INBOUND__ENABLED"] == "false"


def test_bad_annotation_is_denied_with_its_name(injector: Injector) -> None:
    pod = web_pod(**{"meshagent.io/inject": "enabled"})
    pod["metadata"]["annotations"] = {
        "meshagent.io/cpu-limit": "2 cores",
        "meshagent.io/capture-port": "0",
    }
    response = injector.review(pod)
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert "meshagent.io/cpu-limit" in message and "meshagent.io/capture-port" in message
    assert response["status"]["code"] == 400


def test_native_sidecar_runs_as_a_restartable_init_container(native_injector: Injector) -> None:
    pod = web_pod(**{"meshagent.io/inject": "enabled"})
    once = valid(native_injector.inject(pod))
    inits = once["spec"]["initContainers"]
    assert [c["name"] for c in inits] == ["meshagent-init", "meshagent", "migrate"]
    assert inits[1]["restartPolicy"] == "Always"
    assert "lifecycle" not in inits[1]
    assert "meshagent" not in containers(once)
    twice = valid(native_injector.inject(once))
    assert twice == once and agents(twice) == 1


# -- bad input: answered, allowed unpatched, logged; the process keeps serving -------------


def _allowed_unpatched(reply: Any) -> dict[str, Any]:
    assert reply.status_code == 200, reply.text
    document: dict[str, Any] = reply.json()
    assert document["kind"] == "AdmissionReview"
    assert document["response"]["allowed"] is True
    assert "patch" not in document["response"]
    return document


def test_malformed_body(injector: Injector) -> None:
    since = injector.process.log_size()
    _allowed_unpatched(
        injector.post("/inject/pod", b'{"apiVersion": "admission.k8s.io/v1", "kind": ')
    )
    _allowed_unpatched(injector.post("/inject/pod", b"\xff\xfe not json"))
    _allowed_unpatched(injector.post("/inject/pod", b"[1, 2, 3]"))
    injector.process.wait_for_line(r"allowed unpatched: malformed body", 10, since=since)
    injector.process.wait_for_line(r"allowed unpatched: not an AdmissionReview", 10, since=since)
    assert injector.review(web_pod(**{"meshagent.io/inject": "enabled"}))["allowed"] is True


def test_not_a_pod(injector: Injector) -> None:
    review = admission_review(web_pod(**{"meshagent.io/inject": "enabled"}))
    review["request"]["kind"] = {"group": "apps", "version": "v1", "kind": "Deployment"}
    document = _allowed_unpatched(injector.post("/inject/pod", review))
    assert document["response"]["uid"] == review["request"]["uid"]
    config_map = admission_review(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    )
    config_map["request"]["kind"]["kind"] = "ConfigMap"
    _allowed_unpatched(injector.post("/inject/namespace", config_map))
    without_spec = admission_review({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}})
    _allowed_unpatched(injector.post("/inject/namespace", without_spec))
    update = admission_review(web_pod(**{"meshagent.io/inject": "enabled"}), operation="UPDATE")
    _allowed_unpatched(injector.post("/inject/pod", update))
    injector.process.wait_for_line(r"not a pod", 10)


def test_unknown_version_is_answered_in_its_own_version(injector: Injector) -> None:
    review = admission_review(web_pod(**{"meshagent.io/inject": "enabled"}))
    review["apiVersion"] = "admission.k8s.io/v1beta1"
    document = _allowed_unpatched(injector.post("/inject/pod", review))
    assert document["apiVersion"] == "admission.k8s.io/v1beta1"
    assert document["response"]["uid"] == review["request"]["uid"]
    injector.process.wait_for_line(
        r"unknown AdmissionReview version 'admission.k8s.io/v1beta1'", 10
    )


def test_body_over_the_limit_is_refused_unread(injector: Injector) -> None:
    pod = web_pod(**{"meshagent.io/inject": "enabled"})
    pod["metadata"]["annotations"] = {"big": "x" * MAX_BODY}
    reply = injector.post("/inject/pod", admission_review(pod))
    assert reply.status_code == 413
    assert injector.process.running
    assert injector.review(web_pod(**{"meshagent.io/inject": "enabled"}))["allowed"] is True


def test_unknown_route_and_health(injector: Injector) -> None:
    with injector.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.post("/mutate", content=b"{}").status_code == 404
        assert client.get("/inject/pod").status_code == 404


def test_plain_http_and_untrusted_clients_get_nothing(injector: Injector) -> None:
    import httpx

    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{LOOPBACK}:{injector.port}/healthz", timeout=5)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{injector.url}/healthz", verify=ssl.create_default_context(), timeout=5)
    assert injector.process.running


def test_a_rotated_certificate_is_served_without_a_restart(tmp_path: Path) -> None:
    started = start_injector(tmp_path, CONFIG)
    try:
        first = _served_serial(started)
        assert started.ca is not None
        _, _, renewed = issue(started.ca, started.tls_dir)
        assert renewed.serial_number != first
        started.process.wait_for(
            lambda: _served_serial(started) == renewed.serial_number, 10, what="the new certificate"
        )
        assert started.review(web_pod(**{"meshagent.io/inject": "enabled"}))["allowed"] is True
        assert re.search(r"webhook certificate reloaded", started.process.output())
    finally:
        assert started.process.stop() == 0


def _served_serial(injector: Injector) -> int:
    context = ssl.create_default_context(cadata=injector.ca_pem.decode())
    import socket

    with (
        socket.create_connection((LOOPBACK, injector.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=LOOPBACK) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number
