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
