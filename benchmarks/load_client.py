"""Simulated voters that speak the arena page's own HTTP protocol (asyncio + httpx), as Chromium does.

What a browser sends, captured with Playwright against a running arena (``benchmarks/load_capture.py``):

* ``GET /`` — the page (its config is also at ``GET /config``, which this client reads once to find
  the events by the ``elem_id`` of the component that triggers them, never by hard-coded numbers);
* ``POST /gradio_api/queue/join`` with ``{"data": [...], "event_data": null, "fn_index": N,
  "trigger_id": T, "session_hash": S}`` — one per event (page load, terms-accept, Send, vote, New round);
  ``gr.State`` inputs travel as ``null`` (the server keeps them per session), the battle token
  (``gr.BrowserState``) as the value the page stored from an earlier output;
* ``GET /gradio_api/queue/data?session_hash=S`` — the event's server-sent stream until
  ``process_completed`` (streamed outputs arrive as diffs against the previous values);
* ``POST /gradio_api/upload?upload_id=U`` (multipart ``files``) — the images, before Send, whose
  answer (server paths) the Send event then carries as ``FileData``.

The events stay private (``api_visibility="private"``): the page's own way of calling them works.
A failed request is counted, then the voter "reloads the page" (new session, page-load event with
its battle token, terms if asked) and starts a new battle with New round, as a person would.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from PIL import Image, ImageDraw

PLACEHOLDER = "…"  # what an answer shows before its first token
PROMPT = "What shapes and colours are in this picture?"
VOTE_BUTTONS = ("vote-a", "vote-b", "vote-tie", "vote-bothbad")
TOKEN_STORAGE_KEY = "vlm-arena-anony"
#: The stream messages read after the first token: the end of the event, of the stream, or an error.
ENDINGS = ('data: {"msg":"process_completed"', 'data: {"msg":"close_stream"', 'data: {"msg":"unexpected')


class VoterError(Exception):
    """A failure the voter saw: ``phase`` (upload, send, vote, …) and a short ``kind``."""

    def __init__(self, phase: str, kind: str, battle_id: str | None = None) -> None:
        super().__init__(f"{phase}: {kind}")
        self.phase, self.kind, self.battle_id = phase, kind, battle_id


@dataclass(frozen=True)
class Event:
    """One event of the page: what to send to join it and where its outputs are."""

    fn_index: int
    trigger_id: int
    inputs: tuple[dict[str, Any], ...]
    outputs: tuple[dict[str, Any], ...]

    def output(self, elem_id: str | None = None, kind: str | None = None) -> int:
        """Position of the output with this elem_id (or the first of this component type)."""
        for index, component in enumerate(self.outputs):
            props = component.get("props", {})
            if elem_id is not None and props.get("elem_id") == elem_id:
                return index
            if kind is not None and component.get("type") == kind and _is_battle_token(component):
                return index
        raise KeyError(f"fn {self.fn_index} has no output {elem_id or kind}")

    def data(
        self, *, token: str | None, files: list[dict[str, Any]] | None = None, prompt: str = ""
    ) -> list[Any]:
        """The ``data`` list a browser sends: each input by its component type."""
        values: list[Any] = []
        for component in self.inputs:
            kind = component.get("type")
            if _is_battle_token(component):
                values.append(token)
            elif kind == "file":
                values.append(files)
            elif kind == "textbox":
                values.append(prompt)
            elif kind == "chatbot":
                values.append([])
            else:  # gr.State and the rest: the page sends null
                values.append(None)
        return values


def _is_battle_token(component: dict[str, Any]) -> bool:
    return (
        component.get("type") == "browserstate"
        and component.get("props", {}).get("storage_key") == TOKEN_STORAGE_KEY
    )


@dataclass(frozen=True)
class PageLayout:
    """The Battle tab's events, found in the page config by the elem_ids of the stable page contract."""

    load: Event
    accept: Event
    send: Event
    votes: dict[str, Event]
    new_round: Event

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PageLayout:
        components = {c["id"]: c for c in config["components"]}

        def event(dependency: dict[str, Any], trigger_id: int) -> Event:
            return Event(
                fn_index=dependency["id"],
                trigger_id=trigger_id,
                inputs=tuple(components[i] for i in dependency["inputs"]),
                outputs=tuple(components[i] for i in dependency["outputs"]),
            )

        def triggered_by(elem_id: str, trigger: str = "click") -> Event:
            for dependency in config["dependencies"]:
                for target_id, name in dependency["targets"]:
                    target = components.get(target_id, {})
                    if name == trigger and target.get("props", {}).get("elem_id") == elem_id:
                        return event(dependency, target_id)
            raise KeyError(f"no {trigger} event on #{elem_id} in the page config")

        def page_load() -> Event:
            for dependency in config["dependencies"]:
                for target_id, name in dependency["targets"]:
                    inputs = [components[i] for i in dependency["inputs"]]
                    if name == "load" and any(_is_battle_token(component) for component in inputs):
                        return event(dependency, target_id)
            raise KeyError("no page-load event taking the Battle tab's token")

        return cls(
            load=page_load(),
            accept=triggered_by("terms-accept"),
            send=triggered_by("battle-send"),
            votes={button: triggered_by(button) for button in VOTE_BUTTONS},
            new_round=triggered_by("battle-new-round"),
        )


