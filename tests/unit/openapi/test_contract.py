from __future__ import annotations

import yaml

from openapi.generate import CONTRACT, contract, render


def test_openapi_yaml_is_generated_from_the_app() -> None:
    # When this fails, run `make openapi` and review the contract change.
    assert CONTRACT.read_text(encoding="utf-8") == render()


def test_contract_covers_the_promised_routes() -> None:
    paths = contract()["paths"]
    assert {
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/services",
        "/v1/services/{service}/instances",
        "/v1/registrations/{service}/{instance_id}",
        "/v1/clusters",
        "/v1/invoke/{protocol}/{service}/{method}",
    } <= set(paths)
    assert set(paths["/v1/registrations/{service}/{instance_id}"]) == {"put", "delete"}
    assert yaml.safe_load(render())["info"]["title"] == "meshagent"
