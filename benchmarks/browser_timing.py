"""What a voter waits for in the browser: the arena against a bare Gradio app, side by side (issue 15).

Gradio's own pipeline (queue, SSE, the Svelte front end) sets a floor under any Gradio arena. This
benchmark measures how far above that floor the arena is. It starts

- the arena (``python launch.py``, SQLite, two scripted models answering the same paced text), and
- a bare Gradio app with the same layout essentials (a prompt box, Send, two chatbots streaming the same
  answer at the same pace, a vote button revealing two names), nothing else,

and drives both with headless Chromium, alternating runs, measuring in the page (``performance.now``
around the click, a MutationObserver for the change):

- **page ready**: navigation start → the first control a person uses is visible, in a new browser
  (cold cache; the arena's ``terms-accept``, the bare app's Send), recorded by a MutationObserver
  installed before any page script;
- **Send → first token**: click on Send → the first answer word visible in pane A;
- **reveal**: click on the vote → the model name visible;
- **page ready again**: the same browser opens the page once more (warm cache; the arena's voter has
  accepted the terms, so its first control is ``battle-send``).

Each page load waits ``--settle-s`` first, so neither app is measured while the other's last run is
still being cleaned up on the same two cores.

    python benchmarks/browser_timing.py [--runs 10] [--words 20] [--delay-s 0.02] [--settle-s 1]
                                        [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.harness import CHROMIUM, CHROMIUM_ARGS, free_port, start_arena, stop_arena  # noqa: E402

#: The answer both apps stream, word by word (the scripted models get it as their ``reply``).
ANSWER_WORD = "lorem"

BARE_APP = '''
import asyncio, sys
import gradio as gr

WORDS, DELAY, PORT, WORD = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]


async def send(prompt, history_a, history_b):
    user = {"role": "user", "content": prompt}
    text = ""
    for index in range(WORDS):
        await asyncio.sleep(DELAY)
        text += ("" if index == 0 else " ") + WORD
        answer = {"role": "assistant", "content": text}
        yield [*history_a, user, answer], [*history_b, user, answer]


def vote():
    return "Model A: **Alpha**", "Model B: **Bravo**"


with gr.Blocks() as app:
    with gr.Row():
        chat_a = gr.Chatbot(elem_id="bare-answer-a")
        chat_b = gr.Chatbot(elem_id="bare-answer-b")
    with gr.Row():
        name_a = gr.Markdown("", elem_id="bare-name-a")
        name_b = gr.Markdown("", elem_id="bare-name-b")
    vote_a = gr.Button("A is better", elem_id="bare-vote")
    prompt = gr.Textbox(elem_id="bare-prompt")
    button = gr.Button("Send", elem_id="bare-send")
    button.click(send, [prompt, chat_a, chat_b], [chat_a, chat_b])
    vote_a.click(vote, None, [name_a, name_b])
app.queue().launch(server_port=PORT, server_name="127.0.0.1", show_error=True)
'''

#: Click ``selector`` and resolve with the milliseconds until ``done()`` (page-side JS) holds.
TIME_CLICK = """
async ([selector, done]) => {
  const check = new Function("return (" + done + ")();");
  const started = performance.now();
  return await new Promise((resolve) => {
    const observer = new MutationObserver(() => {
      if (check()) { observer.disconnect(); resolve(performance.now() - started); }
    });
    observer.observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
    document.querySelector(selector).click();
    setTimeout(() => { observer.disconnect(); resolve(-1); }, 60000);
  });
}
"""


def _wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the app exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


#: Installed before any page script: records ``performance.now()`` when an element matching the page's
#: ready selector first has a size on screen. Measured in the page, because Playwright's own wait polls
#: with a growing back-off (up to 0.5 s between looks), which would charge a later-ready page for the
#: poll's granularity rather than for its own time.
READY_MARK = """
(() => {
  const watch = () => {
    const selector = window.__readySelector;
    if (!selector || window.__readyAt !== undefined) return;
    for (const el of document.querySelectorAll(selector)) {
      const box = el.getBoundingClientRect();
      if (box.width > 0 && box.height > 0) { window.__readyAt = performance.now(); return; }
    }
  };
  new MutationObserver(watch).observe(document, {subtree: true, childList: true, attributes: true});
})();
"""


def _new_page(browser, selector: str):
    context = browser.new_context()
    context.add_init_script(f"window.__readySelector = {json.dumps(selector)};" + READY_MARK)
    return context.new_page()


def _page_ready(page, url: str, selector: str) -> float:
    page.goto(url)
    page.wait_for_selector(selector, state="visible", timeout=60_000)
    return float(page.evaluate("() => window.__readyAt ?? performance.now()"))


def _has_word(pane: str) -> str:
    return f"() => (document.querySelector('{pane}')?.innerText || '').includes('{ANSWER_WORD}')"


def run_arena(browser, url: str) -> dict[str, float]:
    page = _new_page(browser, "#terms-accept, #battle-send")
    ready = _page_ready(page, url, "#terms-accept, #battle-send")
    if page.is_visible("#terms-accept"):
        page.click("#terms-accept")
        page.wait_for_selector("#battle-send", state="visible")
    page.fill("#battle-prompt textarea", "Describe the picture.")
    first = page.evaluate(TIME_CLICK, ["#battle-send", _has_word("#battle-answer-a")])
    page.wait_for_function("() => !document.querySelector('#vote-a').disabled", timeout=60_000)
    reveal = page.evaluate(
        TIME_CLICK,
        ["#vote-a", "() => (document.querySelector('#battle-name-a')?.innerText || '').includes('Model A:')"],
    )
    again = _page_ready(page.context.new_page(), url, "#battle-send")
    page.context.close()
    return {"page_ready_ms": ready, "first_token_ms": first, "reveal_ms": reveal, "returning_ready_ms": again}


def run_bare(browser, url: str) -> dict[str, float]:
    page = _new_page(browser, "#bare-send")
    ready = _page_ready(page, url, "#bare-send")
    page.fill("#bare-prompt textarea", "Describe the picture.")
    first = page.evaluate(TIME_CLICK, ["#bare-send", _has_word("#bare-answer-a")])
    page.wait_for_timeout(200)
    reveal = page.evaluate(
        TIME_CLICK,
        ["#bare-vote", "() => (document.querySelector('#bare-name-a')?.innerText || '').includes('Model A:')"],
    )
    again = _page_ready(page.context.new_page(), url, "#bare-send")
    page.context.close()
    return {"page_ready_ms": ready, "first_token_ms": first, "reveal_ms": reveal, "returning_ready_ms": again}


def summary(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = runs[0].keys()
    return {key: round(statistics.median(r[key] for r in runs), 1) for key in keys}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="page loads per app (alternating)")
    parser.add_argument("--words", type=int, default=20, help="words per streamed answer")
    parser.add_argument("--delay-s", type=float, default=0.02, help="pause before each word")
    parser.add_argument("--settle-s", type=float, default=1.0, help="pause before each page load")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here too")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="browser-timing-"))
    reply = " ".join([ANSWER_WORD] * args.words)
    (tmp / "roster.yaml").write_text(
        "models:\n"
        + "".join(
            f"  - {{name: {name}, display_name: {name.title()}, backend: scripted,"
            f" params: {{reply: '{reply}', delay_s: {args.delay_s}}}}}\n"
            for name in ("alpha", "bravo")
        )
    )
    (tmp / "bare.py").write_text(BARE_APP)
    env = {"ARENA_LEADERBOARD_WORKER": "false", "ARENA_MAX_BATTLES_PER_HOUR": "0"}
    arena = start_arena(tmp, "--config", str(tmp / "roster.yaml"), env=env)
    bare_port = free_port()
    bare = subprocess.Popen(
        [sys.executable, str(tmp / "bare.py"), str(args.words), str(args.delay_s), str(bare_port), ANSWER_WORD],
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    bare_url = f"http://127.0.0.1:{bare_port}/"
    results: dict[str, list[dict[str, float]]] = {"arena": [], "bare": []}
    try:
        _wait_http(bare_url, bare)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            run_arena(browser, arena.url), run_bare(browser, bare_url)  # warm both up
            for _ in range(args.runs):
                time.sleep(args.settle_s)  # let the last run's work (its server's and the browser's) end
                results["arena"].append(run_arena(browser, arena.url))
                time.sleep(args.settle_s)
                results["bare"].append(run_bare(browser, bare_url))
            browser.close()
    finally:
        stop_arena(arena)
        bare.terminate()
        bare.wait(timeout=20)
    table = {name: summary(runs) for name, runs in results.items()}
    load = os.getloadavg()[0]
    print(f"median of {args.runs} runs each, alternating; load average {load:.1f}")
    print(f"{'app':8} {'page ready':>12} {'send→first token':>18} {'reveal':>8} {'page ready again':>18}")
    for name, row in table.items():
        print(
            f"{name:8} {row['page_ready_ms']:>10.0f}ms {row['first_token_ms']:>16.0f}ms {row['reveal_ms']:>6.0f}ms"
            f" {row['returning_ready_ms']:>16.0f}ms"
        )
    gap = {key: round(table["arena"][key] - table["bare"][key], 1) for key in table["arena"]}
    print(f"arena − bare: {gap}")
    if args.out:
        args.out.write_text(json.dumps({"median": table, "gap": gap, "runs": results, "load": load}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
