"""A slowloris-style client: many loopback connections sending their headers a byte at a time.

While 24 connections dribble their request headers (one byte every 0.2 s, for about 6 s), a normal
voter still loads the page and completes a whole battle (upload, send, vote) in reasonable time.
Bounded in count and time; loopback only.
"""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.security.running import Arena, complete_battle

pytestmark = pytest.mark.e2e
CONNECTIONS = 24
DRIBBLE_S = 6.0


def dribble(host: str, port: int, stop: threading.Event, opened: list[int]) -> None:
    """Open a connection and send a request's headers one byte at a time until ``stop``."""
    with socket.create_connection((host, port), timeout=5) as sock:
        opened.append(1)
        header = b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\nX-Slow: " + b"a" * 200
        for byte in header:
            if stop.wait(0.2):
                return
            try:
                sock.send(bytes([byte]))
            except OSError:
                return  # the server closed it: fine


def test_a_slow_client_does_not_starve_the_others(arena: Arena) -> None:
    parts = urlsplit(arena.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    stop, opened = threading.Event(), []
    threads = [
        threading.Thread(target=dribble, args=(host, port, stop, opened), daemon=True)
        for _ in range(CONNECTIONS)
    ]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 5
        while len(opened) < CONNECTIONS and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(opened) == CONNECTIONS, "the slow connections were not all opened"
        time.sleep(1.0)  # the slow clients are mid-headers now
        started = time.monotonic()
        page = httpx.get(arena.url + "/", timeout=10)
        page_s = time.monotonic() - started
        assert page.status_code == 200 and page_s < 3.0, page_s
        started = time.monotonic()
        complete_battle(arena, prompt="Still there?")
        battle_s = time.monotonic() - started
        assert battle_s < 10.0, battle_s
        assert any(t.is_alive() for t in threads), "the slow clients ended before the check ran"
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=DRIBBLE_S)
    arena.assert_serving()
