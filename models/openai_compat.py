"""Any server that speaks the OpenAI chat-completions API: vLLM, SGLang, TGI, LMDeploy, hosted APIs.

Roster ``params`` are :class:`models.params.OpenAIParams`. A request is ``POST {base_url}/chat/completions``
with ``stream: true``; the answer arrives as server-sent events (``chat.completion.chunk`` objects,
then ``data: [DONE]``), optionally with a final usage chunk. Images are scaled down to
``max_image_side`` and sent inline as base64 data URIs, so the server never fetches anything.

Failures map onto the structured errors of :mod:`models.base`:

* connection refused or timed out, HTTP 429 or 5xx → :class:`BackendUnavailable` (retried by the
  wrapper while no text has been shown);
* HTTP 400/413/422 → :class:`InputRejected` (the request itself is the problem);
* other HTTP errors (401, 403, 404: configuration) → :class:`BackendError`;
* a stream that stops without a finish reason or ``[DONE]`` → :class:`StreamInterrupted`;
* a chunk that is not valid JSON, or an error event inside the stream → :class:`ProtocolViolation`.

Closing the stream (a cancelled battle, a time limit) closes the HTTP connection, which is how
OpenAI-compatible servers learn to stop generating.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Any

import httpx
from PIL import Image

from models.base import (
    BackendError,
    BackendUnavailable,
    GenerationParams,
    ImagePart,
    InputRejected,
    Message,
    ModelBackend,
    ProtocolViolation,
    StreamInterrupted,
    StreamItem,
    Usage,
    check_image_limit,
)
from models.params import OpenAIParams, parse_params

if TYPE_CHECKING:
    from models.registry import BackendContext
    from models.roster import ModelSpec

_INPUT_STATUSES = frozenset({400, 413, 422})
_RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})
_MAX_ERROR_BODY = 500


def encode_image(image: Image.Image, *, max_side: int, fmt: str = "jpeg", quality: int = 90) -> str:
    """A data URI for ``image``, scaled down (never up) so its longer side is at most ``max_side``."""
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if fmt == "jpeg":
        image.convert("RGB").save(buffer, format="JPEG", quality=quality)
        mime = "image/jpeg"
    else:
        image.save(buffer, format="PNG")
        mime = "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


class OpenAIBackend(ModelBackend):
    """Streams chat completions from an OpenAI-compatible server."""

    def __init__(self, name: str, params: OpenAIParams, *, max_images: int = 4) -> None:
        self.name = name
        self.params = params
        self.model = params.model or name
        self.max_images = max_images
        self.url = f"{params.base_url}/chat/completions"
        self.headers = {"Accept": "text/event-stream", **params.headers}
        if params.api_key_env:
            key = os.environ.get(params.api_key_env, "")
            if not key:
                raise BackendError(
                    f"model {name!r}: the API key variable {params.api_key_env} is not set in the environment"
                )
            self.headers["Authorization"] = f"Bearer {key}"
        self.timeout = httpx.Timeout(
            connect=params.connect_timeout_s, read=None, write=params.connect_timeout_s, pool=None
        )
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    # -- request ---------------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        """The connection pool of the running event loop (an httpx client cannot move between loops)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            limits = httpx.Limits(
                max_connections=self.params.max_connections,
                max_keepalive_connections=self.params.max_connections,
            )
            self._client = httpx.AsyncClient(timeout=self.timeout, limits=limits, headers=self.headers)
            self._client_loop = loop
        return self._client

    def _messages(self, messages: Sequence[Message]) -> list[dict[str, Any]]:
        """The conversation in the OpenAI chat format, images as data URIs."""
        out: list[dict[str, Any]] = []
        for message in messages:
            if not message.images:
                out.append({"role": message.role, "content": message.text})
                continue
            content: list[dict[str, Any]] = []
            for part in message.parts:
                if isinstance(part, ImagePart):
                    url = encode_image(
                        part.image,
                        max_side=self.params.max_image_side,
                        fmt=self.params.image_format,
                        quality=self.params.jpeg_quality,
                    )
                    content.append({"type": "image_url", "image_url": {"url": url}})
                else:
                    content.append({"type": "text", "text": part.text})
            out.append({"role": message.role, "content": content})
        return out

    def request_body(self, messages: Sequence[Message], params: GenerationParams) -> dict[str, Any]:
        """The JSON body of one streamed chat-completions request."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self._messages(messages),
            "stream": True,
            self.params.max_tokens_field: params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if self.params.include_usage:
            body["stream_options"] = {"include_usage": True}
        body.update(self.params.extra_body)
        body.update(params.extra)
        return body

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncGenerator[StreamItem, None]:
        """Yield the server's answer as it streams, then a :class:`Usage` if the server sent counts."""
        check_image_limit(self.name, messages, self.max_images)
        if any(message.images for message in messages):
            # Scaling and encoding pictures takes milliseconds per image: keep it off the event loop.
            body = await asyncio.to_thread(self.request_body, messages, params)
        else:
            body = self.request_body(messages, params)
        client = self._http()
        try:
            async with client.stream("POST", self.url, json=body) as response:
                if response.status_code != 200:
                    raise await self._status_error(response)
                # Text is yielded once per network read, however many events the read held: at a
                # model's pace that is one event (no added latency); when the client falls behind it
                # catches up in one step instead of paying per-token overhead in every layer above.
                reader = _EventReader(self.name)
                async for block in response.aiter_bytes():
                    try:
                        reader.feed(block)
                    finally:
                        text = reader.take_text()
                        if text:
                            yield text  # text parsed before a malformed event still reaches the voter
                    if reader.done:
                        break
                reader.close()
                yield Usage(
                    input_tokens=_count(reader.usage.get("prompt_tokens")),
                    output_tokens=_count(reader.usage.get("completion_tokens")),
                    finish_reason=reader.finish_reason or "stop",
                )
        except httpx.TimeoutException as exc:
            raise BackendUnavailable(f"model {self.name!r}: cannot connect to {self.url}: {exc!r}") from exc
        except httpx.ConnectError as exc:
            raise BackendUnavailable(f"model {self.name!r}: cannot connect to {self.url}: {exc}") from exc
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise StreamInterrupted(f"model {self.name!r}: connection lost mid-answer: {exc!r}") from exc
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"model {self.name!r}: HTTP failure: {exc!r}") from exc

    async def _status_error(self, response: httpx.Response) -> BackendError:
        """The structured error for a non-200 answer, with the server's own message."""
        body = (await response.aread())[:_MAX_ERROR_BODY].decode("utf-8", "replace")
        status = response.status_code
        message = f"model {self.name!r}: HTTP {status} from {self.url}: {_error_message(body)}"
        if status in _INPUT_STATUSES:
            return InputRejected(message)
        if status in _RETRYABLE_STATUSES or status >= 500:
            return BackendUnavailable(message)
        return BackendError(message)

    # -- health and lifecycle --------------------------------------------------------------------

    async def check(self) -> None:
        """``GET {base_url}/models`` answers 200 (skipped with ``health_check: none``)."""
        if self.params.health_check == "none":
            return
        url = f"{self.params.base_url}/models"
        timeout = httpx.Timeout(self.params.connect_timeout_s)
        # A client of its own: checks run in the health monitor's thread and event loop.
        async with httpx.AsyncClient(timeout=timeout, headers=self.headers) as client:
            try:
                response = await client.get(url)
            except httpx.HTTPError as exc:
                raise BackendUnavailable(f"model {self.name!r}: {url} unreachable: {exc!r}") from exc
        if response.status_code != 200:
            raise BackendUnavailable(
                f"model {self.name!r}: {url} answered HTTP {response.status_code}: "
                f"{_error_message(response.text[:_MAX_ERROR_BODY])}"
            )

    async def aclose(self) -> None:
        """Close the connection pool if it belongs to the running loop (else it is left to the GC)."""
        client, self._client = self._client, None
        if client is not None and self._client_loop is asyncio.get_running_loop():
            await client.aclose()


