"""Script, ``<img onerror>``, ``javascript:`` links and markdown/HTML injection, rendered by Chromium.

Every payload, if it ran, would set ``window.__pwned`` (or the page's title); every ``javascript:``
link, if the page rendered one, would do the same when clicked. The payloads go in through each way
text reaches a page: the voter's prompt, the models' answers (scripted models whose ``reply`` is
hostile and echoes the prompt), the models' display names from the roster (shown after the vote, and
in the side-by-side and direct-chat pickers), the vote reason and the direct-chat feedback comment
(stored, then shown to the operator on the admin page).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import ask, vote
from tests.security.running import BASE_ENV, Arena, complete_battle, png

pytestmark = pytest.mark.e2e

PROMPT_PAYLOAD = (
    "<script>window.__pwned='prompt-script'</script>"
    "<img src=x onerror=\"window.__pwned='prompt-img';document.title='pwned'\">"
    "<svg onload=\"window.__pwned='prompt-svg'\"></svg>"
    "[prompt link](javascript:window.__pwned='prompt-md-link') "
    "<a href=\"javascript:window.__pwned='prompt-a'\">prompt anchor</a>"
    "<iframe src=\"javascript:parent.__pwned='prompt-iframe'\"></iframe>"
    "<details open ontoggle=\"window.__pwned='prompt-toggle'\"><summary>s</summary></details>"
)
ANSWER_PAYLOAD = (
    "Answer <img src=y onerror=\\\"window.__pwned='answer-img'\\\">"
    "<script>window.__pwned='answer-script'</script>"
    "[answer link](javascript:window.__pwned='answer-md-link') "
    "<a href=\\\"JaVaScRiPt:window.__pwned='answer-a'\\\">answer anchor</a>"
    " ![tracker](http://198.51.100.7/track.png) echo: {prompt}"
)
NAME_A = "<img src=z onerror=\\\"window.__pwned='name-a';document.title='pwned'\\\">Alpha"
NAME_B = "<script>window.__pwned='name-b'</script>[Bravo](javascript:window.__pwned='name-b-link')"
ROSTER = f"""
models:
  - name: alpha
    display_name: "{NAME_A}"
    backend: scripted
    params: {{reply: "{ANSWER_PAYLOAD}"}}
  - name: bravo
    display_name: "{NAME_B}"
    backend: scripted
    params: {{reply: "{ANSWER_PAYLOAD}"}}
