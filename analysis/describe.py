"""TouchStone-style judging: a captioning model describes each image so a text-only judge can compare.

TouchStone (Bai et al. 2023) lets a strong text-only judge score vision answers against a detailed,
human-written description of the image. Here a captioning model of the roster (``--describe-with
NAME``) writes that description: each image is described once, alone, with a fixed prompt; the text (or
the error of the failed call) is stored in ``image_descriptions`` keyed by (image, describer, template
version), and every later run with the same describer reuses it without calling the model again. A
failed description is kept as an error and not retried (as a failed judge call is), and the battles
with that image are left unjudged in description mode.

Verdicts made from descriptions are stored under their own judge key, ``"<judge>|desc:<describer>"``
(:func:`described_judge_name`), with the template version ``"pairwise-v1+describe-v1"``
(:data:`DESCRIBED_TEMPLATE_VERSION`, both prompts' versions). They never collide with the same judge's
verdicts on the images, and ``agreement --judge "<judge>|desc:<describer>"`` measures the judge reading
descriptions as a judge of its own, side by side with the judge that sees the images.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from analysis.judge import TEMPLATE_VERSION
from analysis.model_tasks import ImageLoader, call_model, run_concurrently
from models.base import GenerationParams, ImagePart, Message, TextPart
from models.wrapper import ManagedBackend
from storage.descriptions import NewDescription, described_images, save_descriptions

#: Bump when the description prompt changes: descriptions are stored per template version.
DESCRIBE_TEMPLATE_VERSION = "describe-v1"
#: The judge template version of verdicts made from descriptions: the judge's and the describer's.
DESCRIBED_TEMPLATE_VERSION = f"{TEMPLATE_VERSION}+{DESCRIBE_TEMPLATE_VERSION}"
#: Separates the judge's name from the describer's in the judge key of description-mode verdicts.
DESCRIBED_BY = "|desc:"

DESCRIBE_PROMPT = """\
Describe this image in detail for someone who cannot see it and must judge answers about it. Cover
every object, person and animal with its position, colour, size and count; the setting; any text,
numbers, labels, charts, tables, code or formulas, transcribed exactly; and anything unusual. State
only what is visible, without guessing. Write plain prose and lists, no preamble."""


def described_judge_name(judge: str, describer: str) -> str:
    """The judge key under which ``judge``'s verdicts made from ``describer``'s descriptions are stored."""
    return f"{judge}{DESCRIBED_BY}{describer}"


def describe_messages(image: Image.Image) -> list[Message]:
    """The describer's messages for one image (a PIL image)."""
    return [Message("user", (ImagePart(image), TextPart(DESCRIBE_PROMPT)))]


@dataclass
class DescribeSummary:
    """What a describe run did: images asked about, already stored, described, failed, missing."""

    images: int = 0
    calls: int = 0
    skipped: int = 0
    described: int = 0
    errors: int = 0
    missing_from_store: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "calls": self.calls,
            "skipped_already_described": self.skipped,
            "described": self.described,
            "errors": self.errors,
            "missing_from_store": self.missing_from_store,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "elapsed_s": round(self.elapsed_s, 3),
        }


class DescriptionRunner:
    """Describes stored images with one captioning model, ``concurrency`` requests at a time."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        describer: ManagedBackend,
        *,
        describer_name: str,
        params: GenerationParams,
        load_image: ImageLoader,
        concurrency: int = 8,
        template_version: str = DESCRIBE_TEMPLATE_VERSION,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        batch_size: int = 64,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.sessions = sessions
        self.describer = describer
        self.describer_name = describer_name
        self.params = params
        self.load_image = load_image
        self.concurrency = concurrency
        self.template_version = template_version
        self.now = now
        self.batch_size = batch_size

    async def run(self, hashes: Sequence[str], *, progress: bool = False) -> DescribeSummary:
        """Describe the images not yet described by this describer and template; commit as they come.

        An image the store lacks is not asked about and not stored (counted ``missing_from_store``), so
        a later run describes it once the store has it.
        """
        started = time.perf_counter()
        summary = DescribeSummary(images=len(hashes))
        with self.sessions() as db:
            done = described_images(db, hashes, self.describer_name, self.template_version)
        todo = [sha for sha in hashes if sha not in done]
        summary.skipped = len(hashes) - len(todo)

        def count(result: tuple[str, NewDescription | None]) -> None:
            row = result[1]
            if row is None:
                summary.missing_from_store += 1
                return
            summary.calls += 1
            summary.input_tokens += row.input_tokens or 0
            summary.output_tokens += row.output_tokens or 0
            if row.error is None:
                summary.described += 1
            else:
                summary.errors += 1

        await run_concurrently(
            todo,
            self._describe,
            self._save,
            concurrency=self.concurrency,
            on_result=count,
            batch_size=self.batch_size,
            desc=f"describe {self.describer_name}",
            unit="image",
            progress=progress,
        )
        summary.elapsed_s = time.perf_counter() - started
        return summary

    async def _describe(self, sha: str) -> tuple[str, NewDescription | None]:
        """The image's description, or None when the store lacks the image (never a bare None: the
        batch writer of ``run_concurrently`` reads None as the end of the results)."""
        image = await asyncio.to_thread(self.load_image, sha)
        if image is None:
            return sha, None
        call = await call_model(
            self.describer,
            describe_messages(image),
            self.params,
            what=f"describer {self.describer_name} on image {sha[:12]}",
        )
        text = call.output.strip()
        error = call.error or (None if text else "empty description")
        return sha, NewDescription(
            image_sha256=sha,
            describer=self.describer_name,
            template_version=self.template_version,
            text=text if error is None else None,
            error=error,
            input_tokens=call.input_tokens,
            output_tokens=call.output_tokens,
            created_at=self.now(),
        )

    def _save(self, results: list[tuple[str, NewDescription | None]]) -> None:
        stored = [row for _, row in results if row is not None]
        if stored:
            with self.sessions.begin() as db:
                save_descriptions(db, stored)


__all__ = [
    "DESCRIBED_BY",
    "DESCRIBED_TEMPLATE_VERSION",
    "DESCRIBE_PROMPT",
    "DESCRIBE_TEMPLATE_VERSION",
    "DescribeSummary",
    "DescriptionRunner",
    "describe_messages",
    "described_judge_name",
]
