"""The fake OpenAI-compatible server speaks the chat-completions streaming protocol and misbehaves on cue."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.models.openai_server import Behaviour, FakeOpenAIServer

TEXT = [{"role": "user", "content": "Describe the picture."}]


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as shared:  # one client: building an SSL context per test is slow
        yield shared


def chat(server: FakeOpenAIServer, messages: list[dict[str, Any]] = TEXT, **extra: Any) -> dict[str, Any]:
    return {"model": server.model, "messages": messages, "stream": True, **extra}


def stream(client: httpx.Client, server: FakeOpenAIServer, **extra: Any) -> tuple[list[Any], bool]:
    """The decoded events of one streamed request (raw strings where not JSON) and whether [DONE] came."""
    events: list[Any] = []
    with client.stream("POST", f"{server.base_url}/chat/completions", json=chat(server, **extra)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: ") :]
            if data == "[DONE]":
                return events, True
            try:
                events.append(json.loads(data))
            except ValueError:
                events.append(data)
    return events, False


def content(events: list[Any]) -> str:
    return "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])


def test_stream_concatenates_to_the_reply_and_ends_with_done(
    client: httpx.Client, server: FakeOpenAIServer
) -> None:
    server.behaviour = Behaviour(chunk_size=2)
    events, done = stream(client, server)
    assert done and content(events) == server.behaviour.reply
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert all(e["object"] == "chat.completion.chunk" and e["model"] == "fake-vlm" for e in events)
    assert all("usage" not in e for e in events)
    assert server.wait_completed(1, timeout=10) and server.requests[0]["body"]["stream"] is True
    assert server.requests[0]["path"] == "/v1/chat/completions"


def test_usage_chunk_when_asked(client: httpx.Client, server: FakeOpenAIServer) -> None:
    events, done = stream(client, server, stream_options={"include_usage": True})
    words = len(server.behaviour.reply.split())
    assert done and events[-1]["choices"] == []
    assert events[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": words, "total_tokens": 3 + words}


def test_max_tokens_cuts_the_reply_with_finish_reason_length(
    client: httpx.Client, server: FakeOpenAIServer
) -> None:
    events, done = stream(client, server, max_tokens=3)
    assert done and content(events) == "The image shows "
    assert events[-1]["choices"][0]["finish_reason"] == "length"


def test_status_and_fail_first_answer_json_errors(client: httpx.Client, server: FakeOpenAIServer) -> None:
    url = f"{server.base_url}/chat/completions"
    server.behaviour = Behaviour(status=500)
    response = client.post(url, json=chat(server))
    assert response.status_code == 500 and response.json()["error"]["type"] == "server_error"

    server.behaviour = Behaviour(fail_first=2)
    statuses = [client.post(url, json=chat(server, stream=False)).status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert client.post(url, json=chat(server, stream=False)).json()["choices"][0]["message"] == {
        "role": "assistant",
        "content": server.behaviour.reply,
    }
    assert client.post(url, json={**chat(server), "model": "nope"}).status_code == 404


def test_api_key_is_checked(client: httpx.Client) -> None:
    with FakeOpenAIServer(api_key="sk-test") as server:
        url = f"{server.base_url}/chat/completions"
        assert client.post(url, json=chat(server, stream=False)).status_code == 401
        ok = client.post(url, json=chat(server, stream=False), headers={"Authorization": "Bearer sk-test"})
        assert ok.status_code == 200 and server.requests[-1]["headers"]["authorization"] == "Bearer sk-test"


def test_drop_after_ends_without_done(client: httpx.Client, server: FakeOpenAIServer) -> None:
    server.behaviour = Behaviour(drop_after=2)
    events, done = stream(client, server)
    assert not done and content(events) == "The image "
    assert all(e["choices"][0]["finish_reason"] is None for e in events)


def test_malformed_chunk_is_sent(client: httpx.Client, server: FakeOpenAIServer) -> None:
    server.behaviour = Behaviour(malformed_after=1)
    events, done = stream(client, server)
    assert done and events[-1] == '{"id": "x", "choices": ['
    assert content(events[:-1]) == "The "


def test_images_decode_png_data_uris(client: httpx.Client, server: FakeOpenAIServer) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), "red").save(buffer, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    parts = [{"type": "text", "text": "What is it?"}, {"type": "image_url", "image_url": {"url": uri}}]
    _, done = stream(client, server, messages=[{"role": "user", "content": parts}])
    (image,) = server.images()
    assert done and image.size == (4, 3) and image.getpixel((0, 0)) == (255, 0, 0)

    parts[1] = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    stream(client, server, messages=[{"role": "user", "content": parts}])
    with pytest.raises(AssertionError, match="not a data:image"):
        server.images()


@pytest.mark.parametrize(
    "behaviour", [Behaviour(hang=True), Behaviour(chunk_delay_s=60)], ids=["hang", "between-chunks"]
)
def test_client_closing_mid_stream_is_counted(
    client: httpx.Client, server: FakeOpenAIServer, behaviour: Behaviour
) -> None:
    """The server notices the client leaving while it waits (30 s hang, 60 s pause), not after."""
    server.behaviour = behaviour
    with client.stream("POST", f"{server.base_url}/chat/completions", json=chat(server)) as response:
        assert response.status_code == 200
        if not behaviour.hang:
            next(response.iter_lines())  # the role chunk has arrived; the server now sleeps
    assert server.wait_disconnect(10), "the server did not notice the client leaving"
    assert server.disconnects == 1 and server.completed == 0


def test_models_endpoint_and_health(client: httpx.Client, server: FakeOpenAIServer) -> None:
    listing = client.get(f"{server.base_url}/models")
    assert listing.status_code == 200 and listing.json()["data"][0]["id"] == "fake-vlm"
    server.behaviour = Behaviour(models_status=503)
    unhealthy = client.get(f"{server.base_url}/models")
    assert unhealthy.status_code == 503 and "error" in unhealthy.json()
    assert client.get(f"{server.base_url}/nothing").status_code == 404
