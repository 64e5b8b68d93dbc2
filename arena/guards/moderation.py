"""Moderation: check a prompt's text and images before any model sees them, and each answer before it
is stored.

One small synchronous interface (:class:`Moderator`; the service calls it from worker threads) and
the built-in providers: ``none`` (the default), ``blocklist`` (a file of regular expressions),
``openai`` (any OpenAI-compatible ``/v1/moderations`` endpoint) and ``local`` (an offline image
classifier from the optional ``moderation-local`` extra, see :mod:`arena.guards.moderation_local`).
:func:`build_moderator` picks one from the settings and fails at start-up on a bad configuration.
"""

from __future__ import annotations

import base64
import io
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import httpx
from PIL import Image

from arena.settings import ArenaSettings

log = logging.getLogger(__name__)

NEUTRAL_REFUSAL = (
    "This request can't be processed. Please try a different prompt or image, and keep to the terms of use."
)
"""What a voter sees when moderation refuses a request: it names no rule and no category."""

UNAVAILABLE = "unavailable"
"""The category of a refusal because the provider could not be asked (fail-closed mode)."""

IMAGE_MAX_SIDE = 1024  # images sent to a moderation endpoint are shrunk to fit this box first


class ModerationConfigError(ValueError):
    """The moderation settings cannot work (missing option, bad blocklist, missing package)."""


@dataclass(frozen=True)
class ModerationResult:
    """One verdict. ``detail`` is for operators only (matched pattern, scores); never show it to voters."""

    flagged: bool
    provider: str  # "blocklist", "openai", "local", "none"
    category: str | None = None  # e.g. "sexual", "blocklist", "violence", "unavailable"
    detail: str | None = None


class Moderator(Protocol):
    """A moderation provider: checks one text or one image, synchronously, and never raises."""

    name: str

    def check_text(self, text: str) -> ModerationResult:
        """The verdict on a prompt or an answer."""
        ...

    def check_image(self, image: Image.Image) -> ModerationResult:
        """The verdict on one uploaded image."""
        ...


@runtime_checkable
class TurnModerator(Protocol):
    """A provider that judges a whole turn (text and images) in one request, e.g. a remote endpoint."""

    def check_turn(self, text: str, images: Sequence[Image.Image]) -> ModerationResult:
        """The verdict on the turn as a whole."""
        ...


def check_turn(moderator: Moderator, text: str, images: Iterable[Image.Image]) -> ModerationResult:
    """The verdict on a whole user turn: the text first, then each image; the first flag wins.

    A provider that can judge the whole turn at once (:class:`TurnModerator`) is asked once.
    """
    if isinstance(moderator, TurnModerator):
        return moderator.check_turn(text, list(images))
    result = moderator.check_text(text)
    if result.flagged:
        return result
    for image in images:
        verdict = moderator.check_image(image)
        if verdict.flagged:
            return verdict
    return result


class NoModeration:
    """The default provider: never flags anything, costs nothing."""

    name = "none"

    def check_text(self, text: str) -> ModerationResult:
        """Never flagged."""
        return ModerationResult(flagged=False, provider=self.name)

    def check_image(self, image: Image.Image) -> ModerationResult:
        """Never flagged."""
        return ModerationResult(flagged=False, provider=self.name)


class BlocklistModerator:
    """Flags text that matches any regular expression of a UTF-8 file (one per line, ``#`` comments and
    blank lines ignored, case-insensitive). Images are never flagged by it."""

    name = "blocklist"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.patterns = load_blocklist(self.path)

    def check_text(self, text: str) -> ModerationResult:
        """Flagged when any pattern matches anywhere in the text; the detail names the pattern."""
        for pattern in self.patterns:
            if pattern.search(text):
                return ModerationResult(
                    flagged=True,
                    provider=self.name,
                    category="blocklist",
                    detail=f"matched {pattern.pattern!r}",
                )
        return ModerationResult(flagged=False, provider=self.name)

    def check_image(self, image: Image.Image) -> ModerationResult:
        """Never flagged: a blocklist reads text only."""
        return ModerationResult(flagged=False, provider=self.name)


