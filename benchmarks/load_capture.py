"""Capture what headless Chromium sends while it plays one battle: the protocol the load client copies.

    python benchmarks/load_capture.py http://127.0.0.1:7860/ [--out requests.json]

Accepts the terms, uploads a picture, sends a prompt, waits for both answers and votes A, recording every
request to the page and its Gradio API (method, URL, JSON body) and the answers to the upload and the
queue joins. Compare with ``benchmarks/load_client.py`` after a Gradio upgrade.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.load_client import make_images  # noqa: E402
from tests.e2e.harness import CHROMIUM, CHROMIUM_ARGS, accept_terms, ask, vote  # noqa: E402


def capture(url: str) -> list[dict[str, Any]]:
    """The requests (and the upload/join answers) of one battle played in Chromium at ``url``."""
    from playwright.sync_api import sync_playwright

    picture = Path(tempfile.mkdtemp()) / "picture.png"
    picture.write_bytes(make_images(1)[0])
    seen: list[dict[str, Any]] = []

    def on_request(request: Any) -> None:
        if "/gradio_api/" in request.url or request.resource_type == "document":
            body = request.post_data
            seen.append({"method": request.method, "url": request.url, "body": body[:4000] if body else None})

    def on_response(response: Any) -> None:
        if "/gradio_api/upload?" in response.url or "/gradio_api/queue/join" in response.url:
            seen.append(
                {"answer_to": response.url, "status": response.status, "body": response.text()[:2000]}
            )

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("request", on_request)
            page.on("response", on_response)
            page.goto(url)
            accept_terms(page)
            ask(page, picture, "What shapes and colours are in this picture?")
            vote(page, "vote-a")
            page.wait_for_timeout(500)
        finally:
            browser.close()
    return seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("url", help="a running arena's page, e.g. http://127.0.0.1:7860/")
    parser.add_argument("--out", type=Path, help="write the capture here (default: stdout)")
    args = parser.parse_args(argv)
    text = json.dumps(capture(args.url), indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
