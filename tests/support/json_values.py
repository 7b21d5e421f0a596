"""Arbitrary JSON for the no-500 fuzz tests of the invocations (hypothesis strategies): the
scalars JSON has, at and past the limits the protocols care about, lone surrogates in text,
and the strings each protocol's converters have tripped on, nested a little."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st


def json_values(
    tricky: Sequence[str], *, int_bits: int = 70, max_leaves: int = 8
) -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**int_bits), max_value=2**int_bits)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=12)  # lone surrogates included
        | st.sampled_from(list(tricky))
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
        ),
        max_leaves=max_leaves,
    )
