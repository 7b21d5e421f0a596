"""From candidate instances to Reset/Add/Remove, with revisions."""

from __future__ import annotations

from agent.discovery.types import Add, Instance, Remove, Reset
from agent.discovery.view import InstanceView


def inst(id_: str, revision: int, weight: int = 100) -> Instance:
    host, port = id_.split(":")
    return Instance(id_, host, int(port), weight=weight, revision=revision)


def test_first_update_is_a_reset_even_empty() -> None:
    view = InstanceView()
    assert view.update([], 5) == [Reset(5, ())]
    assert view.update([], 6) == []


def test_add_change_remove() -> None:
    view = InstanceView()
    a, b = inst("a:1", 10), inst("b:1", 11)
    assert view.update([a], 10) == [Reset(10, (a,))]
    assert view.update([a, b], 11) == [Add(11, b)]
    heavier = inst("b:1", 11, weight=5)
    assert view.update([a, heavier], 12) == [Add(12, heavier)]
    assert view.update([heavier], 13) == [Remove(13, "a:1", 10)]


def test_newest_registration_of_an_id_wins() -> None:
    view = InstanceView()
    old, new = inst("a:1", 10), inst("a:1", 20)
    view.update([old], 10)
    assert view.update([old, new], 20) == [Add(20, new)]
    assert view.update([new], 21) == []  # the old node's deletion changes nothing


def test_newer_registration_gone_older_still_there() -> None:
    view = InstanceView()
    old, new = inst("a:1", 10), inst("a:1", 20)
    view.update([old, new], 20)
    assert view.update([old], 22) == [Remove(22, "a:1", 20), Add(22, old)]


def test_revisions_never_go_back() -> None:
    view = InstanceView()
    view.update([], 30)
    a = inst("a:1", 5)
    assert view.update([a], 7) == [Add(30, a)]
