"""A real local HTTP server that speaks the OpenAI chat-completions protocol (streaming and not).

Used by the tests and the throughput benchmark of the ``openai`` backend. Standard library only (plus
Pillow to decode the images a request carried). Every knob lives in :class:`Behaviour`; tests may
replace ``server.behaviour`` between requests.

A test that must know exactly when each chunk goes out sets ``Behaviour.pace`` (a semaphore):
every content chunk then waits for one ``release()``, so the order of events, not the spacing of
sleeps, decides what the client can have read.

Streams are close-delimited (``Connection: close``, no Content-Length, no chunked encoding), so a
dropped stream (``drop_after``) looks to the client like an ordinary end of body that simply lacks the
finish chunk and ``data: [DONE]``: the client itself has to notice the missing terminator.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import re
import select
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

POLL_S = 0.01  # step of every sleep, so a client that went away is noticed within ~10 ms
HANG_LIMIT_S = 30.0
MALFORMED_EVENT = b'data: {"id": "x", "choices": [\n\n'
DONE_EVENT = b"data: [DONE]\n\n"
CONNECTION_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)

MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)

ERROR_TYPES = {
    400: ("invalid_request_error", "bad_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


@dataclass
class Behaviour:
    """How the server answers chat requests (see the module docstring and the field comments)."""

    reply: str = "The image shows a small red square on a white background."
    chunk_size: int = 1  # words per content chunk; chunks concatenate back to `reply` exactly
    chunk_delay_s: float = 0.0  # sleep between content chunks
    first_token_delay_s: float = 0.0  # sleep after the headers, before the first content chunk
    status: int = 200  # non-200: every chat request gets this status and an OpenAI-style JSON error
    fail_first: int = 0  # the first N chat requests (since this behaviour was set) fail with HTTP 500
    drop_after: int | None = None  # after N content chunks, close the socket (no finish chunk, no [DONE])
    malformed_after: int | None = None  # after N content chunks, one invalid-JSON event, ~0.2 s, [DONE]
    hang: bool = False  # 200 headers, then nothing until the client disconnects (gives up after 30 s)
    usage: bool | None = None  # None: usage chunk only if stream_options.include_usage; True/False force
    models_status: int = 200  # status of GET /v1/models (503 = unhealthy)
    # every content chunk waits for one pace.release() (never released: no further chunk; the wait
    # still notices a client that went away, and gives up like `hang` after 30 s)
    pace: threading.Semaphore | None = None
    # POST /v1/moderations: flags text containing one of these words (case-insensitive, category
    # "violence") and images whose pixels are all this RGB colour (category "sexual")
    moderation_flag_words: tuple[str, ...] = ("forbidden-word",)
    moderation_flag_colour: tuple[int, int, int] | None = (255, 0, 0)
    moderation_status: int = 200  # non-200: every moderation request gets this status and a JSON error
    moderation_raw: bytes | None = None  # set: every moderation request gets 200 with exactly this body


def split_reply(reply: str, chunk_size: int) -> list[str]:
    """Pieces of `chunk_size` words each, spaces kept, so that ``"".join(pieces) == reply``."""
    words = [w for w in re.findall(r"\S*\s*", reply) if w]
    size = max(1, chunk_size)
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)]


def prompt_tokens(body: dict[str, Any]) -> int:
    """A deterministic prompt size: words in every text part plus 10 per image."""
    count = 0
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            count += len(content.split())
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "text":
                    count += len(str(part.get("text", "")).split())
                elif part.get("type") == "image_url":
                    count += 10
    return count


def error_body(status: int, message: str) -> dict[str, Any]:
    kind, code = ERROR_TYPES.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    return {"error": {"message": message, "type": kind, "code": code}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # many concurrent clients in the load benchmark: no SYN drops

    def __init__(self, fake: FakeOpenAIServer) -> None:
        self.fake = fake
        super().__init__((fake.host, fake.port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client going away between requests is not worth a traceback
        super().handle_error(request, client_address)


class _ClientGone(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for JSON answers; streams say Connection: close
    server: _Server

    # -- plumbing ---------------------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    @property
    def fake(self) -> FakeOpenAIServer:
        return self.server.fake

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, status: int, message: str) -> None:
        self._send_json(status, error_body(status, message))

    def _route(self) -> str | None:
        """The path below /v1, or None when the request is not under /v1."""
        path = self.path.split("?", 1)[0].rstrip("/")
        return path[len("/v1") :] if path.startswith("/v1/") else None

    def _client_closed(self) -> bool:
        """True when the peer has closed its end (readable socket with nothing to read)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _pause(self, seconds: float) -> None:
        """Sleep in small steps; raise _ClientGone as soon as the client has gone."""
        deadline = time.monotonic() + seconds
        while True:
            if self._client_closed():
                raise _ClientGone
            if self.fake._stopping.is_set():
                raise _ClientGone
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(POLL_S, remaining))

    def _await_pace(self, pace: threading.Semaphore) -> bool:
        """Wait for one release of ``pace``; raise _ClientGone if the client goes; False after 30 s."""
        deadline = time.monotonic() + HANG_LIMIT_S
        while not pace.acquire(timeout=POLL_S):
            if self._client_closed() or self.fake._stopping.is_set():
                raise _ClientGone
            if time.monotonic() > deadline:
                return False
        return True

    def _event(self, payload: dict[str, Any] | bytes) -> None:
        data = payload if isinstance(payload, bytes) else b"data: " + json.dumps(payload).encode() + b"\n\n"
        try:
            self.wfile.write(data)
        except CONNECTION_ERRORS as exc:
            raise _ClientGone from exc

    # -- routes -----------------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802
        if self._route() != "/models":
            self._send_error(404, f"no route for GET {self.path}")
            return
        status = self.fake.behaviour.models_status
        if status != 200:
            self._send_error(status, f"model server unavailable (status {status})")
            return
        self._send_json(
            200, {"object": "list", "data": [{"id": self.fake.model, "object": "model", "owned_by": "fake"}]}
        )

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self._route() == "/moderations":
            self._moderations(raw)
            return
        if self._route() != "/chat/completions":
            self._send_error(404, f"no route for POST {self.path}")
            return
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        behaviour, number = self.fake._register(
            {"body": body, "headers": {k.lower(): v for k, v in self.headers.items()}, "path": self.path}
        )
        if (
            self.fake.api_key is not None
            and self.headers.get("Authorization") != f"Bearer {self.fake.api_key}"
        ):
            self._send_error(401, "Incorrect API key provided.")
        elif not isinstance(body, dict):
            self._send_error(400, "request body is not a JSON object")
        elif body.get("model") != self.fake.model:
            self._send_error(404, f"The model `{body.get('model')}` does not exist.")
        elif behaviour.status != 200:
            self._send_error(behaviour.status, f"fake failure with status {behaviour.status}")
        elif self.fake._should_fail(behaviour):
            self._send_error(500, "fake transient failure (fail_first)")
        elif body.get("stream"):
            self._stream(body, behaviour, number)
        else:
            self._complete(body, behaviour, number)

    def _moderations(self, raw: bytes) -> None:
        """OpenAI's moderation endpoint: one result for the whole ``input`` (a string or a list of
        strings and text/image_url parts), recorded in ``fake.moderation_requests``."""
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        behaviour, number = self.fake._register_moderation(
            {"body": body, "headers": {k.lower(): v for k, v in self.headers.items()}, "path": self.path}
        )
        if (
            self.fake.api_key is not None
            and self.headers.get("Authorization") != f"Bearer {self.fake.api_key}"
        ):
            self._send_error(401, "Incorrect API key provided.")
            return
        if behaviour.moderation_status != 200:
            status = behaviour.moderation_status
            self._send_error(status, f"fake moderation failure with status {status}")
            return
        if behaviour.moderation_raw is not None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(behaviour.moderation_raw)))
            self.end_headers()
            self.wfile.write(behaviour.moderation_raw)
            return
        try:
            flags = moderation_flags(body, behaviour)
        except AssertionError as exc:
            self._send_error(400, str(exc))
            return
        categories = {name: name in flags for name in MODERATION_CATEGORIES}
        scores = {name: (0.97 if name in flags else 0.001) for name in MODERATION_CATEGORIES}
        applied = {name: sorted(flags[name]) if name in flags else [] for name in MODERATION_CATEGORIES}
        result = {
            "flagged": bool(flags),
            "categories": categories,
            "category_scores": scores,
            "category_applied_input_types": applied,
        }
        model = body.get("model") if isinstance(body, dict) else None
        self._send_json(
            200, {"id": f"modr-{number}", "model": model or "omni-moderation-latest", "results": [result]}
        )

    def _plan(self, body: dict[str, Any], behaviour: Behaviour) -> tuple[list[str], str]:
        pieces = split_reply(behaviour.reply, behaviour.chunk_size)
        limit = body.get("max_tokens")
        if limit is None:
            limit = body.get("max_completion_tokens")
        if isinstance(limit, int) and limit < len(pieces):
            return pieces[: max(0, limit)], "length"
        return pieces, "stop"

    def _usage(self, body: dict[str, Any], pieces: list[str]) -> dict[str, int]:
        prompt = prompt_tokens(body)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": len(pieces),
            "total_tokens": prompt + len(pieces),
        }

    def _complete(self, body: dict[str, Any], behaviour: Behaviour, number: int) -> None:
        pieces, finish = self._plan(body, behaviour)
        message = {"role": "assistant", "content": "".join(pieces)}
        self._send_json(
            200,
            {
                "id": f"chatcmpl-{number}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.fake.model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": self._usage(body, pieces),
            },
        )

    def _stream(self, body: dict[str, Any], behaviour: Behaviour, number: int) -> None:
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        try:
            self.end_headers()
            self._stream_body(body, behaviour, number)
        except (_ClientGone, *CONNECTION_ERRORS):
            if not self.fake._stopping.is_set():
                self.fake._count("disconnects")

    def _stream_body(self, body: dict[str, Any], behaviour: Behaviour, number: int) -> None:
        if behaviour.hang:
            self._pause(HANG_LIMIT_S)
            return
        pieces, finish = self._plan(body, behaviour)
        base = {"id": f"chatcmpl-{number}", "object": "chat.completion.chunk", "created": int(time.time())}
        base["model"] = self.fake.model

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}

        self._event(chunk({"role": "assistant", "content": ""}))
        if behaviour.first_token_delay_s > 0:
            self._pause(behaviour.first_token_delay_s)
        for sent in range(len(pieces) + 1):
            if sent == behaviour.drop_after:
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if sent == behaviour.malformed_after:
                self._event(MALFORMED_EVENT)
                self._pause(0.2)
                self._event(DONE_EVENT)
                self.fake._count("completed")
                return
            if sent == len(pieces):
                break
            if sent and behaviour.chunk_delay_s > 0:
                self._pause(behaviour.chunk_delay_s)
            if behaviour.pace is not None and not self._await_pace(behaviour.pace):
                return
            self._event(chunk({"content": pieces[sent]}))
        self._event(chunk({}, finish))
        include = behaviour.usage
        if include is None:
            options = body.get("stream_options")
            include = bool(isinstance(options, dict) and options.get("include_usage"))
        if include:
            self._event({**base, "choices": [], "usage": self._usage(body, pieces)})
        self._event(DONE_EVENT)
        self.fake._count("completed")