"""
ARENA_ENV = {"ARENA_MAX_PROMPT_CHARS": "4000"}
REASON_PAYLOAD = "<img src=r onerror=\"window.__pwned='reason'\"><script>window.__pwned='reason-s'</script>[r](javascript:window.__pwned='reason-link')"
COMMENT_PAYLOAD = (
    "<img src=c onerror=\"window.__pwned='comment'\">[c](javascript:window.__pwned='comment-link')"
)

#: Counts what the page would have run or rendered: the flag, the title, live javascript: links,
#: event-handler attributes and script elements anywhere in the document.
INSPECT = """() => ({
  pwned: window.__pwned ?? null,
  title: document.title,
  jsLinks: [...document.querySelectorAll('a[href], area[href], iframe[src], [formaction]')]
    .filter(e => /^\\s*javascript:/i.test(e.getAttribute('href') || e.getAttribute('src') || e.getAttribute('formaction') || '')).length,
  handlers: [...document.querySelectorAll('*')].filter(e => [...e.attributes].some(a => /^on/i.test(a.name))
    && /__pwned/.test([...e.attributes].map(a => a.value).join(' '))).length,
  scripts: [...document.querySelectorAll('script')].filter(s => s.textContent.includes('__pwned')).length,
})"""


def assert_inert(page, where: str) -> None:
    """Nothing injected ran, and nothing injected is live in the document, even after clicking every
    link the page shows."""
    for link in page.query_selector_all("a"):
        try:
            if link.is_visible() and not (link.get_attribute("href") or "").startswith("http"):
                link.click(timeout=1000, no_wait_after=True)
        except Exception:  # noqa: BLE001 - a link covered by another element is not clickable either
            pass
    page.wait_for_timeout(300)
    found = page.evaluate(INSPECT)
    assert found == {"pwned": None, "title": found["title"], "jsLinks": 0, "handlers": 0, "scripts": 0}, where
    assert found["title"] != "pwned", where


def test_the_check_sees_a_payload_that_runs(browser) -> None:
    """The check itself: the same payloads put into a page as raw HTML are caught."""
    context = browser.new_context()
    page = context.new_page()
    page.set_content(f"<div>{PROMPT_PAYLOAD}</div>")
    page.wait_for_timeout(300)
    found = page.evaluate(INSPECT)
    assert (
        found["pwned"] is not None
        and found["jsLinks"] >= 2
        and found["handlers"] >= 2
        and found["scripts"] == 1
    )
    context.close()


@pytest.fixture
def page(browser, arena: Arena):
    context = browser.new_context()
    page = context.new_page()
    outside: list[str] = []
    # Any request to another host (a markdown image in an answer that tracks the voter) is recorded.
    page.route(
        "**/*",
        lambda route: (
            (outside.append(route.request.url), route.abort())
            if not route.request.url.startswith(arena.url)
            else route.continue_()
        ),
    )
    page.outside = outside  # type: ignore[attr-defined]
    yield page
    context.close()


def test_the_page_allows_images_only_from_the_arena(arena: Arena) -> None:
    for path in ("/", "/admin/login"):
        policy = httpx.get(arena.url + path, timeout=30).headers.get("content-security-policy", "")
        assert "img-src 'self' data: blob:" in policy, (path, policy)


def test_prompt_and_answer_payloads_do_not_run(arena: Arena, page, tmp_path: Path) -> None:
    picture = tmp_path / "p.png"
    picture.write_bytes(png())
    page.goto(arena.url)
    before = arena.snapshot()
    ask(page, picture, PROMPT_PAYLOAD)
    # The payload reached both chats as text: the answer echoes the prompt.
    text = page.inner_text("#battle-answer-a")
    assert "Answer" in text and "prompt anchor" in text
    assert_inert(page, "after the answers streamed")
    # Stored verbatim: the database keeps what was sent (escaping is the renderer's job).
    assert (PROMPT_PAYLOAD,) in arena.query("SELECT prompt FROM turns")
    assert arena.snapshot().rows["turns"] == before.rows["turns"] + 1
    assert page.outside == [], "the page fetched from another host"  # type: ignore[attr-defined]


def test_display_names_revealed_after_the_vote_do_not_run(arena: Arena, page, tmp_path: Path) -> None:
    picture = tmp_path / "p.png"
    picture.write_bytes(png("olive"))
    page.goto(arena.url)
    ask(page, picture, "Which colour?")
    shown_a, shown_b = vote(page, "vote-b")
    assert {shown_a, shown_b} & {"Alpha", "Bravo"}, (shown_a, shown_b)  # names shown as text
    assert_inert(page, "after the reveal")
    # The pickers of the other tabs list the same names.
    page.click("#tab-side-by-side-button")
    accept_terms_tab(page, "sbs")
    page.click("#sbs-model-a")
    page.wait_for_timeout(500)
    assert_inert(page, "in the side-by-side picker")
    page.click("#tab-direct-button")
    accept_terms_tab(page, "direct")
    page.click("#direct-model")
    page.wait_for_timeout(500)
    assert_inert(page, "in the direct-chat picker")
    arena.assert_serving()


def accept_terms_tab(page, prefix: str) -> None:
    selector = f"#{prefix}-terms-accept"
    page.wait_for_selector(f"{selector}, #{prefix}-prompt textarea", state="visible", timeout=30_000)
    if page.is_visible(selector):
        page.click(selector)
        page.wait_for_selector(f"#{prefix}-prompt textarea", state="visible", timeout=30_000)


def sign_in_admin(page, arena: Arena) -> None:
    page.goto(arena.url + "/admin/login")
    page.fill("#login-user", "admin")
    page.fill("#login-password", BASE_ENV["ARENA_ADMIN_PASSWORD"])
    page.click("#login-submit")
    page.wait_for_url(arena.url + "/admin/")
    page.wait_for_selector(".gradio-container", timeout=60_000)


def test_vote_reason_is_stored_as_text_and_inert_on_the_admin_page(arena: Arena, page) -> None:
    voter, battle_id = complete_battle(arena, prompt=PROMPT_PAYLOAD)
    saved = voter.reason(REASON_PAYLOAD)
    assert saved.success and "reason was saved" in str(saved.outputs)
    assert arena.query("SELECT reason FROM votes WHERE battle_id = :b", b=battle_id) == [(REASON_PAYLOAD,)]
    # The operator opens the battle: prompt, answers, names and reason are all on that page.
    sign_in_admin(page, arena)
    page.click("#admin-tab-battles-button")
    page.fill("#admin-battle-id textarea, #admin-battle-id input", battle_id)
    page.click("#admin-battle-open")
    page.wait_for_function(
        "() => (document.querySelector('#admin-battle-summary')?.innerText || '').includes('reason')",
        timeout=30_000,
    )
    assert_inert(page, "on the admin battle page")
    assert page.outside == []  # type: ignore[attr-defined]


def test_feedback_comment_is_stored_as_text_and_inert(arena: Arena, page) -> None:
    client = arena.page()
    assert client.call("direct-terms-accept", [None, None]).success
    client.call("tab-direct", [None, None], trigger="select")
    sent = client.call("direct-send", [[], "hi <b>there</b>", "alpha", None, [], None])
    assert sent.success, sent.text()
    history = sent.outputs[1]
    rated = client.call(
        "direct-chat",
        [COMMENT_PAYLOAD, None, history],
        trigger="like",
        event_data={"index": 1, "value": [history[1]["content"][0]["text"]], "liked": True},
    )
    assert rated.success and "was saved" in str(rated.outputs), rated.text()
    assert (COMMENT_PAYLOAD,) in arena.query("SELECT comment FROM feedback")
    # The same comment typed in the page, then rated: the status line and chat show no live markup.
    page.goto(arena.url)
    page.click("#tab-direct-button")
    accept_terms_tab(page, "direct")
    page.wait_for_function("() => document.querySelector('#direct-model input') !== null")
    page.fill("#direct-prompt textarea", PROMPT_PAYLOAD)
    page.click("#direct-send")
    page.wait_for_function(
        "() => (document.querySelector('#direct-status')?.innerText || '').includes('Rate the answer')",
        timeout=30_000,
    )
    page.fill("#direct-comment textarea", COMMENT_PAYLOAD)
    page.locator("#direct-chat button[aria-label='Like']").first.click()
    page.wait_for_function(
        "() => (document.querySelector('#direct-status')?.innerText || '').includes('was saved')",
        timeout=30_000,
    )
    assert_inert(page, "after feedback in the direct chat")
    arena.assert_serving()
