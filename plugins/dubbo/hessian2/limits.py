"""The decoder's bounds on what one stream may hold (agent config: a Dubbo listener's).

A module of its own, interpreted: the decoder is compiled by mypyc, whose dataclasses
check field types when made (a ``TypeError``), where this one answers every bad value
with the ``ValueError`` that names the field.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final


@dataclass(frozen=True)
class Limits:
    """Bounds on what one decoder accepts; crossing one raises HessianDecodeError.

    The defaults suit RPC payloads (a Dubbo frame is at most 8 MiB by default), while
    keeping a hostile stream from costing more than its own size in memory and time.
    """

    #: Nesting of lists, maps and objects. Each level costs a few Python frames, so
    #: values beyond ~300 would meet Python's recursion limit first.
    max_depth: int = 128
    #: List items, map entries, object fields and class-definition fields, summed
    #: over the whole stream (declared or read, whichever comes first).
    max_elements: int = 1_000_000
    #: One string, in UTF-16 code units (Java ``String.length()``), over all chunks.
    max_string_length: int = 16 * 1024 * 1024
    #: One ``byte[]``, in bytes, over all chunks.
    max_binary_length: int = 64 * 1024 * 1024
    #: Class definitions (``C``) in the stream.
    max_class_defs: int = 4096
    #: Referenceable values (lists, maps, objects) in the stream.
    max_refs: int = 1_000_000
    #: Distinct type names of typed lists and maps.
    max_types: int = 4096

    def __post_init__(self) -> None:
        # fields(), not vars(): a class compiled by mypyc has no __dict__.
        for name in (f.name for f in fields(self)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive int, not {value!r}")


DEFAULT_LIMITS: Final = Limits()
