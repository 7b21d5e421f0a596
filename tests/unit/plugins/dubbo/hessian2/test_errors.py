"""The codec's errors sit in meshagent's error tree: bad bytes from a peer are the peer's
protocol error, a value with no Hessian form is ours."""

from __future__ import annotations

import pytest

from agent.errors import LocalProtocolError, RemoteProtocolError
from plugins.dubbo.hessian2 import Hessian2Decoder, Hessian2Encoder
from plugins.dubbo.hessian2.errors import HessianDecodeError, HessianEncodeError


def test_decode_errors_are_remote_protocol_errors() -> None:
    assert issubclass(HessianDecodeError, RemoteProtocolError)
    with pytest.raises(HessianDecodeError):
        Hessian2Decoder(b"\x53\x00\x05ab").read_object()  # a string cut short


def test_encode_errors_are_local_protocol_errors() -> None:
    assert issubclass(HessianEncodeError, LocalProtocolError)
    with pytest.raises(HessianEncodeError):
        Hessian2Encoder().write_object(object())