def battle_of(token: str | None) -> str | None:
    """The battle id a token names (its claims are signed, not secret)."""
    if not token or token.count(".") != 2:
        return None
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, json.JSONDecodeError):
        return None
    battle = claims.get("b") if isinstance(claims, dict) else None
    return battle if isinstance(battle, str) else None


def _apply(value: Any, ops: list[list[Any]]) -> Any:
    """Apply one output's streamed diff (Gradio's replace/append/add/delete operations)."""
    for action, path, new in ops:
        if not path:
            value = new if action == "replace" else value + new
            continue
        parent = value
        for key in path[:-1]:
            parent = parent[key]
        last = path[-1]
        if action == "replace":
            parent[last] = new
        elif action == "append":
            parent[last] += new
        elif action == "add":
            if isinstance(parent, list):
                parent.insert(int(last), new)
            else:
                parent[last] = new
        elif action == "delete":
            del parent[int(last) if isinstance(parent, list) else last]
    return value


def answer_text(history: Any) -> str:
    """The text of a chat's last assistant message ('' when there is none)."""
    if not isinstance(history, list) or not history:
        return ""
    last = history[-1]
    if not isinstance(last, dict) or last.get("role") != "assistant":
        return ""
    content = last.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def make_images(count: int, seed: int = 0) -> list[bytes]:
    """Distinct small PNG pictures (random rectangles, 320x240) for the voters to upload."""
    rng = random.Random(seed)
    pictures = []
    for _ in range(count):
        image = Image.new("RGB", (320, 240), "white")
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x, y = rng.randrange(280), rng.randrange(200)
            colour = tuple(rng.randrange(256) for _ in range(3))
            draw.rectangle((x, y, x + rng.randrange(10, 60), y + rng.randrange(10, 60)), fill=colour)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        pictures.append(buffer.getvalue())
    return pictures


@dataclass
class StageStats:
    """What the voters of one stage saw."""

    first_token_s: list[float] = field(default_factory=list)  # Send click -> first answer token
    vote_s: list[float] = field(default_factory=list)  # vote click -> reveal
    completed_at: list[float] = field(default_factory=list)  # monotonic time of each acknowledged vote
    battles_started: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    error_times: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, error)
    acknowledged: set[str] = field(default_factory=set)  # battle ids whose reveal came back
    vote_failed: set[str] = field(default_factory=set)  # battle ids whose vote request failed
    reloads: int = 0

    def error(self, exc: VoterError) -> None:
        key = f"{exc.phase}: {exc.kind}"
        self.errors[key] += 1
        self.error_times.append((time.monotonic(), key))


