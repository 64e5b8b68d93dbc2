"""Shared machinery of the analysis tasks that run a roster model over stored battles.

The judge (``analysis.judge``), the category tagger (``analysis.categorize``) and the image-need test
(``analysis.image_need``) all do the same thing: start a roster model, ask it something about each
pending battle with ``concurrency`` requests in flight, keep every raw output, and commit results in
batches off the event loop as they arrive, so that a run killed half-way keeps what it finished and the
next run resumes. This module holds those pieces once:

* :func:`start_roster_model` loads one model of a roster file as a :class:`ManagedBackend`;
* :func:`task_params` are the deterministic generation settings a worker runs with;
* :func:`call_model` makes one request and returns its text, error and token counts;
* :func:`turn_images` loads a battle's pictures for a vision worker within its image limit;
* :func:`run_concurrently` runs the jobs and hands finished results to a batch writer;
* :func:`content_nonce` and :func:`defuse` fence untrusted text (prompts, answers) inside a prompt;
* :class:`LabelRunner` is the resumable run of a labelling task (``categorize``, ``image-need``) that
  stores one ``battle_labels`` row per battle and the tags it implies.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from PIL import Image
from tqdm import tqdm

from models.base import BackendError, GenerationParams, Message
from models.wrapper import ManagedBackend
from storage.judging import JudgeBattle, load_for_judging
from storage.labels import (
    NewLabel,
    battles_to_label,
    drop_overridden_model_tags,
    labelled_battles,
    save_labels,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from models.roster import ModelSpec

log = logging.getLogger(__name__)

J = TypeVar("J")
R = TypeVar("R")

#: Opens an image of the arena's store by sha256; None when the store lacks it.
ImageLoader = Callable[[str], Image.Image | None]

#: Where demo (tiny) models are built when a command is not told otherwise.
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "vlm-arena"


class ModelStartError(ValueError):
    """The roster file, the model's entry or the model itself cannot be used; the message says why."""


def start_roster_model(
    config: str | Path, name: str, cache_dir: Path | None = None
) -> tuple[ModelSpec, ManagedBackend]:
    """The roster entry ``name`` of the file ``config`` and its backend, wrapped with retries and limits.

    Raises :class:`ModelStartError` (one line) when the file, the entry or the backend is unusable.
    """
    from models.registry import BackendContext, create_backend
    from models.roster import RosterError, load_roster

    try:
        spec = load_roster(config).get(name)
    except RosterError as exc:
        raise ModelStartError(str(exc)) from None
    except KeyError as exc:
        raise ModelStartError(str(exc.args[0])) from None
    try:
        backend = create_backend(spec, BackendContext(cache_dir=cache_dir or DEFAULT_CACHE_DIR))
    except Exception as exc:  # the model cannot be loaded or reached: one line, not a traceback
        raise ModelStartError(f"cannot start model {spec.name!r}: {exc}") from None
    return spec, ManagedBackend.for_spec(spec, backend)


def task_params(spec: ModelSpec) -> GenerationParams:
    """The roster entry's generation settings at temperature 0: analysis workers answer deterministically
    (as MT-Bench and Arena-Hard run their judges)."""
    return replace(spec.generation.to_params(), temperature=0.0)


@dataclass(frozen=True)
class CallResult:
    """One request's outcome: the text received (partial when it failed), the error, the token counts."""

    output: str
    error: str | None
    input_tokens: int | None
    output_tokens: int | None


async def call_model(
    backend: ManagedBackend, messages: Sequence[Message], params: GenerationParams, *, what: str
) -> CallResult:
    """Ask ``backend`` once; a backend failure becomes ``error`` ("BackendTimeout: ...") rather than raising.

    ``what`` names the request in the warning logged on failure.
    """
    generation = backend.generate(messages, params)
    output = ""
    error: str | None = None
    try:
        async for delta in generation:
            output += delta
    except BackendError as exc:
        error = f"{type(exc).__name__}: {exc}"
        log.warning("%s failed: %s", what, error)
    return CallResult(output, error, generation.stats.input_tokens, generation.stats.output_tokens)


