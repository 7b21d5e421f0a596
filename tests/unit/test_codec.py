from __future__ import annotations

from agent.codec import NEED_DATA, NeedData


def test_need_data_is_a_singleton_sentinel() -> None:
    assert NeedData() is NEED_DATA
    assert repr(NEED_DATA) == "NEED_DATA"
