"""Hessian 2.0 codec for the Dubbo plugin, sans-IO, byte-compatible with hessian-lite.

``encode(*values)`` and ``decode_all(data)`` cover the common case of one stream of
values; :class:`Hessian2Encoder` and :class:`Hessian2Decoder` do it one value at a time.
See docs/hessian2.md for the Python ↔ Java mapping.
"""

from __future__ import annotations

from .decoder import Hessian2Decoder, Limits, decode_all
from .encoder import Hessian2Encoder, encode
from .errors import HessianDecodeError, HessianEncodeError
from .values import JavaEnum, JavaLong, JavaObject, TypedList, TypedMap

__all__ = [
    "Hessian2Decoder",
    "Hessian2Encoder",
    "HessianDecodeError",
    "HessianEncodeError",
    "JavaEnum",
    "JavaLong",
    "JavaObject",
    "Limits",
    "TypedList",
    "TypedMap",
    "decode_all",
    "encode",
]