def turn_images(
    hash_lists: Sequence[Sequence[str]], load_image: ImageLoader | None, max_images: int
) -> list[list[Image.Image]] | None:
    """The pictures of each listed turn for a model that takes up to ``max_images`` images.

    None when the model takes no images, there is no image store, the turns hold more images than the
    model takes, or an image is missing from the store: the caller then tells the model that images
    exist but are not shown, rather than showing some of them.
    """
    if max_images <= 0 or load_image is None:
        return None
    if sum(len(hashes) for hashes in hash_lists) > max_images:
        return None
    out = []
    for hashes in hash_lists:
        pictures = [load_image(sha) for sha in hashes]
        if any(p is None for p in pictures):
            return None
        out.append([p for p in pictures if p is not None])
    return out


async def run_concurrently(
    jobs: Sequence[J],
    work: Callable[[J], Awaitable[R]],
    save: Callable[[list[R]], None],
    *,
    concurrency: int,
    on_result: Callable[[R], None] = lambda _: None,
    batch_size: int = 64,
    desc: str = "",
    unit: str = "call",
    progress: bool = False,
) -> None:
    """Run ``work`` on every job, ``concurrency`` at a time, and ``save`` the results in batches.

    ``save`` runs in a worker thread (it may block on the database) with up to ``batch_size`` results
    that finished since the previous batch, so results are committed as they come and a killed run
    keeps them. ``on_result`` sees each result first (for counting). A tqdm bar on stderr when
    ``progress``.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    # The end of the results is marked by a private object, never by a value ``work`` could return.
    done = object()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    limit = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(jobs), desc=desc, unit=unit, disable=not progress)

    async def write() -> None:
        finished = False
        while not finished:
            batch = [await queue.get()]
            while len(batch) < batch_size and not queue.empty():
                batch.append(queue.get_nowait())
            finished = batch[-1] is done
            rows: list[R] = [r for r in batch if r is not done]
            if rows:
                await asyncio.to_thread(save, rows)

    async def one(job: J) -> None:
        async with limit:
            result = await work(job)
        on_result(result)
        queue.put_nowait(result)
        bar.update()

    writer = asyncio.create_task(write())
    try:
        await asyncio.gather(*(one(job) for job in jobs))
    finally:
        queue.put_nowait(done)
        await writer
        bar.close()


_TAG_OPENERS = re.compile(r"\[\s*\[")


def content_nonce(first: str, *texts: str) -> str:
    """12 hex digits derived from the content a prompt fences: untrusted text inside cannot know them,
    so it cannot close its own block."""
    digest = hashlib.sha256(first.encode())
    for text in texts:
        digest.update(b"\x1e" + text.encode())
    return digest.hexdigest()[:12]


def defuse(text: str, nonce: str) -> str:
    """Untrusted text made unable to write a ``[[...]]`` answer tag or to close its own fenced block."""
    text = _TAG_OPENERS.sub("[ [", unicodedata.normalize("NFKC", text))
    return text.replace("]]", "] ]").replace(nonce, "[nonce]")


@dataclass(frozen=True)
class LabelResult:
    """What a labelling task found for one battle, before it is stored.

    ``label`` is None exactly when ``error`` says why (an error starting with ``unparseable:`` is output
    that could not be used; any other is a failed call). ``tags`` are written to ``battle_tags`` with the
    label; ``calls`` counts the model requests made.
    """

    label: str | None
    details: dict[str, Any] | None
    raw_output: str
    error: str | None
    input_tokens: int | None
    output_tokens: int | None
    calls: int = 1
    tags: tuple[str, ...] = ()


@dataclass
class LabelRunSummary:
    """What a labelling run did: battles asked, labels and tags found, unusable outputs, failures."""

    task: str
    tagger: str
    template_version: str
    battles: int = 0
    calls: int = 0
    skipped: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    tags: Counter[str] = field(default_factory=Counter)
    unparseable: int = 0
    errors: int = 0
    stored: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    elapsed_s: float = 0.0

    def count(self, result: LabelResult) -> None:
        """Add one battle's result."""
        self.calls += result.calls
        self.input_tokens += result.input_tokens or 0
        self.output_tokens += result.output_tokens or 0
        if result.label is not None:
            self.labels[result.label] += 1
            self.tags.update(t for t in result.tags if t != result.label)
        elif result.error and result.error.startswith("unparseable"):
            self.unparseable += 1
        else:
            self.errors += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "tagger": self.tagger,
            "template_version": self.template_version,
            "battles": self.battles,
            "calls": self.calls,
            "skipped_already_labelled": self.skipped,
            "labels": dict(sorted(self.labels.items())),
            "other_tags": dict(sorted(self.tags.items())),
            "unparseable": self.unparseable,
            "errors": self.errors,
            "stored": self.stored,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "elapsed_s": round(self.elapsed_s, 3),
            "battles_per_s": round((self.battles - self.skipped) / self.elapsed_s, 2)
            if self.elapsed_s
            else None,
        }


