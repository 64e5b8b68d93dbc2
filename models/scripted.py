"""A deterministic fake model for tests, demos without weights and load benchmarks.

Roster ``params`` (all optional):

``reply``
    A fixed answer; ``{prompt}`` and ``{n_images}`` are replaced by the last user text and the number of
    images in the conversation. Without it (and without a matching ``replies`` entry), the answer is a sentence drawn from a fixed word list by a
    hash of (model name, whole conversation, number of images, seed), so two scripted models answer the
    same prompt differently and the same model always answers it the same way.
``replies``
    A mapping of regular expression to answer, for tests that need a known answer per prompt: the first
    pattern (in the mapping's order) that ``re.search`` finds in the last user text picks its answer
    (with the same ``{prompt}``/``{n_images}`` replacements); no match falls back to ``reply``.
``chunk_words``
    Words per streamed delta (default 1).
``delay_s`` / ``first_token_delay_s``
    Seconds to sleep between deltas / before the first one (default 0).
``fail_after``
    Raise :class:`BackendError` after this many deltas, or after the whole answer if it is shorter
    (for failure tests).

The answer never contains the model's name or display name, so battles stay anonymous.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from models.base import (
    BackendError,
    GenerationParams,
    Message,
    ModelBackend,
    StreamItem,
    TextPart,
    Usage,
    check_image_limit,
)
from models.params import ScriptedParams, parse_params

if TYPE_CHECKING:
    from models.registry import BackendContext
    from models.roster import ModelSpec

_WORD_LIST = """
the a image shows picture scene small large red blue green yellow bright dark wooden stone table
window street river mountain tree cup plate chair dog cat bird person child boat car bicycle sign
near behind beside above under left right corner center background foreground light shadow morning
evening quiet busy clearly perhaps likely appears seems holds stands sits looks toward across with
and of in on two three several many one text reads chart value higher lower between answer because
detail colour shape edge
"""

#: The vocabulary of default answers.
WORDS = tuple(_WORD_LIST.split())

_MIN_WORDS, _MAX_WORDS = 12, 40


def _conversation_text(messages: Sequence[Message]) -> str:
    """The whole conversation as one string (roles, texts and image markers), for hashing."""
    return "\x1e".join(
        f"{m.role}\x1f" + "\x1f".join(p.text if isinstance(p, TextPart) else "<image>" for p in m.parts)
        for m in messages
    )


def _scrub(text: str, forbidden: Sequence[str]) -> str:
    """Remove every case-insensitive occurrence of the forbidden strings, until none is left."""
    patterns = [re.compile(re.escape(term), re.IGNORECASE) for term in forbidden if term]
    changed = True
    while changed:
        changed = False
        for pattern in patterns:
            text, count = pattern.subn("", text)
            changed = changed or count > 0
    return text


def _split_words(text: str) -> list[str]:
    """Split text into word pieces that concatenate back to exactly ``text``."""
    return re.findall(r"\s*\S+\s*|\s+", text) if text else []


class ScriptedBackend(ModelBackend):
    """Streams a deterministic answer word by word, with optional delays and injected failures."""

    def __init__(
        self,
        name: str,
        *,
        display_name: str | None = None,
        reply: str | None = None,
        replies: Mapping[str, str] | None = None,
        delay_s: float = 0.0,
        first_token_delay_s: float = 0.0,
        chunk_words: int = 1,
        fail_after: int | None = None,
        max_images: int | None = None,
    ) -> None:
        self.name = name
        self.display_name = display_name or name
        self.reply = reply
        self.replies = [(re.compile(pattern), answer) for pattern, answer in (replies or {}).items()]
        self.delay_s = delay_s
        self.first_token_delay_s = first_token_delay_s
        self.chunk_words = max(1, chunk_words)
        self.fail_after = fail_after
        self.max_images = max_images
        self._active = 0
        self._closed = False

    @property
    def active_streams(self) -> int:
        """How many streams are running now (to check that cancelled streams clean up)."""
        return self._active

    def _forbidden(self) -> list[str]:
        return [self.name, self.display_name]

    def _words_for(self, messages: Sequence[Message], seed: int | None) -> list[str]:
        """Words of the default answer, drawn deterministically from the conversation."""
        n_images = sum(len(m.images) for m in messages)
        key = "\x1d".join([self.name, _conversation_text(messages), str(n_images), repr(seed)])
        rng = random.Random(hashlib.sha256(key.encode("utf-8")).digest())
        lowered = [term.lower() for term in self._forbidden() if term]
        vocabulary = [w for w in WORDS if not any(term in w for term in lowered)] or ["..."]
        return [rng.choice(vocabulary) for _ in range(rng.randint(_MIN_WORDS, _MAX_WORDS))]

    def answer(self, messages: Sequence[Message], params: GenerationParams) -> str:
        """The full answer :meth:`stream` will send for this conversation (before chunking)."""
        n_images = sum(len(m.images) for m in messages)
        prompt = next((m.text for m in reversed(messages) if m.role == "user"), "")
        template = next((answer for pattern, answer in self.replies if pattern.search(prompt)), self.reply)
        if template is not None:
            text = template.replace("{prompt}", prompt).replace("{n_images}", str(n_images))
        else:
            words = self._words_for(messages, params.seed)
            text = " ".join(words)
            text = text[:1].upper() + text[1:] + "."
        text = _scrub(text, self._forbidden())
        words = _split_words(text)
        if len(words) > params.max_new_tokens:
            text = "".join(words[: params.max_new_tokens]).rstrip()
        return text

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncGenerator[StreamItem, None]:
        """Yield the scripted answer in chunks of ``chunk_words`` words (then its :class:`Usage`).

        Delays and injected failures follow the params; one word counts as one token.
        """
        if self._closed:
            raise BackendError(f"model {self.name!r} is closed")
        check_image_limit(self.name, messages, self.max_images)
        words = _split_words(self.answer(messages, params))
        full_length = len(_split_words(self.answer(messages, replace(params, max_new_tokens=1 << 30))))
        chunks = ["".join(words[i : i + self.chunk_words]) for i in range(0, len(words), self.chunk_words)]
        self._active += 1
        try:
            if self.first_token_delay_s:
                await asyncio.sleep(self.first_token_delay_s)
            if self.fail_after is not None:
                chunks = chunks[: self.fail_after]
            for index, chunk in enumerate(chunks):
                if index and self.delay_s:
                    await asyncio.sleep(self.delay_s)
                yield chunk
            if self.fail_after is not None:
                raise BackendError(f"model {self.name!r}: scripted failure after {len(chunks)} chunk(s)")
            finish = "length" if len(words) < full_length else "stop"
            yield Usage(input_tokens=None, output_tokens=len(words), finish_reason=finish)
        finally:
            self._active -= 1

    async def aclose(self) -> None:
        """Refuse further streams."""
        self._closed = True


def create(spec: ModelSpec, context: BackendContext) -> ScriptedBackend:
    """Registry factory: a scripted backend configured from the roster entry's ``params``."""
    params = parse_params(ScriptedParams, spec.name, spec.params)
    # Each field of ScriptedParams is a keyword of ScriptedBackend of the same name.
    options = params.model_dump()
    return ScriptedBackend(spec.name, display_name=spec.display_name, max_images=spec.max_images, **options)
