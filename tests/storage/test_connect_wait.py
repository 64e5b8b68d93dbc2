"""A web process's database connections wait out a short PostgreSQL restart instead of failing.

The server is the real one, reached through a small TCP relay on another port that refuses
connections at first (as a restarting server does) and starts relaying after a second."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from storage.db import make_engine


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, sink):
            end.close()


def _relay_later(port: int, target: tuple[str, int], delay_s: float, stop: threading.Event) -> None:
    """After ``delay_s``, accept connections on ``port`` and relay each to ``target``."""
    time.sleep(delay_s)
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_new_connection_waits_for_a_server_that_comes_back(postgres_db_url: str) -> None:
    real = make_url(postgres_db_url)
    port = _free_port()
    via_relay = real.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    with pytest.raises(OperationalError):  # nothing listens yet: without waiting, it fails at once
        make_engine(via_relay).connect().close()

    stop = threading.Event()
    relay = threading.Thread(
        target=_relay_later, args=(port, (real.host or "127.0.0.1", real.port or 5432), 1.0, stop), daemon=True
    )
    started = time.monotonic()
    relay.start()
    engine = make_engine(via_relay, connect_wait_s=10)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1
        assert time.monotonic() - started >= 0.9  # it waited for the server instead of failing
    finally:
        engine.dispose()
        stop.set()
        relay.join(timeout=5)
