"""How a part of a page fills itself when the page loads or a tab opens."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TabLoader:
    """How a tab fills itself: ``load(*inputs)`` returns the values of ``outputs``."""

    load: Callable[..., Any]
    inputs: list[Any]
    outputs: list[Any]


def combined(loaders: list[TabLoader]) -> TabLoader:
    """One loader doing the work of several: one page-load event (one request) instead of one each."""

    def load(*values: Any) -> tuple[Any, ...]:
        results: list[Any] = []
        start = 0
        for loader in loaders:
            args = values[start : start + len(loader.inputs)]
            start += len(loader.inputs)
            out = loader.load(*args)
            results.extend(out if len(loader.outputs) > 1 else [out])
        return tuple(results)

    inputs = [component for loader in loaders for component in loader.inputs]
    outputs = [component for loader in loaders for component in loader.outputs]
    return TabLoader(load, inputs, outputs)
