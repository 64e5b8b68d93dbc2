"""How a part of a page fills itself when the page loads or a tab opens."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import gradio as gr


@dataclass(frozen=True)
class TabLoader:
    """How a tab fills itself: ``load(*inputs)`` returns the values of ``outputs``."""

    load: Callable[..., Any]
    inputs: list[Any]
    outputs: list[Any]
    #: ``load`` takes the page's ``gr.Request`` before its inputs (:func:`combined` passes it on).
    wants_request: bool = False


def combined(loaders: list[TabLoader]) -> TabLoader:
    """One loader doing the work of several: one page-load event (one request) instead of one each."""

    def load(request: gr.Request, *values: Any) -> tuple[Any, ...]:
        results: list[Any] = []
        start = 0
        for loader in loaders:
            args = values[start : start + len(loader.inputs)]
            start += len(loader.inputs)
            out = loader.load(request, *args) if loader.wants_request else loader.load(*args)
            results.extend(out if len(loader.outputs) > 1 else [out])
        return tuple(results)

    inputs = [component for loader in loaders for component in loader.inputs]
    outputs = [component for loader in loaders for component in loader.outputs]
    return TabLoader(load, inputs, outputs, wants_request=True)


def _descendants(block: gr.blocks.Block) -> Iterator[gr.blocks.Block]:
    for child in getattr(block, "children", []):
        yield child
        yield from _descendants(child)


class LazyTabs:
    """Tabs whose new kinds of component join the page when the tab is first opened, not with the page.

    Gradio's front end loads the code of every visible component kind before it shows anything, those
    in tabs nobody has opened included. A component kind that appears only in such tabs (dropdowns, a
    table, a plot) starts hidden, so its code stays off the page's first paint, and is shown the first
    time its tab is opened: one direct request (no queue), beside the tab's own select events. Kinds the
    page shows anyway are left as they are (their code is loaded regardless). Updates sent to a hidden
    component before then (a resumed battle's model choices) are kept and shown with it.

    Use :meth:`tab` in place of ``gr.Tab``, then :meth:`finish` once the whole page is built.
    """

    def __init__(self) -> None:
        self._tabs: list[gr.Tab] = []

    @contextmanager
    def tab(self, label: str, *, id: str, elem_id: str) -> Iterator[gr.Tab]:  # noqa: A002 - Gradio's name
        """A ``gr.Tab`` whose new component kinds wait for its first opening."""
        with gr.Tab(label, id=id, elem_id=elem_id) as tab:
            yield tab
        self._tabs.append(tab)

    def finish(self, page: gr.Blocks) -> None:
        """Hide each lazy tab's components of kinds the rest of ``page`` lacks, and show them when the
        tab is first opened. Call it inside ``page``'s ``with`` block, once everything is built."""
        lazy = {id(block) for tab in self._tabs for block in _descendants(tab)}
        eager = {type(block) for block in _descendants(page) if id(block) not in lazy}
        for tab in self._tabs:
            deferred = [
                block
                for block in _descendants(tab)
                if isinstance(block, gr.components.Component) and type(block) not in eager and block.visible is True
            ]
            if deferred:
                _reveal_on_first_select(tab, deferred)


def _reveal_on_first_select(tab: gr.Tab, deferred: list[gr.components.Component]) -> None:
    for block in deferred:
        block.visible = False
    opened = gr.State(False)

    def reveal(already: bool) -> tuple[Any, ...]:
        # Only the first opening shows them: an event may have hidden one on purpose since.
        change = gr.update() if already else gr.update(visible=True)
        return (True, *(change for _ in deferred))

    tab.select(
        reveal, [opened], [opened, *deferred], queue=False, api_visibility="private", show_progress="hidden"
    )
