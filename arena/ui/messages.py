"""Chat messages as Gradio's Chatbot takes them, for every tab that shows a conversation."""

from __future__ import annotations

from typing import Any


def chat_message(role: str, text: str, image_paths: list[str] | None = None) -> dict[str, Any]:
    """One chat message in Gradio's messages format (the images first, then the text)."""
    content: list[Any] = [{"path": p} for p in image_paths or []]
    content.append(text)
    return {"role": role, "content": content if len(content) > 1 else text}