@dataclass
class Voter:
    """One simulated browser tab doing battles in a loop until ``deadline`` (monotonic seconds)."""

    base: str
    layout: PageLayout
    images: list[bytes]
    stats: StageStats
    deadline: float
    think_s: float = 1.0
    timeout_s: float = 60.0  # per HTTP read
    event_timeout_s: float = 120.0  # a whole event, join to completion (a person gives up)
    rng: random.Random = field(default_factory=random.Random)
    token: str | None = None
    session: str = ""
    on_battle: Callable[[], None] | None = None

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.base, timeout=self.timeout_s) as client:
            opened = False
            while time.monotonic() < self.deadline:
                try:
                    if not opened:
                        await self.open_page(client)
                        opened = True
                    await self.battle(client)
                except VoterError as exc:
                    self.stats.error(exc)
                    if exc.phase == "vote" and exc.battle_id:
                        self.stats.vote_failed.add(exc.battle_id)
                    opened = False  # the person reloads the page
                    self.stats.reloads += 1
                    await asyncio.sleep(min(1.0, max(0.0, self.deadline - time.monotonic())))

    async def open_page(self, client: httpx.AsyncClient) -> None:
        """A page (re)load: the page, its load event with the stored token, the terms if shown, and
        New round when a battle was taken up (the voter starts afresh)."""
        self.session = secrets.token_hex(6)
        try:
            response = await client.get("/")
        except httpx.HTTPError as exc:
            raise VoterError("page", type(exc).__name__) from exc
        if response.status_code != 200:
            raise VoterError("page", f"HTTP {response.status_code}")
        outputs = await self.event(client, "load", self.layout.load, self.layout.load.data(token=self.token))
        self._keep_token(outputs, self.layout.load)
        panel = outputs[self.layout.load.output("terms-panel")]
        if isinstance(panel, dict) and panel.get("visible"):
            outputs = await self.event(
                client, "terms", self.layout.accept, self.layout.accept.data(token=self.token)
            )
            self._keep_token(outputs, self.layout.accept)
        if battle_of(self.token) is not None:
            outputs = await self.event(
                client, "new round", self.layout.new_round, self.layout.new_round.data(token=self.token)
            )
            self._keep_token(outputs, self.layout.new_round)

    async def battle(self, client: httpx.AsyncClient) -> None:
        """Upload, Send (both answers streamed to the end), vote, reveal, New round."""
        uploaded = await self.upload(client)
        send = self.layout.send
        self.stats.battles_started += 1
        chats = (send.output("battle-answer-a"), send.output("battle-answer-b"))
        token_at = send.output(kind="browserstate")
        clicked = time.monotonic()
        first: list[float] = []

        def watch(values: list[Any]) -> bool:
            """Keep the token the stream hands over; note the first token; False once both are done."""
            token = values[token_at]
            if isinstance(token, str):
                self.token = token
            if not first and any(answer_text(values[i]) not in ("", PLACEHOLDER) for i in chats):
                first.append(time.monotonic() - clicked)
            return not first

        outputs = await self.event(
            client, "send", send, send.data(token=self.token, files=uploaded, prompt=PROMPT), watch
        )
        battle = battle_of(self.token)
        vote_button = outputs[send.output(VOTE_BUTTONS[0])]
        if not (isinstance(vote_button, dict) and vote_button.get("interactive")):
            status = outputs[send.output("battle-status")]
            raise VoterError("send", f"no vote offered: {str(status)[:80]}", battle)
        if first:
            self.stats.first_token_s.append(first[0])
        await asyncio.sleep(self.think_s)

        vote = self.layout.votes[self.rng.choice(VOTE_BUTTONS)]
        clicked = time.monotonic()
        outputs = await self.event(client, "vote", vote, vote.data(token=self.token), battle_id=battle)
        name_a = outputs[vote.output("battle-name-a")]
        if not (isinstance(name_a, str) and name_a.startswith("Model A:")):
            status = outputs[vote.output("battle-status")]
            raise VoterError("vote", f"not revealed: {str(status)[:80]}", battle)
        self.stats.vote_s.append(time.monotonic() - clicked)
        if battle is not None:
            self.stats.acknowledged.add(battle)
        self.stats.completed_at.append(time.monotonic())
        if self.on_battle is not None:
            self.on_battle()
        await asyncio.sleep(self.think_s)

        new_round = self.layout.new_round
        outputs = await self.event(client, "new round", new_round, new_round.data(token=self.token))
        self._keep_token(outputs, new_round)

    async def upload(self, client: httpx.AsyncClient) -> list[dict[str, Any]]:
        picture = self.rng.choice(self.images)
        name = f"photo-{secrets.token_hex(3)}.png"
        try:
            response = await client.post(
                "/gradio_api/upload",
                params={"upload_id": secrets.token_hex(6)},
                files=[("files", (name, picture, "image/png"))],
            )
        except httpx.HTTPError as exc:
            raise VoterError("upload", type(exc).__name__) from exc
        if response.status_code != 200:
            raise VoterError("upload", f"HTTP {response.status_code}")
        return [
            {"path": path, "orig_name": name, "size": len(picture), "mime_type": "image/png",
             "meta": {"_type": "gradio.FileData"}}
            for path in response.json()
        ]  # fmt: skip

    def _keep_token(self, outputs: list[Any], event: Event) -> None:
        token = outputs[event.output(kind="browserstate")]
        if isinstance(token, str):
            self.token = token

    async def event(
        self,
        client: httpx.AsyncClient,
        phase: str,
        event: Event,
        data: list[Any],
        watch: Callable[[list[Any]], bool] | None = None,
        battle_id: str | None = None,
    ) -> list[Any]:
        """Join one event and read the session's stream until it completes; its final outputs."""
        body = {
            "data": data, "event_data": None, "fn_index": event.fn_index,
            "trigger_id": event.trigger_id, "session_hash": self.session,
        }  # fmt: skip
        try:
            joined = await client.post(
                "/gradio_api/queue/join",
                content=json.dumps(body, separators=(",", ":")),
                headers={"content-type": "application/json", "x-gradio-user": "app"},
            )
            if joined.status_code != 200:
                raise VoterError(phase, f"join HTTP {joined.status_code}", battle_id)
            event_id = joined.json()["event_id"]
            return await self._read(client, phase, event_id, watch, battle_id)
        except httpx.HTTPError as exc:
            raise VoterError(phase, type(exc).__name__, battle_id) from exc

    async def _read(
        self,
        client: httpx.AsyncClient,
        phase: str,
        event_id: str,
        watch: Callable[[list[Any]], bool] | None,
        battle_id: str | None,
    ) -> list[Any]:
        """Read the session's stream as the page does: until ``close_stream`` after the event's
        ``process_completed``. (Hanging up earlier makes Gradio clean up the session's events, which
        can take the voter's next event with them.) Gives up after ``event_timeout_s``."""
        try:
            async with asyncio.timeout(self.event_timeout_s):
                return await self._read_stream(client, phase, event_id, watch, battle_id)
        except TimeoutError:
            raise VoterError(phase, f"no completion within {self.event_timeout_s:.0f} s", battle_id) from None

    async def _read_stream(
        self,
        client: httpx.AsyncClient,
        phase: str,
        event_id: str,
        watch: Callable[[list[Any]], bool] | None,
        battle_id: str | None,
    ) -> list[Any]:
        values: list[Any] | None = None
        outputs: list[Any] | None = None
        watching = watch is not None
        async with client.stream(
            "GET", "/gradio_api/queue/data", params={"session_hash": self.session},
            headers={"accept": "text/event-stream"},
        ) as stream:  # fmt: skip
            if stream.status_code != 200:
                raise VoterError(phase, f"stream HTTP {stream.status_code}", battle_id)
            async for line in stream.aiter_lines():
                # Once the first token is seen, only the end is parsed (the client stays cheap).
                if not line.startswith(ENDINGS if not watching else "data: "):
                    continue
                message = json.loads(line[6:])
                kind = message.get("msg")
                if kind == "unexpected_error":
                    raise VoterError(phase, f"unexpected_error {str(message.get('message'))[:60]}", battle_id)
                if kind == "close_stream":
                    break
                if message.get("event_id") != event_id:
                    continue
                if kind == "process_generating" and watch is not None and watching:
                    output = message["output"]["data"]
                    if values is None:  # the first message carries whole values, the next ones diffs
                        values = output
                    else:
                        values = [_apply(value, ops) for value, ops in zip(values, output, strict=True)]
                    watching = watch(values)
                elif kind == "process_completed":
                    if not message.get("success"):
                        detail = message.get("title") or message.get("output", {}).get("error")
                        raise VoterError(phase, f"failed {str(detail)[:60]}", battle_id)
                    outputs = message["output"]["data"]
                    if watch is not None:
                        watch(outputs)
                    watching = False
        if outputs is None:
            raise VoterError(phase, "stream ended before completion", battle_id)
        return outputs
