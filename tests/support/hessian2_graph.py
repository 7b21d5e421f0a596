"""Structural equality for decoded Hessian values, sharing and cycles included.

``==`` on the value dataclasses recurses forever on a cycle and cannot see whether two
places hold the same object; this walks both graphs in step and pairs objects by
identity, so "Java shared this address between two people" is checked too.
"""

from __future__ import annotations

import math
from decimal import Decimal

from plugins.dubbo.hessian2 import JavaEnum, JavaLong, JavaObject, TypedList, TypedMap

_SCALARS = (type(None), bool, int, float, str, bytes, JavaEnum)


def graph_diff(expected: object, actual: object, path: str = "$") -> str | None:
    """Return None when equal, else where and how the two values differ."""
    return _Walker().diff(expected, actual, path)


def assert_same_graph(expected: object, actual: object) -> None:
    problem = graph_diff(expected, actual)
    assert problem is None, problem


class _Walker:
    def __init__(self) -> None:
        self.forward: dict[int, object] = {}
        self.backward: dict[int, object] = {}

    def diff(self, e: object, a: object, path: str) -> str | None:
        # JavaLong vs int matters on the wire; bool vs int too.
        e_is_bool, a_is_bool = type(e) is bool, type(a) is bool
        if isinstance(e, JavaLong) != isinstance(a, JavaLong) or e_is_bool != a_is_bool:
            return f"{path}: expected {e!r}, got {a!r}"
        if isinstance(e, Decimal) and isinstance(a, Decimal):
            # BigDecimal equality counts the scale: 1.50 is not 1.5. Java has no -0.
            same = str(abs(e) if e.is_zero() else e) == str(abs(a) if a.is_zero() else a)
            return None if same else f"{path}: expected {e!r}, got {a!r}"
        if isinstance(e, float) and isinstance(a, float) and math.isnan(e):
            return None if math.isnan(a) else f"{path}: expected NaN, got {a!r}"
        if isinstance(e, _SCALARS) or not isinstance(
            e, (list, tuple, dict, JavaObject, TypedList, TypedMap)
        ):
            if type(e) is not type(a) and not (isinstance(e, int) and type(a) is int):
                return f"{path}: expected {type(e).__name__} {e!r}, got {type(a).__name__}"
            return None if e == a else f"{path}: expected {e!r}, got {a!r}"
        seen = self.forward.get(id(e))
        if seen is not None or id(a) in self.backward:
            return None if seen is a else f"{path}: reference sharing differs"
        self.forward[id(e)] = a
        self.backward[id(a)] = e
        if isinstance(e, (list, tuple)):
            if not isinstance(a, list):
                return f"{path}: expected a list, got {a!r}"
            return self.items(list(e), a, path)
        if isinstance(e, dict):
            if not isinstance(a, dict):
                return f"{path}: expected a dict, got {a!r}"
            return self.entries(e, a, path)
        if isinstance(e, TypedList):
            if not isinstance(a, TypedList) or a.type_name != e.type_name:
                return f"{path}: expected TypedList {e.type_name}, got {a!r}"
            return self.items(e.items, a.items, path)
        if isinstance(e, TypedMap):
            if not isinstance(a, TypedMap) or a.type_name != e.type_name:
                return f"{path}: expected TypedMap {e.type_name}, got {a!r}"
            return self.entries(e.entries, a.entries, path)
        assert isinstance(e, JavaObject)
        if not isinstance(a, JavaObject) or a.class_name != e.class_name:
            return f"{path}: expected {e.class_name} object, got {a!r}"
        if list(e.fields) != list(a.fields):
            return f"{path}: fields {list(e.fields)} vs {list(a.fields)}"
        return self.entries(e.fields, a.fields, path)  # type: ignore[arg-type]

    def items(self, e: list[object], a: list[object], path: str) -> str | None:
        if len(e) != len(a):
            return f"{path}: expected {len(e)} items, got {len(a)}"
        for index, (ei, ai) in enumerate(zip(e, a, strict=True)):
            problem = self.diff(ei, ai, f"{path}[{index}]")
            if problem is not None:
                return problem
        return None

    def entries(self, e: dict[object, object], a: dict[object, object], path: str) -> str | None:
        if list(e) != list(a):
            return f"{path}: keys {list(e)!r} vs {list(a)!r}"
        for key, value in e.items():
            problem = self.diff(value, a[key], f"{path}[{key!r}]")
            if problem is not None:
                return problem
        return None
