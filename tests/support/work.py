"""Counting the work a decoder does, for the tests that guard linearity (issue 25).

Work is the number of Python lines executed in the decoder's own source file, counted
with ``sys.settrace``. A compiled build (mypyc) reports no lines, so the decoder's module
is loaded again from its ``.py`` under another name (:func:`interpreted`): the count is
the same in either build, and a decoder that re-walks what it has already read shows up
as work that grows with the square of its input, whatever the machine's speed.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any, TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]


def interpreted(name: str) -> ModuleType:
    """A fresh, interpreted copy of module ``name`` (e.g. ``plugins.dubbo.frame``), loaded
    from its source; its own imports are the usual (possibly compiled) modules."""
    path = ROOT / (name.replace(".", "/") + ".py")
    # Named inside its own package, so that its relative imports find its siblings.
    package, _, leaf = name.rpartition(".")
    spec = importlib.util.spec_from_file_location(f"{package}._interpreted_{leaf}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def lines_run(module: ModuleType, work: Callable[[], T]) -> tuple[T, int]:
    """What ``work()`` returned, and how many lines of ``module``'s source it ran."""
    source = module.__file__
    count = 0

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "line":
            count += 1
        return local

    def calls(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename == source else None

    previous = sys.gettrace()
    sys.settrace(calls)
    try:
        result = work()
    finally:
        sys.settrace(previous)
    return result, count
