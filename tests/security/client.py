"""The page's own protocol over plain HTTP, for the hostile-input suite: what a browser sends, crafted.

The Gradio 6 queue as the arena's page uses it (learned by recording what headless Chromium sends):

* ``POST /gradio_api/upload`` (multipart, field ``files``) returns the server paths of the uploads;
* ``POST /gradio_api/queue/join`` with ``{data, fn_index, trigger_id, session_hash, event_data}``
  returns ``{event_id}``;
* ``GET /gradio_api/queue/data?session_hash=…`` streams server-sent events (``estimation``,
  ``process_starts``, ``process_generating``, ``log`` for a toast, ``process_completed``) until the
  event completes. After the first ``process_generating`` message a generator's outputs come as diffs.

Every event of the page is private (no ``api_name``), so an event is found by the ``elem_id`` of the
component that triggers it, read from ``GET /config``. The battle token (the ``gr.BrowserState``
input) travels in clear in ``data``; the server-side ``gr.State`` input is always sent as ``null``.

Also here: a snapshot of what a refused request must not change (row counts and stored image files).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from gradio_client.utils import apply_diff

API = "/gradio_api"
#: Tables a refused request must leave as they were.
COUNTED_TABLES = ("battles", "turns", "turn_images", "responses", "votes", "images", "feedback")


@dataclass
class EventResult:
    """What the queue said about one event: every message, the final outputs, toasts and success."""

    event_id: str | None
    messages: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[Any] | None = None
    success: bool | None = None
    #: every intermediate output list of a generator, whole (diffs applied)
    streamed: list[list[Any]] = field(default_factory=list)

    @property
    def toasts(self) -> list[str]:
        """The texts of ``gr.Warning``/``gr.Info``/error toasts shown for this event."""
        return [m.get("log", "") for m in self.messages if m.get("msg") == "log"]

    @property
    def error(self) -> str | None:
        """The error text of a failed event (Gradio's ``output.error``), else None."""
        done = [m for m in self.messages if m.get("msg") == "process_completed"]
        if done and not done[-1].get("success"):
            return str((done[-1].get("output") or {}).get("error"))
        return None

    def text(self) -> str:
        """Everything the server sent for this event, as one string (to look for leaks)."""
        return json.dumps(self.messages, ensure_ascii=False)


class PageClient:
    """One browser tab's worth of the page protocol (its own ``session_hash``) against a server."""

    def __init__(
        self, base_url: str, *, prefix: str = "", timeout: float = 60.0, **client_kwargs: Any
    ) -> None:
        self.base = base_url.rstrip("/") + prefix
        self.http = httpx.Client(timeout=timeout, **client_kwargs)
        self.session_hash = secrets.token_hex(5)
        self._config: dict[str, Any] | None = None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> PageClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the page's configuration -------------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        if self._config is None:
            response = self.http.get(self.base + "/config")
            response.raise_for_status()
            self._config = response.json()
        return self._config

    def component_id(self, elem_id: str) -> int:
        """The Gradio id of the component with this ``elem_id``."""
        for component in self.config["components"]:
            if component.get("props", {}).get("elem_id") == elem_id:
                return int(component["id"])
        raise KeyError(f"no component with elem_id {elem_id!r}")

    def event(self, elem_id: str, trigger: str = "click") -> tuple[int, int]:
        """``(fn_index, trigger_id)`` of the event ``trigger`` on the component ``elem_id``."""
        target = self.component_id(elem_id)
        for index, dependency in enumerate(self.config["dependencies"]):
            if [target, trigger] in [list(t) for t in dependency["targets"]]:
                return int(dependency.get("id", index)), target
        raise KeyError(f"no {trigger} event on #{elem_id}")

    def load_events(self) -> list[tuple[int, int]]:
        """``(fn_index, n_inputs)`` of the page's load events that run on the server."""
        return [
            (int(d.get("id", i)), len(d["inputs"]))
            for i, d in enumerate(self.config["dependencies"])
            if d.get("backend_fn") and any(t[1] == "load" for t in d["targets"])
        ]

    # -- requests ------------------------------------------------------------------------------------

    def upload(self, files: Sequence[tuple[str, bytes | Iterable[bytes]]], **kwargs: Any) -> httpx.Response:
        """``POST /gradio_api/upload`` of ``(file name, content)`` pairs, as the page sends them."""
        parts = [("files", (name, content, "application/octet-stream")) for name, content in files]
        return self.http.post(self.base + API + "/upload", files=parts, **kwargs)  # type: ignore[arg-type]

    def uploaded(self, files: Sequence[tuple[str, bytes]]) -> list[dict[str, Any]]:
        """Upload and return the FileData values the page then sends in ``data``."""
        response = self.upload(files)
        response.raise_for_status()
        return [self.file_data(path, name) for path, (name, _) in zip(response.json(), files, strict=True)]

    def file_data(self, path: str, orig_name: str | None = None) -> dict[str, Any]:
        return {
            "path": path,
            "url": f"{self.base}{API}/file={path}",
            "orig_name": orig_name or Path(path).name,
            "size": None,
            "mime_type": None,
            "meta": {"_type": "gradio.FileData"},
        }

    def join(self, body: dict[str, Any] | bytes, **kwargs: Any) -> httpx.Response:
        """``POST /gradio_api/queue/join`` with a body exactly as given (crafted bodies included)."""
        if isinstance(body, bytes):
            headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
            return self.http.post(self.base + API + "/queue/join", content=body, headers=headers, **kwargs)
        return self.http.post(self.base + API + "/queue/join", json=body, **kwargs)

    def body(
        self, elem_id: str, data: list[Any], trigger: str = "click", event_data: Any = None
    ) -> dict[str, Any]:
        fn_index, trigger_id = self.event(elem_id, trigger)
        return {
            "data": data,
            "event_data": event_data,
            "fn_index": fn_index,
            "trigger_id": trigger_id,
            "session_hash": self.session_hash,
        }

    def call(
        self, elem_id: str, data: list[Any], trigger: str = "click", event_data: Any = None
    ) -> EventResult:
        """Run the event ``trigger`` of ``#elem_id`` with ``data`` and wait for it to complete."""
        return self.run(self.body(elem_id, data, trigger, event_data))

    def run(self, body: dict[str, Any]) -> EventResult:
        """Join the queue with ``body`` and follow the event to its end (raises on an HTTP refusal)."""
        response = self.join(body)
        response.raise_for_status()
        return self.follow(response.json()["event_id"])

    def follow(self, event_id: str) -> EventResult:
        """Read the session's event stream until ``event_id`` completes (its toasts and outputs)."""
        result = EventResult(event_id)
        for message in self._messages():
            if message.get("event_id") not in (None, event_id):
                continue
            if message.get("msg") in ("heartbeat", "estimation"):
                continue
            result.messages.append(message)
            kind = message.get("msg")
            data = (message.get("output") or {}).get("data")
            if kind == "process_generating" and data is not None:
                if result.streamed:  # after the first update, a generator's outputs come as diffs
                    last = result.streamed[-1]
                    data = [apply_diff(old, new) for old, new in zip(last, data, strict=True)]
                result.streamed.append(list(data))
            elif kind == "process_completed":  # the final outputs, whole
                result.success = bool(message.get("success"))
                result.outputs = list(data) if data is not None else None
                return result
            elif kind in ("unexpected_error", "close_stream"):
                result.success = False
                return result
        return result

    def _messages(self) -> Iterator[dict[str, Any]]:
        url = self.base + API + "/queue/data"
        with self.http.stream("GET", url, params={"session_hash": self.session_hash}) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if line.startswith("data:"):
                    yield json.loads(line[5:].strip())


# -- the arena's battle flow, as the Battle tab's buttons send it --------------------------------------


@dataclass
class Voter:
    """A voter driving the Battle tab over HTTP; ``token`` is what its browser would keep."""

    page: PageClient
    token: str | None = None
    #: the page's voter token (one voter for all tabs), which the browser keeps beside the battle's
    voter: str | None = None

    def accept_terms(self) -> EventResult:
        result = self.page.call("terms-accept", [None, self.token, self.voter])
        assert result.success, result.text()
        if result.outputs:
            self.token, self.voter = result.outputs[1], result.outputs[2]
        return result

    def send(self, prompt: str, files: list[dict[str, Any]] | None = None) -> EventResult:
        """Battle tab Send: images, prompt, state, both chats, example key, chosen pair, the battle
        token and the voter token."""
        data = [files or [], prompt, None, [], [], None, None, None, self.token, self.voter]
        result = self.page.call("battle-send", data)
        for outputs in [*result.streamed, result.outputs or []]:
            # The battle's token and the voter's, handed over with the first update.
            if len(outputs) >= 2 and isinstance(outputs[-2], str) and outputs[-2].startswith("v1."):
                self.token, self.voter = outputs[-2], outputs[-1]
        return result

    def vote(self, button: str = "vote-a") -> EventResult:
        return self.page.call(button, [None, self.token])

    def reason(self, text: str) -> EventResult:
        return self.page.call("vote-reason-send", [text, None, self.token])


# -- what refused requests must not change -----------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    rows: dict[str, int]
    image_files: frozenset[str]


def snapshot(db_url: str, data_dir: Path) -> Snapshot:
    """Row counts of the counted tables and the files under the data folder's image store."""
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = {
                t: int(conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one())
                for t in COUNTED_TABLES
            }
    finally:
        engine.dispose()
    images = data_dir / "images"
    files = (
        frozenset(str(p.relative_to(images)) for p in images.rglob("*") if p.is_file())
        if images.exists()
        else frozenset()
    )
    return Snapshot(rows, files)


def files_under(root: Path) -> set[str]:
    """Every file below ``root`` (relative names), to check that nothing was written outside a folder."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


__all__ = [
    "API",
    "COUNTED_TABLES",
    "EventResult",
    "PageClient",
    "Snapshot",
    "Voter",
    "files_under",
    "snapshot",
]
