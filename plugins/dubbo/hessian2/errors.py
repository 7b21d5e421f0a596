"""Errors of the Hessian 2.0 codec, placed in meshagent's error tree."""

from __future__ import annotations

from agent.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["HessianDecodeError", "HessianEncodeError"]


class HessianDecodeError(RemoteProtocolError):
    """The bytes are not valid Hessian 2.0, are truncated, or break a configured limit."""


class HessianEncodeError(LocalProtocolError):
    """A Python value has no Hessian 2.0 form (unsupported type, out of range)."""
