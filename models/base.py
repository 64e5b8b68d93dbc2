"""Message types and the one streaming interface every model backend implements.

Messages follow the OpenAI chat shape: a role and an ordered list of parts, each part text or an
image. Images travel as PIL images inside the process; backends convert them to what their
transport needs (pixel tensors for transformers, base64 data URIs for OpenAI-compatible servers).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from PIL import Image

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    image: Image.Image


Part = TextPart | ImagePart


@dataclass(frozen=True)
class Message:
    role: Role
    parts: tuple[Part, ...]

    @classmethod
    def user(cls, text: str, images: Sequence[Image.Image] = ()) -> Message:
        """A user turn: the images first, then the text (the order most VLM chat templates expect)."""
        return cls("user", tuple(ImagePart(i) for i in images) + (TextPart(text),))

    @classmethod
    def assistant(cls, text: str) -> Message:
        return cls("assistant", (TextPart(text),))

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def images(self) -> list[Image.Image]:
        return [p.image for p in self.parts if isinstance(p, ImagePart)]


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings for one request; the roster supplies per-model defaults."""

    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int | None = None
    extra: dict[str, object] = field(default_factory=dict)


class BackendError(RuntimeError):
    """A model could not answer. The message is for operators' logs, never for voters."""


class ModelBackend(ABC):
    """One loaded or connected model that streams text for a conversation."""

    #: The roster name of the model this backend serves.
    name: str

    @abstractmethod
    def stream(self, messages: Sequence[Message], params: GenerationParams) -> AsyncIterator[str]:
        """Yield the answer to ``messages`` as successive text deltas (concatenated, they form the answer).

        Implementations are async generators. Cancelling the consuming task must stop generation.
        Failures raise :class:`BackendError`.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections, threads or GPU memory."""
