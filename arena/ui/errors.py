"""No callback ends in Gradio's bare "Error": an unexpected exception becomes one neutral toast.

Every event handler of the public app and the admin app is wrapped with :func:`guarded` once the
Blocks are built (:func:`guard_callbacks`). A refusal the voter should read
(:class:`arena.errors.ArenaError`) is handled by the callback itself with one ``gr.Warning``; anything
else is logged with its traceback, shown as :data:`NEUTRAL_ERROR` (one toast, no details), and the
page keeps its state (``gr.skip()`` leaves every output as it was). ``gr.Error`` raised on purpose
passes through: it already carries a message meant for the person.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import gradio as gr

log = logging.getLogger(__name__)

NEUTRAL_ERROR = "Something went wrong on our side, and it has been logged. Please try again."

F = TypeVar("F", bound=Callable[..., Any])

#: Set on every guarded callback, so a test can check that none was left out.
GUARDED_ATTRIBUTE = "__arena_guarded__"


def _report(fn: Callable[..., Any]) -> Any:
    log.exception("unexpected error in %s", getattr(fn, "__qualname__", fn))
    gr.Warning(NEUTRAL_ERROR)
    return gr.skip()


def guarded(fn: F) -> F:
    """Wrap a Gradio callback (plain, async, generator or async generator) as described above."""
    wrapper: Callable[..., Any]
    if inspect.isasyncgenfunction(fn):

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                async for item in fn(*args, **kwargs):
                    yield item
            except gr.Error:
                raise
            except Exception:
                yield _report(fn)

    elif inspect.iscoroutinefunction(fn):

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception:
                return _report(fn)

    elif inspect.isgeneratorfunction(fn):

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception:
                yield _report(fn)

    else:

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception:
                return _report(fn)

    functools.update_wrapper(wrapper, fn)
    setattr(wrapper, GUARDED_ATTRIBUTE, True)
    return wrapper  # type: ignore[return-value]


def is_guarded(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` (or the function a ``functools.partial`` calls) was wrapped by :func:`guarded`."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return bool(getattr(fn, GUARDED_ATTRIBUTE, False))


def guard_callbacks(blocks: gr.Blocks) -> int:
    """Wrap every Python event handler of ``blocks`` with :func:`guarded`; return how many were wrapped."""
    wrapped = 0
    for block_fn in blocks.fns.values():
        if block_fn.fn is not None and not is_guarded(block_fn.fn):
            block_fn.fn = guarded(block_fn.fn)
            wrapped += 1
    return wrapped
