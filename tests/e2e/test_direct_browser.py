"""Direct chat end to end: a real ``python launch.py``, headless Chromium, feedback stored in SQLite.

Pick a model by its display name, ask about an uploaded image, ask a follow-up, then rate the answers
with the chat window's own buttons: 👍 with a comment on the FIRST answer, 👎 then 🚩 on the second,
take the 👍 back and give it again with another comment. One ``direct`` battle (no second model), its
turns and image, and one ``feedback`` row per answer and kind, each with its turn's id.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from arena.direct import USER_FLAG_REASON
from tests.e2e.harness import ArenaServer, query, roster_arena

pytestmark = pytest.mark.e2e

# The scripted models echo the prompt and how many images they saw in the whole conversation (a
# scripted answer never contains its model's name).
ROSTER = """
models:
  - {name: kilo, display_name: Kilo Display, backend: scripted,
     params: {reply: "first model saw {n_images} image(s) for: {prompt}"}}
  - {name: lima, display_name: Lima Display, backend: scripted,
     params: {reply: "second model saw {n_images} image(s) for: {prompt}"}}
"""


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArenaServer]:
    with roster_arena(tmp_path_factory.mktemp("direct"), ROSTER) as server:
        yield server


def _wait_text(page, selector: str, text: str, timeout_ms: int = 60_000) -> None:
    page.wait_for_function(
        "([selector, text]) => (document.querySelector(selector)?.innerText || '').includes(text)",
        arg=[selector, text],
        timeout=timeout_ms,
        polling=200,
    )


def _rating_buttons(page, name: str) -> int:
    """How many answers in the chat window show the feedback button ``name`` (Like, Liked, …)."""
    return page.locator("#direct-chat").get_by_role("button", name=name, exact=True).count()


def _answer_buttons(page, answer: int):
    """The row of buttons under answer number ``answer`` (0-based): only answers have a feedback menu."""
    rows = page.locator("#direct-chat .message-buttons").filter(
        has=page.locator("button[aria-label=Feedback]")
    )
    return rows.nth(answer)


def _rate(page, answer: int, button: str, comment: str | None, thanks: str) -> None:
    """Click ``button`` under answer number ``answer`` (0-based), with ``comment``; wait for ``thanks``."""
    if comment is not None:
        page.fill("#direct-comment textarea", comment)
    _answer_buttons(page, answer).get_by_role("button", name=button, exact=True).click()
    _wait_text(page, "#direct-status", thanks)


def _send(page, prompt: str, image: Path | None = None) -> None:
    """Send a turn in the Direct chat tab and wait until the answer is complete (Send unlocks)."""
    if image is not None:
        page.set_input_files("#direct-images input[type=file]", str(image))
        page.wait_for_selector(f"#direct-images >> text={image.name}", timeout=30_000)
    page.fill("#direct-prompt textarea", prompt)
    page.click("#direct-send")
    page.wait_for_function(
        "() => document.querySelector('#direct-prompt textarea').value === ''"
        " && !document.querySelector('#direct-send').disabled",
        timeout=120_000,
        polling=200,
    )


def test_direct_chat_with_an_image_and_feedback_per_answer(
    arena: ArenaServer, browser, tmp_path: Path
) -> None:
    picture = tmp_path / "boat.png"
    Image.new("RGB", (48, 32), "teal").save(picture)
    page = browser.new_context().new_page()
    page.goto(arena.url)
    page.click("#tab-direct-button")
    page.wait_for_selector("#direct-terms-accept, #direct-prompt textarea", state="visible", timeout=60_000)
    if page.is_visible("#direct-terms-accept"):
        page.click("#direct-terms-accept")
    page.wait_for_selector("#direct-prompt textarea", state="visible", timeout=30_000)
    assert _rating_buttons(page, "Like") == 0, "nothing to rate before an answer"

    # The picker lists display names; pick Lima.
    page.click("#direct-model input")
    page.get_by_role("option", name="Lima Display", exact=True).click()
    page.wait_for_function(
        "() => document.querySelector('#direct-model input').value === 'Lima Display'", timeout=30_000
    )

    _send(page, "What colour is the boat?", picture)
    _wait_text(page, "#direct-chat", "second model saw 1 image(s) for: What colour is the boat?")
    assert page.is_disabled("#direct-model input"), "a chat stays with its model"
    _send(page, "Is it big?")  # a follow-up without a new image: the model still has the first one
    _wait_text(page, "#direct-chat", "second model saw 1 image(s) for: Is it big?")

    assert _rating_buttons(page, "Like") == 2, "each answer has its own 👍"

    _rate(page, 0, "Like", "Right colour, short and clear.", "Thanks, your 👍 on answer 1 was saved.")
    assert page.input_value("#direct-comment textarea") == "", "the comment went with the 👍"
    first_turn = query(arena, 'SELECT id FROM turns WHERE "index" = 0')
    assert query(arena, "SELECT turn_id, kind, comment FROM feedback") == [
        (first_turn[0][0], "up", "Right colour, short and clear.")
    ]
    _rate(page, 1, "Dislike", "Too short.", "Thanks, your 👎 on answer 2 was saved.")
    # 🚩 sits in the answer's feedback menu, shown on hover.
    second = _answer_buttons(page, 1)
    second.get_by_role("button", name="Feedback", exact=True).hover()
    second.locator(".extra-feedback-option", has_text="Flag").click()
    _wait_text(page, "#direct-status", "Thanks, your 🚩 on answer 2 was saved.")
    # Clicking the chosen 👍 again takes it back; a new 👍 carries the new comment.
    _rate(page, 0, "Liked", None, "Your 👍 / 👎 on answer 1 was taken back")
    _rate(page, 0, "Like", "Right colour; could say more.", "Thanks, your 👍 on answer 1 was saved.")
    page.wait_for_timeout(500)

    battles = query(
        arena,
        "SELECT b.id, b.mode, b.model_b_id, b.state, m.display_name FROM battles b "
        "JOIN models m ON m.id = b.model_a_id",
    )
    assert len(battles) == 1
    battle_id, mode, model_b, state, shown = battles[0]
    assert (mode, model_b, state, shown) == ("direct", None, "ready", "Lima Display")
    turns = query(
        arena,
        "SELECT t.prompt, (SELECT count(*) FROM turn_images ti WHERE ti.turn_id = t.id), r.side, r.text "
        'FROM turns t JOIN responses r ON r.turn_id = t.id WHERE t.battle_id = ? ORDER BY t."index"',
        (battle_id,),
    )
    assert turns == [
        ("What colour is the boat?", 1, "a", "second model saw 1 image(s) for: What colour is the boat?"),
        ("Is it big?", 0, "a", "second model saw 1 image(s) for: Is it big?"),
    ]
    turn_ids = [
        t for (t,) in query(arena, 'SELECT id FROM turns WHERE battle_id = ? ORDER BY "index"', (battle_id,))
    ]
    feedback = query(
        arena,
        "SELECT battle_id, turn_id, kind, comment, session_id IS NOT NULL FROM feedback ORDER BY turn_id, kind",
    )
    assert feedback == [
        (battle_id, turn_ids[0], "up", "Right colour; could say more.", 1),
        (battle_id, turn_ids[1], "down", "Too short.", 1),
        (battle_id, turn_ids[1], "flag", None, 1),
    ]
    assert query(arena, "SELECT battle_id, reason FROM moderation_flags") == [(battle_id, USER_FLAG_REASON)]
    assert query(arena, "SELECT count(*) FROM votes") == [(0,)]

    # A new chat frees the picker and starts a second direct battle.
    page.click("#direct-new")
    page.wait_for_function("() => !document.querySelector('#direct-model input').disabled", timeout=30_000)
    page.wait_for_function("() => !document.querySelector('#direct-chat .bot-row')", timeout=30_000)
    assert _rating_buttons(page, "Like") == 0