class LabelRunner:
    """A resumable, concurrent labelling run: one ``battle_labels`` row per (battle, tagger, template
    version, task), written with the tags it implies (see ``storage.labels.save_labels``).

    Subclasses set ``task`` and ``needs_images`` and implement :meth:`label`; ``human_first`` lists the
    tags that a human tag of the same list overrides (the taxonomy's categories).
    """

    task: ClassVar[str]
    #: Only battles whose first turn has images are labelled.
    needs_images: ClassVar[bool] = False

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        tagger: str,
        template_version: str,
        concurrency: int = 8,
        human_first: Sequence[str] = (),
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        batch_size: int = 64,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.sessions = sessions
        self.tagger = tagger
        self.template_version = template_version
        self.concurrency = concurrency
        self.human_first = tuple(human_first)
        self.now = now
        self.batch_size = batch_size

    async def label(self, battle: JudgeBattle) -> LabelResult:
        """Ask the model(s) about one battle."""
        raise NotImplementedError

    def pending(self, **filters: Any) -> list[str]:
        """Battles this key still needs (filters as ``storage.labels.battles_to_label`` takes)."""
        with self.sessions() as db:
            return battles_to_label(
                db,
                tagger=self.tagger,
                template_version=self.template_version,
                task=self.task,
                with_images=self.needs_images,
                **filters,
            )

    async def run(self, battle_ids: Sequence[str], *, progress: bool = False) -> LabelRunSummary:
        """Label the battles not labelled yet; rows are committed in batches as they come."""
        started = time.perf_counter()
        summary = LabelRunSummary(self.task, self.tagger, self.template_version, battles=len(battle_ids))
        with self.sessions.begin() as db:
            if self.human_first:
                drop_overridden_model_tags(db, self.human_first)
            done = labelled_battles(
                db, battle_ids, tagger=self.tagger, template_version=self.template_version, task=self.task
            )
            battles = load_for_judging(db, [b for b in battle_ids if b not in done])
        summary.skipped = len(battle_ids) - len(battles)

        def save(rows: list[tuple[NewLabel, tuple[str, ...], LabelResult]]) -> None:
            with self.sessions.begin() as db:
                pairs = [(label, tags) for label, tags, _ in rows]
                summary.stored += save_labels(db, pairs, human_first=self.human_first)

        await run_concurrently(
            battles,
            self._one,
            save,
            concurrency=self.concurrency,
            on_result=lambda row: summary.count(row[2]),
            batch_size=self.batch_size,
            desc=f"{self.task} {self.tagger}",
            unit="battle",
            progress=progress,
        )
        summary.elapsed_s = time.perf_counter() - started
        return summary

    async def _one(self, battle: JudgeBattle) -> tuple[NewLabel, tuple[str, ...], LabelResult]:
        result = await self.label(battle)
        row = NewLabel(
            battle_id=battle.battle_id,
            tagger=self.tagger,
            template_version=self.template_version,
            task=self.task,
            label=result.label,
            details=None if result.details is None else json.dumps(result.details, ensure_ascii=False),
            raw_output=result.raw_output,
            error=result.error,
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            created_at=self.now(),
        )
        return row, (result.tags if result.label is not None else ()), result

    async def first_turn_images(
        self, battle: JudgeBattle, load_image: ImageLoader | None, max_images: int
    ) -> list[Image.Image] | None:
        """The first turn's pictures for a model that takes ``max_images`` (None: not shown)."""
        if not battle.turns:
            return None
        images = await asyncio.to_thread(turn_images, [battle.turns[0].image_hashes], load_image, max_images)
        return None if images is None else images[0]


__all__ = [
    "DEFAULT_CACHE_DIR",
    "CallResult",
    "ImageLoader",
    "LabelResult",
    "LabelRunSummary",
    "LabelRunner",
    "ModelStartError",
    "call_model",
    "content_nonce",
    "defuse",
    "run_concurrently",
    "start_roster_model",
    "task_params",
    "turn_images",
]