class _EventReader:
    """Parses the server-sent events of one chat-completions stream from raw byte blocks."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] = {}
        self.done = False
        self._pending = b""
        self._texts: list[str] = []

    def feed(self, block: bytes) -> None:
        """Consume a block of the body; complete lines are parsed, a partial last line waits."""
        *lines, self._pending = (self._pending + block).split(b"\n")
        for line in lines:
            self._line(line)
            if self.done:
                return

    def take_text(self) -> str:
        """The answer text parsed since the last call."""
        text = "".join(self._texts)
        self._texts.clear()
        return text

    def close(self) -> None:
        """The body has ended: parse a last unterminated line, then check the answer finished."""
        if self._pending and not self.done:
            self._line(self._pending)
            self._pending = b""
        if not self.done and self.finish_reason is None:
            raise StreamInterrupted(f"model {self.name!r}: the stream ended before the answer finished")

    def _line(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return  # blank separators, comments (": keep-alive"), "event:" lines
        data = line[5:].strip()
        if data == b"[DONE]":
            self.done = True
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            shown = data[:_MAX_ERROR_BODY].decode("utf-8", "replace")
            raise ProtocolViolation(f"model {self.name!r}: malformed stream chunk: {shown!r}") from None
        if not isinstance(chunk, dict):
            raise ProtocolViolation(f"model {self.name!r}: stream chunk is not an object: {data[:200]!r}")
        if "error" in chunk:
            raise ProtocolViolation(f"model {self.name!r}: error inside the stream: {chunk['error']!r}")
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            text = (choice.get("delta") or {}).get("content")
            if text:
                self._texts.append(text)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and value >= 0 else None


def _error_message(body: str) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the body itself."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return body.strip() or "(empty body)"
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return body.strip()


def create(spec: ModelSpec, context: BackendContext) -> OpenAIBackend:
    """Registry factory: a client for the roster entry's OpenAI-compatible server."""
    return OpenAIBackend(
        spec.name, parse_params(OpenAIParams, spec.name, spec.params), max_images=spec.max_images
    )
