"""LazyTabs: which components wait for their tab's first opening, and what the opening sends.

The browser side (the page's first paint without them, the tabs working once opened) is tested in
``tests/e2e/test_first_paint_browser.py``; here the page's configuration and the reveal callback.
"""

from __future__ import annotations

import gradio as gr

from arena.ui.loading import LazyTabs


def _page() -> tuple[gr.Blocks, dict[str, gr.components.Component]]:
    lazy = LazyTabs()
    with gr.Blocks() as page:
        with gr.Tabs():
            with gr.Tab("first"):
                prompt = gr.Textbox(elem_id="first-prompt")
            with lazy.tab("second", id="second", elem_id="tab-second") as second, gr.Row():
                choice = gr.Dropdown(["x", "y"], elem_id="second-choice")
                text = gr.Textbox(elem_id="second-text")  # a kind the first tab shows anyway
                later = gr.Checkbox(visible=False, elem_id="second-later")  # hidden on purpose
            second.select(lambda: None, None, None)
        lazy.finish(page)
    return page, {"prompt": prompt, "choice": choice, "text": text, "later": later}


def _reveal(page: gr.Blocks, component: gr.components.Component):
    """The select event whose outputs include ``component``, and its callable."""
    for block_fn in page.fns.values():
        if any(output is component for output in block_fn.outputs):
            return block_fn
    raise AssertionError("no event reveals the component")


def test_only_kinds_the_rest_of_the_page_lacks_wait() -> None:
    _, parts = _page()
    assert parts["choice"].visible is False, "a dropdown appears nowhere else: it waits"
    assert parts["text"].visible is True, "textboxes are in the first paint anyway: left as they are"
    assert parts["prompt"].visible is True
    assert parts["later"].visible is False


def test_the_first_opening_shows_them_and_later_ones_leave_them() -> None:
    page, parts = _page()
    block_fn = _reveal(page, parts["choice"])
    assert block_fn.outputs[1:] == [parts["choice"]], "the tab's state, then the dropdown alone"
    assert not any(output is parts["later"] for output in block_fn.outputs), "hidden on purpose: not ours"
    assert block_fn.queue is False, "a direct request, no queue round trip"
    opened, shown = block_fn.fn(False)
    assert opened is True and shown == gr.update(visible=True)
    opened, kept = block_fn.fn(True)
    assert opened is True and kept == gr.update()


def test_a_page_without_lazy_kinds_adds_no_event() -> None:
    lazy = LazyTabs()
    with gr.Blocks() as page:
        with gr.Tabs():
            with gr.Tab("first"):
                gr.Textbox()
            with lazy.tab("second", id="second", elem_id="tab-second"):
                gr.Textbox()
        events_before = len(page.fns)
        lazy.finish(page)
    assert len(page.fns) == events_before