def moderation_flags(body: object, behaviour: Behaviour) -> dict[str, set[str]]:
    """The categories a moderation request trips, each with the input types ("text", "image") that
    tripped it; an AssertionError describes a request that is not OpenAI's shape."""
    if not isinstance(body, dict) or "input" not in body:
        raise AssertionError("moderation request body is not a JSON object with an `input`")
    inputs = body["input"]
    parts = inputs if isinstance(inputs, list) else [inputs]
    words = [word.lower() for word in behaviour.moderation_flag_words]
    flags: dict[str, set[str]] = {}
    for p, part in enumerate(parts):
        if isinstance(part, str):
            part = {"type": "text", "text": part}
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            if any(word in part["text"].lower() for word in words):
                flags.setdefault("violence", set()).add("text")
        elif kind == "image_url":
            url = part.get("image_url")
            image = _decode_data_uri(url.get("url") if isinstance(url, dict) else url, f"input part {p}")
            colour = behaviour.moderation_flag_colour
            if colour is not None:
                extrema = image.convert("RGB").getextrema()
                if all(low == high == value for (low, high), value in zip(extrema, colour, strict=True)):
                    flags.setdefault("sexual", set()).add("image")
        else:
            raise AssertionError(f"moderation input part {p} is neither text nor image_url: {part!r}"[:200])
    return flags


