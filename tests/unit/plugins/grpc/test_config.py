"""The gRPC plugin's settings: the listener's and a service's."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from plugins.grpc import PLUGIN
from plugins.grpc.config import DEFAULT_MAX_MESSAGE, GrpcConfig, GrpcServiceOptions


def test_defaults() -> None:
    config = GrpcConfig()
    assert config.max_message_bytes == DEFAULT_MAX_MESSAGE == 4 * 1024 * 1024  # gRPC's own
    assert (config.relay, config.http_transcoding) == ("h2", False)
    options = GrpcServiceOptions()
    assert (options.grpc_service, options.timeout_ms, options.descriptor_set) == (None, 5000, None)


@pytest.mark.parametrize(
    "raw", [{"max_message_bytes": 1023}, {"relay": "nghttp2"}, {"reflection_timeout_s": 0}]
)
def test_bad_listener_settings_are_refused(raw: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GrpcConfig.model_validate(raw)


def test_the_removed_grpcio_relay_is_refused_with_what_to_do() -> None:
    with pytest.raises(ValidationError, match=r"grpcio relay was removed.*delete this setting"):
        GrpcConfig.model_validate({"relay": "grpcio"})
    assert GrpcConfig.model_validate({"relay": "h2"}).relay == "h2"


def test_a_misspelt_service_option_is_refused() -> None:
    with pytest.raises(ValidationError, match="grpc_servise"):
        GrpcServiceOptions.model_validate({"grpc_servise": "x"})


def test_the_plugin_uses_these_models() -> None:
    assert PLUGIN.config_model is GrpcConfig
    assert PLUGIN.service_options_model is GrpcServiceOptions
