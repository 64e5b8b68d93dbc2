"""Message types and the one streaming interface every model backend implements.

Messages follow the OpenAI chat shape: a role and an ordered list of parts, each part text or an
image. Images travel as PIL images inside the process; backends convert them to what their
transport needs (pixel tensors for transformers, base64 data URIs for OpenAI-compatible servers).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Sequence
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


@dataclass(frozen=True)
class Usage:
    """What a backend may yield as the last item of a stream: token counts and why it stopped.

    ``finish_reason`` uses the OpenAI vocabulary: ``"stop"`` (the model ended its answer) or
    ``"length"`` (it hit ``max_new_tokens``). Counts are None where the backend cannot tell.
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None


#: What :meth:`ModelBackend.stream` yields: text deltas, optionally followed by one :class:`Usage`.
StreamItem = str | Usage


class BackendError(RuntimeError):
    """A model could not answer. The message is for operators' logs, never for voters.

    Subclasses say what kind of failure it was; ``retryable`` marks failures where asking again (before
    any text was shown) may succeed, and ``kind`` is a short machine-readable label for logs and the
    database.
    """

    retryable: bool = False
    kind: str = "error"
    #: Whether the failure says something about the model's health (bad input does not).
    counts_against_health: bool = True


class InputRejected(BackendError):
    """The request itself cannot be served (too many images, prompt too long, a 4xx about the input)."""

    kind = "input_rejected"
    counts_against_health = False


class BackendUnavailable(BackendError):
    """The model could not be reached or is overloaded (connection refused, HTTP 5xx/429, queue full)."""

    kind = "unavailable"
    retryable = True


class BackendTimeout(BackendError):
    """No first token, or no complete answer, within the model's time limit."""

    kind = "timeout"

    def __init__(self, message: str, *, phase: Literal["first_token", "total"]) -> None:
        super().__init__(message)
        self.phase = phase
        # A first token that never came can be asked for again; a half-streamed answer cannot.
        self.retryable = phase == "first_token"


class StreamInterrupted(BackendError):
    """The stream ended before the model finished (connection dropped mid-answer)."""

    kind = "interrupted"
    retryable = True


class ProtocolViolation(BackendError):
    """The model server sent something the protocol does not allow (malformed or unexpected data)."""

    kind = "protocol"


def check_image_limit(name: str, messages: Sequence[Message], max_images: int | None) -> None:
    """Raise :class:`InputRejected` if a message carries more images than the model accepts."""
    if max_images is None:
        return
    for message in messages:
        if len(message.images) > max_images:
            raise InputRejected(
                f"model {name!r} accepts at most {max_images} image(s) per message, got {len(message.images)}"
            )


class ModelBackend(ABC):
    """One loaded or connected model that streams text for a conversation."""

    #: The roster name of the model this backend serves.
    name: str

    @abstractmethod
    def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncGenerator[StreamItem, None]:
        """Yield the answer to ``messages`` as successive text deltas (concatenated, they form the answer).

        A backend that knows token counts yields one :class:`Usage` after the last delta. Implementations
        are async generators; closing the generator or cancelling the consuming task must stop
        generation (and any upstream request). Failures raise :class:`BackendError` subclasses.
        Callers normally go through :class:`models.wrapper.ManagedBackend`, which adds timeouts,
        retries and accounting.
        """

    async def check(self) -> None:  # noqa: B027 - optional hook
        """Raise :class:`BackendError` if the model cannot serve requests now (used by health checks)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections, threads or GPU memory."""