class FakeOpenAIServer:
    """A threaded OpenAI-compatible server on 127.0.0.1 (random port); use as a context manager.
    Another address or a fixed port: set ``host`` / ``port`` before :meth:`start`."""

    host = "127.0.0.1"
    port = 0  # 0: a free port chosen by the system

    def __init__(
        self, behaviour: Behaviour | None = None, model: str = "fake-vlm", api_key: str | None = None
    ):
        self.model = model
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []  # chat requests
        self.moderation_requests: list[dict[str, Any]] = []  # POST /v1/moderations, in order
        self.disconnects = 0
        self.completed = 0
        self.client_gone = threading.Event()
        self._lock = threading.Lock()
        self._failed = 0
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""
        self.behaviour = behaviour or Behaviour()

    # -- behaviour --------------------------------------------------------------------------------------

    @property
    def behaviour(self) -> Behaviour:
        return self._behaviour

    @behaviour.setter
    def behaviour(self, value: Behaviour) -> None:
        with self._lock:
            self._behaviour = value
            self._failed = 0  # fail_first counts from the moment a behaviour is set

    # -- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> FakeOpenAIServer:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _Server(self)
        host, port = self._httpd.server_address[:2]
        self.base_url = f"http://{host}:{port}/v1"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # wake handlers blocked on idle keep-alive connections
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inspection -------------------------------------------------------------------------------------

    def wait_completed(self, count: int, timeout: float = 10.0) -> bool:
        """True once ``count`` streams have run to [DONE]; the server counts one just after sending
        it, so a client that has read [DONE] may be a moment ahead of the counter."""
        deadline = time.monotonic() + timeout
        while self.completed < count and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.completed >= count

    def wait_disconnect(self, timeout: float) -> bool:
        """True once a stream has ended because its client went away (see ``client_gone``)."""
        return self.client_gone.wait(timeout)

    def images(self, index: int = -1) -> list[Image.Image]:
        """Decode every image_url data URI in request `index`'s messages, in order."""
        if not self.requests:
            raise AssertionError("the fake OpenAI server has received no chat request")
        body = self.requests[index]["body"]
        if not isinstance(body, dict):
            raise AssertionError(f"request {index} has no JSON object body: {body!r}")
        images = []
        for m, message in enumerate(body.get("messages") or []):
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, list):
                continue
            for p, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") != "image_url":
                    continue
                where = f"request {index}, message {m}, part {p}"
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                images.append(_decode_data_uri(url, where))
        return images

    # -- used by the handler ----------------------------------------------------------------------------

    def _register(self, entry: dict[str, Any]) -> tuple[Behaviour, int]:
        with self._lock:
            self.requests.append(entry)
            return self._behaviour, len(self.requests)

    def _register_moderation(self, entry: dict[str, Any]) -> tuple[Behaviour, int]:
        with self._lock:
            self.moderation_requests.append(entry)
            return self._behaviour, len(self.moderation_requests)

    def _should_fail(self, behaviour: Behaviour) -> bool:
        with self._lock:
            if behaviour is self._behaviour and self._failed < behaviour.fail_first:
                self._failed += 1
                return True
            return False

    def _count(self, what: str) -> None:
        with self._lock:
            setattr(self, what, getattr(self, what) + 1)
        if what == "disconnects":
            self.client_gone.set()

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)


def _decode_data_uri(url: object, where: str) -> Image.Image:
    if not isinstance(url, str) or not url.startswith("data:image/"):
        shown = url[:80] if isinstance(url, str) else url
        raise AssertionError(f"{where}: image_url is not a data:image/... URI: {shown!r}")
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise AssertionError(f"{where}: image data URI is not base64-encoded: {header[:80]!r}")
    try:
        data = base64.b64decode(payload, validate=True)
        image = Image.open(io.BytesIO(data))
        image.load()
    except (binascii.Error, ValueError, OSError) as exc:
        raise AssertionError(f"{where}: image data URI does not decode ({header}): {exc}") from exc
    return image
