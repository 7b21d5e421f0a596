"""The decoder's bounds: every bad value refused with the field's name."""

from __future__ import annotations

import pytest

from plugins.dubbo.hessian2.limits import DEFAULT_LIMITS, Limits


def test_defaults() -> None:
    assert Limits() == DEFAULT_LIMITS
    assert DEFAULT_LIMITS.max_depth == 128


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "8"])
def test_bad_values_name_the_field(value: object) -> None:
    with pytest.raises(ValueError, match=r"Limits\.max_refs must be a positive int"):
        Limits(max_refs=value)  # type: ignore[arg-type]
