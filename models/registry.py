"""Backend registry: maps a roster ``backend`` kind to the factory that builds it.

Factories are named as ``"module.path:function"`` strings and imported only when a model of that kind
is created, so importing this module (or the roster) never pulls in torch or transformers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from models.base import BackendError, ModelBackend
from models.roster import ModelSpec


@dataclass(frozen=True)
class BackendContext:
    """Process-wide settings backends need when they are created."""

    #: Where demo models are built and cached.
    cache_dir: Path


BackendFactory = Callable[[ModelSpec, BackendContext], ModelBackend]


class BackendRegistry:
    """A table of ``kind -> "module:factory"`` targets, imported on demand."""

    def __init__(self, targets: dict[str, str] | None = None) -> None:
        self._targets: dict[str, str] = {}
        for kind, target in (targets or {}).items():
            self.register(kind, target)

    def register(self, kind: str, target: str, *, replace: bool = False) -> None:
        """Add ``kind``, built by the factory ``target`` (``"package.module:function"``)."""
        module, sep, attr = target.partition(":")
        if not kind or not sep or not module or not attr:
            raise ValueError(f"backend target must look like 'package.module:function', got {target!r}")
        if kind in self._targets and not replace and self._targets[kind] != target:
            raise ValueError(f"backend kind {kind!r} is already registered to {self._targets[kind]!r}")
        self._targets[kind] = target

    @property
    def kinds(self) -> list[str]:
        """The registered kinds, sorted."""
        return sorted(self._targets)

    def factory(self, kind: str) -> BackendFactory:
        """Import and return the factory for ``kind``."""
        if kind not in self._targets:
            raise ValueError(f"unknown backend kind {kind!r}; known kinds: {', '.join(self.kinds)}")
        module_name, _, attr = self._targets[kind].partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise BackendError(
                f"backend {kind!r} needs module {module_name!r}, which cannot be imported: {exc}"
            ) from exc
        try:
            factory: BackendFactory = getattr(module, attr)
        except AttributeError:
            raise BackendError(f"backend {kind!r}: {module_name!r} has no factory {attr!r}") from None
        return factory

    def create(self, spec: ModelSpec, context: BackendContext) -> ModelBackend:
        """Build the backend for ``spec`` with the factory registered for its kind."""
        backend = self.factory(spec.backend)(spec, context)
        if not isinstance(backend, ModelBackend):
            raise BackendError(
                f"factory for backend {spec.backend!r} returned {type(backend).__name__}, not a ModelBackend"
            )
        return backend


DEFAULT_TARGETS: dict[str, str] = {
    "hf": "models.hf:create",
    "openai": "models.openai_compat:create",
    "scripted": "models.scripted:create",
}

#: The registry :func:`create_backend` uses unless it is given another.
default_registry = BackendRegistry(DEFAULT_TARGETS)


def create_backend(
    spec: ModelSpec, context: BackendContext, *, registry: BackendRegistry | None = None
) -> ModelBackend:
    """Build the backend that serves ``spec`` (loading weights or connecting as its kind requires)."""
    return (registry or default_registry).create(spec, context)
