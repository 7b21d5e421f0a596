from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import (
    AgentConfig,
    apply_env_overrides,
    ignored_env_variables,
    load_config,
    parse_config,
)
from agent.errors import ConfigError

VALID = """
admin: {port: 15000}
registries:
  - name: local
    type: local
    config:
      services:
        echo: [{host: 127.0.0.1, port: 9000}]
services:
  - name: echo
    lb: {policy: least_request}
listeners:
  - {port: 9001, service: echo}
  - {port: 9002, service: echo}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


def errors_of(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ or {})
    return info.value.errors


def test_valid_config_loads_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID), {})
    assert config.admin.host == "127.0.0.1"
    assert config.services[0].registry == "local"
    assert config.services[0].lb.policy == "least_request"
    assert [listener.port for listener in config.listeners] == [9001, 9002]


def test_empty_file_is_the_default_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), {})
    assert config == AgentConfig()
    assert config.registries[0].type == "local"


def test_port_out_of_range_names_its_path(tmp_path: Path) -> None:
    text = VALID.replace("{port: 9002, service: echo}", "{port: 70000, service: echo}")
    assert errors_of(tmp_path, text) == ["listeners[1].port: must be between 1 and 65535"]


def test_unknown_field_is_rejected_with_its_path(tmp_path: Path) -> None:
    text = VALID.replace("lb: {policy: least_request}", "lb: {policy: least_request, polcy: x}")
    assert errors_of(tmp_path, text) == ["services[0].lb.polcy: Extra inputs are not permitted"]


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    text = VALID.replace("port: 9001", "port: 0").replace("port: 9002", "port: -1")
    errors = errors_of(tmp_path, text)
    assert "listeners[0].port: must be between 1 and 65535" in errors
    assert "listeners[1].port: must be between 1 and 65535" in errors


def test_references_must_resolve() -> None:
    raw = {
        "services": [{"name": "a", "registry": "zk"}],
        "listeners": [{"port": 1, "service": "b"}, {"port": 1, "service": "a"}],
    }
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert info.value.errors == [
        "services[0].registry: unknown registry 'zk'; configured: local",
        "listeners[0].service: unknown service 'b'; configured: a",
        "listeners[1].port: 1 is also listeners[0].port (127.0.0.1:1)",
    ]


def test_log_levels_are_checked_and_any_case_is_taken() -> None:
    assert parse_config({"log_level": "debug"}).log_level == "DEBUG"
    with pytest.raises(ConfigError) as info:
        parse_config({"log_level": "LOUD"})
    assert info.value.errors[0].startswith("log_level: unknown log level 'LOUD'")


def test_ports_may_not_clash_with_the_api_or_each_other_across_hosts() -> None:
    # Issue 25: check-config passed these, and run failed (or bound one and not the other).
    raw = {
        "admin": {"port": 15000},
        "services": [{"name": "a"}],
        "listeners": [
            {"port": 15000, "service": "a"},
            {"host": "127.0.0.1", "port": 9001, "service": "a"},
            {"host": "0.0.0.0", "port": 9001, "service": "a"},
            {"host": "127.0.0.2", "port": 9002, "service": "a"},
            {"host": "127.0.0.3", "port": 9002, "service": "a"},
        ],
        "inbound": {"enabled": True, "port": 9002, "app_port": 8080},
    }
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert info.value.errors == [
        "listeners[0].port: 15000 is also admin.port (127.0.0.1:15000)",
        "listeners[2].port: 9001 is also listeners[1].port (127.0.0.1:9001)",
        "inbound.port: 9002 is also listeners[3].port (127.0.0.2:9002)",
    ]


def test_listeners_may_not_relay_to_themselves_or_expose_the_api() -> None:
    def raw(listener_host: str, endpoint_port: int) -> dict[str, object]:
        return {
            "admin": {"port": 15000},
            "registries": [
                {
                    "name": "local",
                    "type": "local",
                    "config": {"services": {"a": [{"host": "127.0.0.1", "port": endpoint_port}]}},
                }
            ],
            "services": [{"name": "a"}],
            "listeners": [{"host": listener_host, "port": 9001, "service": "a"}],
        }

    with pytest.raises(ConfigError) as info:
        parse_config(raw("0.0.0.0", 9001))
    assert info.value.errors == [
        "listeners[0].service: endpoint 127.0.0.1:9001 of 'a' is this listener itself"
    ]
    with pytest.raises(ConfigError) as info:
        parse_config(raw("0.0.0.0", 15000))
    assert "is the agent's own API, relayed from 0.0.0.0" in info.value.errors[0]
    # On loopback the relay gives nobody more than the API itself does (make run's example).
    assert parse_config(raw("127.0.0.1", 15000)).listeners[0].port == 9001


def test_unknown_plugin_lists_the_installed_ones(tmp_path: Path) -> None:
    text = VALID.replace("policy: least_request", "policy: fastest")
    (error,) = errors_of(tmp_path, text)
    assert error.startswith("services[0].lb.policy: unknown meshagent.lb_policies plugin 'fastest'")
    assert "installed: consistent_hash, least_request, round_robin, weighted_random" in error


def test_plugin_config_is_validated_by_the_plugin_model(tmp_path: Path) -> None:
    text = VALID.replace("port: 9000}", "port: 99999}")
    (error,) = errors_of(tmp_path, text)
    assert error.startswith("registries[0].config.services.echo[0].port:")


def test_malformed_yaml_says_where(tmp_path: Path) -> None:
    (error,) = errors_of(tmp_path, "services: [\n  - name: a\n   bad")
    assert "invalid YAML at line" in error


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml", {})


def test_environment_overrides_paths_and_list_items(tmp_path: Path) -> None:
    environ = {
        "MESHAGENT_ADMIN__PORT": "16000",
        "MESHAGENT_LISTENERS__1__PORT": "9005",
        "MESHAGENT_LOG_LEVEL": "debug",
        "OTHER": "ignored",
    }
    config = load_config(write(tmp_path, VALID), environ)
    assert config.admin.port == 16000
    assert config.listeners[1].port == 9005
    assert config.log_level == "DEBUG"


def test_environment_override_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="MESHAGENT_LISTENERS__5__PORT"):
        apply_env_overrides({"listeners": []}, {"MESHAGENT_LISTENERS__5__PORT": "1"})


def test_invalid_environment_value_is_reported_with_its_path(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, VALID, {"MESHAGENT_ADMIN__PORT": "x"})
    assert errors[0].startswith("admin.port:")


def test_telemetry_defaults_metrics_and_context_on_tracing_and_access_log_off() -> None:
    telemetry = AgentConfig().telemetry
    assert telemetry.metrics.enabled and telemetry.context.enabled
    assert not telemetry.tracing.enabled and not telemetry.access_log.enabled


def test_telemetry_settings_are_checked_with_their_paths(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        "telemetry:\n  tracing: {exporter: zipkin, sample_ratio: 2}\n  context: {max_hops: 0}\n",
    )
    text = "\n".join(errors)
    assert "telemetry.tracing.exporter" in text
    assert "telemetry.tracing.sample_ratio" in text
    assert "telemetry.context.max_hops" in text


def test_a_variable_naming_no_setting_is_ignored_and_reported(tmp_path: Path) -> None:
    # Kubernetes sets these in every pod of a namespace with a Service named "meshagent";
    # they used to stop the agent ("service_host: Extra inputs are not permitted").
    environ = {
        "MESHAGENT_SERVICE_HOST": "10.0.0.1",
        "MESHAGENT_PORT": "tcp://10.0.0.1:15000",
        "MESHAGENT_CHECKOUT": "x",
        "MESHAGENT_ADMIN__PORT": "16000",
        "MESHAGENT_CONFIG": "/etc/meshagent.yaml",
    }
    config = load_config(write(tmp_path, VALID), environ)
    assert config.admin.port == 16000
    assert ignored_env_variables(environ) == [
        "MESHAGENT_CHECKOUT",
        "MESHAGENT_PORT",
        "MESHAGENT_SERVICE_HOST",
    ]


def test_a_wrong_path_under_a_setting_names_its_variable(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path, VALID, {"MESHAGENT_ADMIN__PROT": "1", "MESHAGENT_LISTENERS__1__PORT": "x"}
    )
    assert any(
        line.startswith("admin.prot:") and line.endswith("(set by MESHAGENT_ADMIN__PROT)")
        for line in errors
    ), errors
    assert any(
        line.startswith("listeners[1].port:")
        and line.endswith("(set by MESHAGENT_LISTENERS__1__PORT)")
        for line in errors
    ), errors


def test_the_pure_python_switch_is_not_a_setting() -> None:
    # MESHAGENT_PURE_PYTHON runs the compiled modules from source (agent/compiled.py); it
    # must not be read as a config key ("pure_python: Extra inputs are not permitted").
    raw = {"admin": {"port": 15000}}
    assert apply_env_overrides(raw, {"MESHAGENT_PURE_PYTHON": "1"}) == raw


def test_locality_and_its_balancing_settings(tmp_path: Path) -> None:
    text = VALID.replace(
        "lb: {policy: least_request}",
        "lb: {policy: least_request, overprovisioning_factor: 2, cross_dc: false}",
    )
    config = load_config(write(tmp_path, text + "locality: {dc: a, zone: a-1}\n"), {})
    assert config.locality.dc == "a" and config.locality.zone == "a-1"
    lb = config.services[0].lb
    assert lb.locality and lb.overprovisioning_factor == 2 and not lb.cross_dc
    below_one = VALID.replace("{policy: least_request}", "{overprovisioning_factor: 0.5}")
    assert errors_of(tmp_path, below_one) == [
        "services[0].lb.overprovisioning_factor: Input should be greater than or equal to 1"
    ]
