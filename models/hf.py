"""Local transformers vision-language models (``AutoModelForImageTextToText`` + ``AutoProcessor``).

Roster ``params``:

``model``
    A local directory (or, where a hub is reachable, a hub id) to load.
``tiny_demo``
    Instead of ``model``: one of :data:`models.tiny.ARCHITECTURES`; a tiny random-weight model of that
    architecture is built once into the backend context's cache directory and loaded from there.
``device``
    ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (cuda when available, else cpu; the default).
    Several models may name the same GPU.
``device_map``
    Instead of ``device``, passed to ``from_pretrained`` to place or shard a large model (``"auto"``
    spreads it over the visible GPUs; needs ``accelerate``, in the ``gpu`` extra).
``dtype``
    ``"auto"`` (bfloat16 on cuda, float32 on cpu), ``"float32"``, ``"bfloat16"`` or ``"float16"``.
``attn_implementation``
    Passed through to ``from_pretrained`` (e.g. ``"sdpa"``, ``"eager"``, ``"flash_attention_2"``).
``trust_remote_code``
    Allow model repositories' own code (default false).
``max_concurrency`` / ``max_queue``
    How many generations (batches) of this model run at once (default 1) and how many more requests
    may wait (default 16); a request beyond that fails at once as :class:`BackendUnavailable`.
``max_batch_size`` / ``batch_window_ms``
    Requests with the same sampling settings that arrive within ``batch_window_ms`` (default 10) of the
    first waiting one share one ``generate`` call, up to ``max_batch_size`` of them (default 8); each
    streams its own answer and may be stopped alone (:mod:`models.hf_batch`). With greedy decoding a
    batched answer is token for token the answer alone; seeded sampling runs alone. ``max_batch_size: 1``
    turns batching off: one ``generate`` per request. Up to ``max_concurrency * max_batch_size``
    requests generate at once, and ``max_queue`` more may wait.

The model is loaded once per process and shared by every session. Generations run in the model's own
worker threads in arrival order; text reaches the event loop through a thread-safe hand-off, so the
loop never blocks. Closing or cancelling the stream stops generation (of that request's sequence, in a
batch) after the current token, or drops the request if it is still queued. Each stream ends with a
:class:`Usage` (prompt and answer token counts). ``GenerationParams.extra`` is ignored by this backend;
a ``seed`` seeds torch's global generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import re
import threading
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, StoppingCriteria

from models.base import (
    BackendError,
    BackendUnavailable,
    GenerationParams,
    ImagePart,
    Message,
    ModelBackend,
    StreamItem,
    Usage,
    check_image_limit,
)
from models.hf_batch import (
    Batcher,
    BatchRequest,
    LoopStreamer,
    SequenceSplitter,
    SplitterCriterion,
    StreamEnd,
    post,
)
from models.params import HFParams, parse_params
from models.tiny import ensure_tiny_model

if TYPE_CHECKING:
    from models.registry import BackendContext
    from models.roster import ModelSpec

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> str:
    """Turn ``"auto"`` into ``"cuda"`` when a GPU is visible, else ``"cpu"``; other values pass through."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """Turn a dtype name into a torch dtype; ``"auto"`` is bfloat16 on cuda and float32 on cpu."""
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return _DTYPES[dtype]


class _StopOnEvent(StoppingCriteria):
    """Stops ``generate`` at the next token once the event is set."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        """True for every sequence once the stream's consumer has gone."""
        return torch.full(  # type: ignore[return-value]  # base wants BoolTensor, torch.full is typed Tensor
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


class HFBackend(ModelBackend):
    """A transformers image-text-to-text model loaded in this process, streaming its answers."""

    def __init__(
        self,
        name: str,
        model_path: str | Path,
        *,
        device: str = "auto",
        device_map: str | dict[str, Any] | None = None,
        dtype: str = "auto",
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
        max_images: int = 4,
        max_concurrency: int = 1,
        max_queue: int = 16,
        max_batch_size: int = 8,
        batch_window_ms: float = 10,
    ) -> None:
        self.name = name
        self.model_path = str(model_path)
        self.device = resolve_device(device)
        if device_map is not None and device == "auto" and not torch.cuda.is_available():
            device_map = None  # "auto" placement on a machine without GPUs is plain cpu
        self.dtype = resolve_dtype(dtype, "cuda" if device_map is not None else self.device)
        self.max_images = max_images
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.max_batch_size = max_batch_size
        self._jobs: dict[Future[None], threading.Event] = {}
        self._live: set[BatchRequest] = set()
        #: With batching on, the number of requests in each of the last 1,024 ``generate`` calls, oldest
        #: first (for tests and benchmarks).
        self.batch_sizes: deque[int] = deque(maxlen=1024)
        self._closed = False
        #: Token counts of the most recently finished generation, cancelled ones included (for tests).
        self.last_usage: Usage | None = None
        load_kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        try:
            self.processor = AutoProcessor.from_pretrained(self.model_path, **load_kwargs)
            if attn_implementation:
                load_kwargs["attn_implementation"] = attn_implementation
            if device_map is not None:
                load_kwargs["device_map"] = device_map
            elif self.device != "cpu" and importlib.util.find_spec("accelerate") is not None:
                # Load the weights straight onto the GPU (transformers needs accelerate for device_map).
                load_kwargs["device_map"] = self.device
            self.model = AutoModelForImageTextToText.from_pretrained(
                self.model_path, dtype=self.dtype, **load_kwargs
            )
            if "device_map" not in load_kwargs:
                self.model.to(self.device)  # type: ignore[arg-type]  # transformers' wrapper hides its types
        except Exception as exc:
            raise BackendError(f"model {name!r}: cannot load {self.model_path!r}: {exc}") from exc
        self.model.eval()
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self._control_tokens = _control_token_pattern(self.processor)
        eos = self.model.generation_config.eos_token_id
        self._eos_token_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        # Long-lived worker threads run the generations in arrival order. A fresh thread per request
        # would be simpler, but on CUDA each new thread pays ~1.5 s of per-thread setup on its first
        # generate (measured on an H200 with the tiny demo models).
        self._executor: ThreadPoolExecutor | None = None
        self._batcher: Batcher | None = None
        if max_batch_size > 1:
            self._batcher = Batcher(
                self._run_batch,
                name=name,
                window_s=batch_window_ms / 1000,
                max_batch_size=max_batch_size,
                workers=max_concurrency,
            )
        else:
            self._executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix=f"hf-{name}")

    @property
    def active_generations(self) -> int:
        """Requests queued or generating now (for tests and shutdown)."""
        return sum(1 for job in self._jobs if not job.done()) + len(self._live)

    def _chat(self, messages: Sequence[Message]) -> tuple[list[dict[str, Any]], list[Any]]:
        """The conversation in the HF chat format, and its images (RGB, in order of appearance)."""
        chat: list[dict[str, Any]] = []
        images: list[Any] = []
        for message in messages:
            content: list[dict[str, Any]] = []
            for part in message.parts:
                if isinstance(part, ImagePart):
                    content.append({"type": "image"})
                    images.append(part.image.convert("RGB"))
                else:
                    content.append({"type": "text", "text": self._neutralise(part.text)})
            chat.append({"role": message.role, "content": content})
        return chat, images

    def _neutralise(self, text: str) -> str:
        """Break up control tokens (``<image>``, turn markers…) typed in the text, so they stay plain text."""
        if self._control_tokens is None:
            return text
        return self._control_tokens.sub(lambda m: m.group(0)[0] + "\u200b" + m.group(0)[1:], text)

    def _prompt(self, messages: Sequence[Message]) -> tuple[str, list[Any]]:
        """The chat-templated prompt for ``messages`` and its images."""
        chat, images = self._chat(messages)
        return self.processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False), images

    def _process(self, text: str | list[str], images: Any, **options: Any) -> Any:
        """The processor's tensors for a prompt (or a batch of them), on the model's device."""
        inputs = self.processor(text=text, images=images or None, return_tensors="pt", **options)
        inputs.pop("labels", None)  # PaliGemma's processor adds training labels
        inputs = inputs.to(self.model.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return inputs

    def _inputs(self, messages: Sequence[Message]) -> Any:
        """Tokenised prompt and pixel tensors for ``messages``, on the model's device."""
        return self._process(*self._prompt(messages))

    def _generate_kwargs(self, params: GenerationParams) -> dict[str, Any]:
        """Sampling arguments for ``generate``: greedy at temperature 0, else nucleus sampling."""
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_new_tokens}
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    def _work(
        self,
        messages: Sequence[Message],
        params: GenerationParams,
        stop: threading.Event,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[str | StreamEnd],
    ) -> None:
        """Worker thread: prepare inputs, generate, and report the end or the error to the stream."""
        end = StreamEnd()
        try:
            if stop.is_set():
                return
            inputs = self._inputs(messages)
            if params.seed is not None:
                torch.manual_seed(params.seed)
            with torch.inference_mode():
                output = self.model.generate(
                    **inputs,
                    **self._generate_kwargs(params),
                    streamer=LoopStreamer(self.tokenizer, loop, queue),
                    stopping_criteria=[_StopOnEvent(stop)],
                )
            prompt_tokens = int(inputs["input_ids"].shape[-1])
            new_tokens = int(output.shape[-1]) - prompt_tokens
            finish = "length" if new_tokens >= params.max_new_tokens else "stop"
            end.usage = Usage(input_tokens=prompt_tokens, output_tokens=new_tokens, finish_reason=finish)
            self.last_usage = end.usage
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the consumer
            end.error = exc
        finally:
            post(loop, queue, end)

    def _prepare(self, requests: list[BatchRequest]) -> list[tuple[list[BatchRequest], Any]]:
        """The batches to run for ``requests`` and their inputs: normally one, padded on the left.

        Each request is first processed alone, exactly as the unbatched path does, so a request the
        processor rejects fails alone (with its own error) and each batched row can be checked against
        it. Batched processors infer some things across the batch (PaliGemma rewrites a prompt without
        images when others have some): if a row differs from its request alone, or the batch cannot be
        processed, every request runs on its own. This costs a second pass of the processor (about 1 ms
        per request for the demo models).
        """
        alone: list[tuple[BatchRequest, str, list[Any], Any]] = []
        for request in requests:
            try:
                prompt, images = self._prompt(request.messages)
                alone.append((request, prompt, images, self._process(prompt, images)))
            except Exception as exc:  # noqa: BLE001 - reported to that request's stream
                request.finish(StreamEnd(error=exc))
        one_by_one = [([request], inputs) for request, _, _, inputs in alone]
        if len(alone) < 2:
            return one_by_one
        images = [pictures for _, _, pictures, _ in alone]
        try:
            batch = self._process(
                [prompt for _, prompt, _, _ in alone],
                images if any(images) else None,
                padding=True,
                padding_side="left",
            )
        except Exception:  # noqa: BLE001 - each request was processed fine alone
            return one_by_one
        for row, (_, _, _, inputs) in enumerate(alone):
            ids = inputs["input_ids"][0]
            padded = batch["input_ids"].shape[-1] - ids.shape[-1]
            if int(batch["attention_mask"][row].sum()) != ids.shape[-1] or not torch.equal(
                batch["input_ids"][row, padded:], ids
            ):
                return one_by_one
        return [([request for request, _, _, _ in alone], batch)]

    def _run_batch(self, group: list[BatchRequest]) -> None:
        """Batcher worker: one ``generate`` for ``group`` (rarely more, see :meth:`_prepare`)."""
        for request in group:
            if request.stop.is_set():
                request.finish(StreamEnd())  # its consumer left while it waited
        try:
            batches = self._prepare([r for r in group if not r.finished.done()])
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the consumers
            batches = []
            for request in group:
                request.finish(StreamEnd(error=exc))
        for requests, inputs in batches:
            self._generate_batch(requests, inputs)

    def _generate_batch(self, requests: list[BatchRequest], inputs: Any) -> None:
        """One ``generate`` over ``inputs``, each row streamed to its own request; errors reach them all."""
        self.batch_sizes.append(len(requests))
        try:
            params = requests[0].params
            if len(requests) == 1 and params.seed is not None:
                torch.manual_seed(params.seed)
            kwargs = self._generate_kwargs(params)
            kwargs["max_new_tokens"] = max(r.params.max_new_tokens for r in requests)
            splitter = SequenceSplitter(
                requests,
                self.tokenizer,
                input_tokens=inputs["attention_mask"].sum(dim=-1).tolist(),
                eos_token_ids=self._eos_token_ids,
                on_usage=self._record_usage,
            )
            with torch.inference_mode():
                self.model.generate(
                    **inputs,
                    **kwargs,
                    streamer=splitter,
                    stopping_criteria=[SplitterCriterion(splitter, int(inputs["input_ids"].shape[-1]))],
                )
            splitter.end()
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the consumers
            for request in requests:
                request.finish(StreamEnd(error=exc))

    def _record_usage(self, usage: Usage) -> None:
        self.last_usage = usage

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncGenerator[StreamItem, None]:
        """Yield the model's answer as it is generated, then its :class:`Usage`; closing stops generation."""
        if self._closed:
            raise BackendUnavailable(f"model {self.name!r} is closed")
        check_image_limit(self.name, messages, self.max_images)
        capacity = self.max_concurrency * self.max_batch_size + self.max_queue
        if self.active_generations >= capacity:
            batch = f" x max_batch_size {self.max_batch_size}" if self.max_batch_size > 1 else ""
            raise BackendUnavailable(
                f"model {self.name!r}: {self.active_generations} requests already running or queued "
                f"(max_concurrency {self.max_concurrency}{batch} + max_queue {self.max_queue})"
            )
        if self._batcher is not None:
            # aclosing: when our consumer leaves, the inner stream's cleanup runs now, not at collection.
            async with contextlib.aclosing(self._stream_batched(self._batcher, messages, params)) as relay:
                async for piece in relay:
                    yield piece
            return
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | StreamEnd] = asyncio.Queue()
        stop = threading.Event()
        job = self._executor.submit(self._work, messages, params, stop, loop, queue)
        self._jobs[job] = stop
        try:
            while True:
                item = await queue.get()
                if isinstance(item, StreamEnd):
                    if item.error is not None:
                        raise _generation_error(self.name, item.error) from item.error
                    if item.usage is not None:
                        yield item.usage
                    return
                yield item
        finally:
            stop.set()
            # A request still waiting its turn is dropped; a running one stops after the current token.
            if not job.cancel():
                await asyncio.wrap_future(job)
            self._jobs.pop(job, None)

    async def _stream_batched(
        self, batcher: Batcher, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncGenerator[StreamItem, None]:
        """:meth:`stream` through the batcher: queue the request, then relay its own sequence."""
        request = BatchRequest(messages, params, asyncio.get_running_loop())
        self._live.add(request)
        try:
            batcher.submit(request)
            while True:
                piece = await request.queue.get()
                if isinstance(piece, StreamEnd):
                    if piece.error is not None:
                        raise _generation_error(self.name, piece.error) from piece.error
                    if piece.usage is not None:
                        yield piece.usage
                    return
                yield piece
        finally:
            request.stop.set()
            # A request still waiting is dropped; a running sequence stops after the current token.
            if batcher.withdraw(request):
                request.finish(StreamEnd())
            await asyncio.wrap_future(request.finished)
            self._live.discard(request)

    async def check(self) -> None:
        """Generate one token for a one-picture prompt: the weights are loaded and the device works."""
        probe = Image.new("RGB", (32, 32), "white")
        message = Message.user("Hi", [probe] if self.max_images else [])
        params = GenerationParams(max_new_tokens=1, temperature=0)
        async for _ in self.stream([message], params):
            pass

    async def aclose(self) -> None:
        """Stop running generations, wait for the worker thread and free the model's memory."""
        self._closed = True
        for job, stop in list(self._jobs.items()):
            stop.set()
            job.cancel()
        for request in list(self._live):
            request.stop.set()
        if self._executor is not None:
            await asyncio.to_thread(self._executor.shutdown, wait=True)
        if self._batcher is not None:
            await asyncio.to_thread(self._batcher.close, BackendUnavailable(f"model {self.name!r} is closed"))
        self._jobs.clear()
        if hasattr(self, "model"):
            del self.model
        if self.device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.empty_cache()


def _generation_error(name: str, error: BaseException) -> BackendError:
    """The structured error for a failed ``generate``: out of GPU memory may pass, the rest is a bug."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        with contextlib.suppress(Exception):
            torch.cuda.empty_cache()
        return BackendUnavailable(f"model {name!r}: out of GPU memory: {error}")
    if isinstance(error, BackendError):
        return error
    return BackendError(f"model {name!r}: generation failed: {type(error).__name__}: {error}")


def _control_token_pattern(processor: Any) -> re.Pattern[str] | None:
    """A regex matching the tokenizer's special/markup tokens, longest first, or None if it has none."""
    tokenizer = getattr(processor, "tokenizer", processor)
    tokens: set[str] = set()
    for token in getattr(tokenizer, "added_tokens_decoder", {}).values():
        content = str(token.content if hasattr(token, "content") else token)
        markup = content.startswith("<") and content.endswith(">")
        if len(content) > 1 and not content.isspace() and (getattr(token, "special", False) or markup):
            tokens.add(content)
    for attr in ("image_token", "boi_token", "eoi_token", "video_token"):
        value = getattr(processor, attr, None)
        if isinstance(value, str) and len(value) > 1:
            tokens.add(value)
    if not tokens:
        return None
    return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))


def create(spec: ModelSpec, context: BackendContext) -> HFBackend:
    """Registry factory: load the roster entry's local transformers model (building a tiny demo if asked)."""
    params = parse_params(HFParams, spec.name, spec.params)
    if params.tiny_demo is not None:
        path: str | Path = ensure_tiny_model(params.tiny_demo, context.cache_dir)
    else:
        assert params.model is not None
        path = params.model
    # Every other field of HFParams is a keyword of HFBackend of the same name.
    options = params.model_dump(exclude={"model", "tiny_demo"})
    return HFBackend(spec.name, path, max_images=spec.max_images, **options)
