"""Python types for the Java values that Hessian 2.0 carries.

The mapping (see docs/hessian2.md for the full table):

* ``None`` ↔ null, ``bool`` ↔ boolean, ``str`` ↔ String, ``bytes`` ↔ byte[],
  ``float`` ↔ double, ``datetime`` (UTC aware) ↔ java.util.Date,
  ``decimal.Decimal`` ↔ java.math.BigDecimal.
* ``int`` ↔ int when it fits 32 bits, else long; :class:`JavaLong` is always a long, so a
  long decoded from a peer is re-encoded as a long even when its value is small.
* ``list``/``tuple`` ↔ untyped list (java.util.ArrayList), ``dict`` ↔ untyped map
  (java.util.HashMap).
* :class:`TypedList`, :class:`TypedMap`, :class:`JavaObject`, :class:`JavaEnum` carry the
  Java class name, so a decoded value re-encodes as the same Java type.

Why the containers are frozen dataclasses around *mutable* ``list``/``dict`` payloads:
Hessian lets a list, map or object refer to itself (a parent whose child points back to
it). A decoder must hand out the container before its contents are read, so that a
back-reference inside can resolve to it, and then fill it in. Freezing the dataclass keeps
the Java type name fixed (the identity that matters on the wire) while the payload stays
a plain, fillable ``list``/``dict``. The price: these containers are not hashable, so a
Java map keyed by a POJO cannot be decoded into a ``dict`` (it raises
:class:`~plugins.dubbo.hessian2.errors.HessianDecodeError`). :class:`JavaEnum` has no
payload to fill, so it is fully immutable and hashable, and works as a map key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BIG_DECIMAL_CLASS",
    "JavaEnum",
    "JavaLong",
    "JavaObject",
    "TypedList",
    "TypedMap",
]

BIG_DECIMAL_CLASS = "java.math.BigDecimal"


class JavaLong(int):
    """An ``int`` that must travel as a Java ``long`` (Hessian ``L``/compact long forms).

    A plain ``int`` is written as a Java ``int`` when it fits 32 bits, which is what a
    Java ``Object`` parameter holding an ``Integer`` expects; a field declared ``Long``
    on the Java side needs this type instead, or the peer sees a ClassCastException.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"JavaLong({int(self)})"


@dataclass(frozen=True, eq=True)
class JavaObject:
    """An instance of a Java class, written as a class definition ``C`` plus ``O``.

    ``fields`` keeps the Java field order: the class definition sent on the wire lists
    the field names in this order, and hessian-lite writes a class's fields in its own
    (reflection) order, so re-encoding a decoded object reproduces the peer's bytes.
    """

    class_name: str
    # Any, not object: dict is invariant, and callers hold dict[str, int] and the like.
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=True)
class JavaEnum:
    """A constant of a Java enum; on the wire an object with one field, ``name``.

    Java enum constants are singletons, so hessian-lite writes the second occurrence of
    one in a stream as a reference; the encoder matches that by keying enum references
    on ``(class_name, name)`` rather than on Python identity.
    """

    class_name: str
    name: str


@dataclass(frozen=True, eq=True)
class TypedList:
    """A list with a Java type, e.g. ``java.util.LinkedList`` or the array type ``[int``."""

    type_name: str
    items: list[Any] = field(default_factory=list)


@dataclass(frozen=True, eq=True)
class TypedMap:
    """A map with a Java type, e.g. ``java.util.LinkedHashMap`` or ``java.util.TreeMap``."""

    type_name: str
    entries: dict[Any, Any] = field(default_factory=dict)