def load_blocklist(path: Path) -> list[re.Pattern[str]]:
    """The compiled patterns of a blocklist file; a bad pattern is reported with its file and line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModerationConfigError(f"cannot read the moderation blocklist {path}: {exc}") from exc
    patterns = []
    for number, line in enumerate(lines, start=1):
        source = line.strip()
        if not source or source.startswith("#"):
            continue
        try:
            patterns.append(re.compile(source, re.IGNORECASE))
        except re.error as exc:
            raise ModerationConfigError(
                f"moderation blocklist {path}, line {number}: bad regular expression {source!r}: {exc}"
            ) from exc
    return patterns


class OpenAIModerator:
    """Asks an OpenAI-compatible ``POST {base_url}/moderations`` endpoint (OpenAI's request and
    response shapes). When the endpoint cannot answer (network error, bad status, bad JSON) the
    request is refused if ``fail_closed`` (category ``"unavailable"``) and allowed otherwise; a warning
    is logged either way and nothing is raised to the caller."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        model: str = "omni-moderation-latest",
        timeout_s: float = 10.0,
        fail_closed: bool = False,
    ) -> None:
        self.url = base_url.rstrip("/") + "/moderations"
        self.model = model
        self.fail_closed = fail_closed
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # One client for every worker thread: httpx.Client is thread-safe and keeps connections alive.
        self.client = httpx.Client(timeout=timeout_s, headers=headers)

    def close(self) -> None:
        """Release the HTTP connections."""
        self.client.close()

    def check_text(self, text: str) -> ModerationResult:
        """The endpoint's verdict on a text; blank text is not sent."""
        if not text.strip():
            return ModerationResult(flagged=False, provider=self.name)
        return self._ask([{"type": "text", "text": text}])

    def check_image(self, image: Image.Image) -> ModerationResult:
        """The endpoint's verdict on an image, sent as a PNG data URI (shrunk to fit 1024×1024)."""
        return self._ask([{"type": "image_url", "image_url": {"url": png_data_uri(image)}}])

    def check_turn(self, text: str, images: Sequence[Image.Image]) -> ModerationResult:
        """The endpoint's verdict on a turn's text and images, in one request (one round trip)."""
        inputs: list[dict[str, Any]] = [{"type": "text", "text": text}] if text.strip() else []
        inputs += [{"type": "image_url", "image_url": {"url": png_data_uri(image)}} for image in images]
        if not inputs:
            return ModerationResult(flagged=False, provider=self.name)
        return self._ask(inputs)

    def _ask(self, inputs: list[dict[str, Any]]) -> ModerationResult:
        try:
            response = self.client.post(self.url, json={"model": self.model, "input": inputs})
            response.raise_for_status()
            return self._verdict(response.json())
        except (httpx.HTTPError, ValueError, TypeError, KeyError, AttributeError) as exc:
            return self._unavailable(f"{type(exc).__name__}: {exc}")

    def _verdict(self, payload: Any) -> ModerationResult:
        results = payload["results"]
        if not isinstance(results, list) or not results:
            raise ValueError("the response has no results")
        for result in results:
            if result.get("flagged") is True:
                categories = result.get("categories") or {}
                category = next((str(key) for key, value in categories.items() if value is True), None)
                scores = result.get("category_scores") or {}
                top = sorted(scores.items(), key=lambda item: -float(item[1]))[:3]
                detail = ", ".join(f"{key}={float(value):.3f}" for key, value in top) or None
                return ModerationResult(flagged=True, provider=self.name, category=category, detail=detail)
        return ModerationResult(flagged=False, provider=self.name)

    def _unavailable(self, reason: str) -> ModerationResult:
        action = "refusing the request" if self.fail_closed else "allowing the request"
        log.warning("moderation endpoint %s unavailable (%s); %s", self.url, reason, action)
        return ModerationResult(
            flagged=self.fail_closed, provider=self.name, category=UNAVAILABLE, detail=reason[:500]
        )


def png_data_uri(image: Image.Image, max_side: int = IMAGE_MAX_SIDE) -> str:
    """A ``data:image/png;base64,…`` URI of the image, shrunk (aspect kept) to fit ``max_side``."""
    picture = image if image.mode in ("RGB", "RGBA", "L", "LA") else image.convert("RGBA")
    if max(picture.size) > max_side:
        picture = picture.copy()
        picture.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def build_moderator(settings: ArenaSettings) -> Moderator:
    """The moderation provider the settings ask for; a :class:`ModerationConfigError` says what is missing."""
    kind = settings.moderation
    if kind == "none":
        return NoModeration()
    if kind == "blocklist":
        if settings.moderation_blocklist is None:
            raise ModerationConfigError(
                "ARENA_MODERATION=blocklist needs ARENA_MODERATION_BLOCKLIST (a file of regular expressions)"
            )
        return BlocklistModerator(settings.moderation_blocklist)
    if kind == "openai":
        if not settings.moderation_url:
            raise ModerationConfigError(
                "ARENA_MODERATION=openai needs ARENA_MODERATION_URL (an OpenAI-compatible base URL ending in /v1)"
            )
        key = settings.moderation_api_key
        return OpenAIModerator(
            settings.moderation_url,
            api_key=key.get_secret_value() if key is not None else None,
            model=settings.moderation_model,
            timeout_s=settings.moderation_timeout_s,
            fail_closed=settings.moderation_fail_closed,
        )
    if kind == "local":
        from arena.guards.moderation_local import LocalImageModerator

        return LocalImageModerator(settings.moderation_threshold, fail_closed=settings.moderation_fail_closed)
    raise ModerationConfigError(f"unknown moderation provider {kind!r} (none, blocklist, openai or local)")
