from __future__ import annotations

from typing import Any

import jsonpatch
import pytest

from agent.injector.config import InjectorConfig
from agent.injector.overrides import settings_for
from agent.injector.patch import build_patch, escape
from agent.injector.sidecar import Sidecar, build_sidecar


def _sidecar(pod: dict[str, Any], **config: Any) -> Sidecar:
    injector = InjectorConfig(image="m:1", **config)
    return build_sidecar(injector, settings_for(injector, {}, pod["spec"]), {})


def test_escape() -> None:
    assert escape("meshagent.io/injected") == "meshagent.io~1injected"
    assert escape("a~b/c") == "a~0b~1c"


def test_a_minimal_pod_gets_lists_and_maps_created() -> None:
    pod: dict[str, Any] = {"spec": {"containers": [{"name": "app", "image": "x"}]}}
    patched = jsonpatch.apply_patch(pod, build_patch(pod, _sidecar(pod)))
    assert [c["name"] for c in patched["spec"]["containers"]] == ["meshagent", "app"]
    assert [c["name"] for c in patched["spec"]["initContainers"]] == ["meshagent-init"]
    assert patched["spec"]["volumes"][0]["name"] == "meshagent-config"
    assert patched["spec"]["containers"][1]["env"] == [
        {"name": "MESHAGENT_OPENAPI", "value": "http://127.0.0.1:15000"}
    ]
    assert "meshagent.io/injected" in patched["metadata"]["annotations"]


def test_existing_lists_are_appended_to_and_indices_stay_right() -> None:
    pod: dict[str, Any] = {
        "metadata": {"annotations": {"a": "1"}},
        "spec": {
            "containers": [
                {"name": "one", "image": "x", "env": [{"name": "K", "value": "v"}]},
                {"name": "two", "image": "y"},
            ],
            "initContainers": [{"name": "first", "image": "z"}],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    }
    patched = jsonpatch.apply_patch(pod, build_patch(pod, _sidecar(pod, native_sidecar=True)))
    assert [c["name"] for c in patched["spec"]["containers"]] == ["one", "two"]
    assert [c["name"] for c in patched["spec"]["initContainers"]] == [
        "meshagent-init",
        "meshagent",
        "first",
    ]
    assert [e["name"] for e in patched["spec"]["containers"][0]["env"]] == [
        "K",
        "MESHAGENT_OPENAPI",
    ]
    assert patched["spec"]["containers"][1]["env"][0]["name"] == "MESHAGENT_OPENAPI"
    assert [v["name"] for v in patched["spec"]["volumes"]] == ["data", "meshagent-config"]
    assert patched["metadata"]["annotations"]["a"] == "1"


def test_a_pod_without_metadata_gets_it() -> None:
    pod: dict[str, Any] = {"spec": {"containers": []}}
    patched = jsonpatch.apply_patch(pod, build_patch(pod, _sidecar(pod)))
    assert list(patched["metadata"]["annotations"]) == ["meshagent.io/injected"]


def test_a_pod_without_spec_is_refused() -> None:
    pod: dict[str, Any] = {"spec": {"containers": []}}
    sidecar = _sidecar(pod)
    with pytest.raises(ValueError, match="no spec"):
        build_patch({"metadata": {}}, sidecar)
