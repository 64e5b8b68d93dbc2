"""Runs the real arena as a user would (``python launch.py``) and finds Debian's Chromium.

Shared by the browser tests and the start-up benchmark."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("ARENA_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


# Records every byte of every response body the page's scripts receive (fetch — including streamed
# server-sent events — XHR, EventSource and WebSocket), as the data arrives.
RECORD_PAYLOADS = """
(() => {
  const received = (window.__arenaReceived = []);
  const originalFetch = window.fetch.bind(window);
  window.fetch = async (...args) => {
    const response = await originalFetch(...args);
    try {
      const copy = response.clone();
      if (copy.body) {
        const reader = copy.body.getReader();
        const decoder = new TextDecoder();
        (async () => {
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            received.push(decoder.decode(value, { stream: true }));
          }
        })().catch(() => {});
      }
    } catch (e) {}
    return response;
  };
  const open = XMLHttpRequest.prototype.open;
  XMLHttpRequest.prototype.open = function (...args) {
    this.addEventListener("load", () => { try { received.push(String(this.responseText)); } catch (e) {} });
    return open.apply(this, args);
  };
  const OriginalEventSource = window.EventSource;
  if (OriginalEventSource) {
    window.EventSource = function (...args) {
      const source = new OriginalEventSource(...args);
      source.addEventListener("message", (event) => received.push(String(event.data)));
      return source;
    };
    window.EventSource.prototype = OriginalEventSource.prototype;
  }
  const OriginalWebSocket = window.WebSocket;
  window.WebSocket = function (...args) {
    const socket = new OriginalWebSocket(...args);
    socket.addEventListener("message", (event) => received.push(String(event.data)));
    return socket;
  };
  window.WebSocket.prototype = OriginalWebSocket.prototype;
})();
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ArenaServer:
    def __init__(self, url: str, db_path: Path, process: subprocess.Popen[bytes], log: Path) -> None:
        self.url, self.db_path, self.process, self.log = url, db_path, process, log


def start_arena(
    tmp: Path, *args: str, timeout: float = 240.0, env: dict[str, str] | None = None
) -> ArenaServer:
    """Run ``python launch.py`` as a user would and wait until it serves its page.

    ``env`` adds environment variables (``ARENA_*`` settings) to the arena's environment.
    """
    port = free_port()
    db_path = tmp / "arena.db"
    log = tmp / "server.log"
    env = {
        **os.environ,
        **(env or {}),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "ARENA_CACHE_DIR": os.environ.get("ARENA_TEST_CACHE_DIR") or str(tmp / "cache"),
    }
    command = [
        sys.executable,
        "launch.py",
        "--db",
        f"sqlite:///{db_path}",
        "--port",
        str(port),
        "--data-dir",
        str(tmp / "data"),
        *args,
    ]
    handle = log.open("wb")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"arena exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return ArenaServer(url, db_path, process, log)
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"arena did not start within {timeout}s:\n{log.read_text()[-4000:]}")


@contextmanager
def roster_arena(tmp: Path, roster: str, env: dict[str, str] | None = None) -> Iterator[ArenaServer]:
    """An arena on a roster given as YAML text (usually scripted models), the leaderboard computed in a
    thread of the web process; stopped on exit."""
    (tmp / "roster.yaml").write_text(roster)
    server = start_arena(
        tmp, "--config", str(tmp / "roster.yaml"), env={"ARENA_LEADERBOARD_WORKER": "false", **(env or {})}
    )
    try:
        yield server
    finally:
        stop_arena(server)


def query(server: ArenaServer, sql: str, params: tuple = ()) -> list[tuple]:
    """Rows of a query on the arena's SQLite database."""
    with sqlite3.connect(server.db_path) as db:
        return db.execute(sql, params).fetchall()


def stop_arena(server: ArenaServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def accept_terms(page) -> None:
    """Accept the terms of use if the Battle tab asks for them (it does before a tab's first battle)."""
    page.wait_for_selector("#terms-accept, #battle-prompt textarea", state="visible", timeout=60_000)
    if page.is_visible("#terms-accept"):
        page.click("#terms-accept")
        page.wait_for_selector("#battle-prompt textarea", state="visible", timeout=30_000)


def upload(page, image: Path, attempts: int = 3) -> None:
    """Put ``image`` into the Battle tab's image input and wait until the page lists it.

    Right after ``goto`` the file input can exist before Gradio's front end listens to it, and a file
    set then is dropped (seen once in a CI run on a loaded machine): set it again if the page does
    not list it within 10 s.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    accept_terms(page)
    for attempt in range(1, attempts + 1):
        page.set_input_files("#battle-images input[type=file]", str(image))
        try:
            page.wait_for_selector(f"#battle-images >> text={image.name}", timeout=10_000)
            return
        except PlaywrightTimeout:
            if attempt == attempts:
                raise


def ask(page, image: Path, prompt: str, timeout_ms: int = 180_000) -> None:
    """In the Battle tab: upload ``image``, send ``prompt``, wait until both answers are complete."""
    upload(page, image)
    page.fill("#battle-prompt textarea", prompt)
    page.click("#battle-send")
    # The vote buttons unlock only when both answers are complete.
    page.wait_for_function(
        "() => !document.querySelector('#vote-a').disabled", timeout=timeout_ms, polling=200
    )


def vote(page, button: str = "vote-a") -> tuple[str, str]:
    """Click a vote button and return the two revealed names (A, B)."""
    page.click(f"#{button}")
    page.wait_for_function(
        "() => document.querySelector('#battle-name-a')?.innerText?.includes('Model A:')", timeout=30_000
    )
    shown_a = page.inner_text("#battle-name-a").split("Model A:")[1].strip()
    shown_b = page.inner_text("#battle-name-b").split("Model B:")[1].strip()
    return shown_a, shown_b
