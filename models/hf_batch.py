"""Batched generation for the ``hf`` backend: requests that arrive together share one ``generate`` call.

How it works. Each request becomes a :class:`BatchRequest` in a :class:`Batcher`'s queue. A worker
thread (``max_concurrency`` of them) takes the oldest waiting request and waits until
``batch_window_ms`` after its arrival, or until ``max_batch_size`` compatible requests are waiting,
then takes every compatible request (oldest first, up to ``max_batch_size``) and runs them as one batch:

- Compatible means the same sampling settings (:func:`batch_key`): all greedy, or the same
  temperature and top-p. ``max_new_tokens`` may differ: the batch runs to the largest and each sequence
  stops at its own limit. Sampling with a ``seed`` always runs alone, because a batch draws all its
  sequences from one random stream and could not reproduce a request's seeded answer.
- The prompts and images go through the model's processor as one batch, padded on the left (what
  decoder-only generation needs: every sequence's next token is in the last column); the processor
  builds each architecture's extra inputs (attention and pixel masks, token types, padded image stacks
  for requests with fewer images) and ``generate`` derives position ids from the attention mask. With
  greedy decoding, each batched answer is token for token the answer the request gets alone (tested on
  every tiny demo architecture with mixed prompt lengths and 0, 1 and 2 images, on CPU in float32; in
  bfloat16 on a GPU, kernels chosen by batch size may change the last bits of a logit and so, rarely,
  a near-tie greedy choice).
- One :class:`SequenceSplitter` is both the batch's streamer and a stopping criterion: it splits each
  step's tokens per sequence and feeds every request its own text streamer, and it stops a sequence
  (only that one) when its consumer has gone or its own ``max_new_tokens`` is reached. A stopped
  sequence's further tokens are dropped; the batch ends when every sequence has ended. Each request's
  stream ends with its own :class:`Usage`.
- The backend also processes each request alone first: a request its processor rejects
  fails alone and the others run; a batched row that differs from its request alone (PaliGemma's
  processor rewrites a prompt without images when others in the batch have some) makes the requests
  run one by one. A failure of ``generate`` itself reaches every unfinished request of the batch as
  the error of its stream.

Why not transformers' continuous batching (``generate_batch`` / ``init_continuous_batching``, 5.25):
its requests are token-id lists only (``ContinuousBatchingManager.add_request(input_ids, ...)``) and its
paged-attention runner feeds the model ``input_ids`` alone, so there is no way to pass ``pixel_values``,
``pixel_attention_mask`` or ``token_type_ids``: the vision inputs of these architectures cannot go
through it. Static batching through ``generate`` handles them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import StoppingCriteria, TextStreamer
from transformers.generation.streamers import BaseStreamer

from models.base import GenerationParams, Message, Usage


@dataclass
class StreamEnd:
    """Queue sentinel: a generation finished, with its token counts or the worker's exception."""

    error: BaseException | None = None
    usage: Usage | None = None


def post(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any], item: Any) -> None:
    """Put ``item`` on ``queue`` from another thread; dropped if the loop has already closed."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(queue.put_nowait, item)


class LoopStreamer(TextStreamer):
    """A text streamer that hands each finalised piece of text to an asyncio queue from a worker thread."""

    def __init__(
        self,
        tokenizer: Any,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[Any],
        *,
        skip_prompt: bool = True,
    ) -> None:
        super().__init__(tokenizer, skip_prompt=skip_prompt, skip_special_tokens=True)
        self.loop = loop
        self.queue = queue

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        """Forward a decoded piece of the answer to the stream (empty pieces are dropped)."""
        if text:
            post(self.loop, self.queue, text)


def batch_key(params: GenerationParams) -> Hashable | None:
    """What requests must share to run in one batch; None for a request that must run alone."""
    if params.temperature <= 0:
        return ("greedy",)
    if params.seed is not None:
        return None  # one random stream per batch: a seeded answer is only reproducible alone
    return ("sample", params.temperature, params.top_p)


@dataclass(eq=False)
class BatchRequest:
    """One request waiting for, or taking part in, a batch; its stream reads ``queue``."""

    messages: Sequence[Message]
    params: GenerationParams
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    #: Set when the stream's consumer has gone: the request is withdrawn or its sequence stopped.
    stop: threading.Event = field(default_factory=threading.Event)
    #: Resolved once the request's :class:`StreamEnd` has been posted (after which it uses no worker).
    finished: Future[None] = field(default_factory=Future)
    arrival: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> Hashable | None:
        return batch_key(self.params)

    def finish(self, end: StreamEnd) -> bool:
        """Post ``end`` to the stream, once; False if the request had already finished."""
        if self.finished.done():
            return False
        post(self.loop, self.queue, end)
        self.finished.set_result(None)
        return True


class SequenceSplitter(BaseStreamer):
    """Streamer and stopping rule of one batch: each row's tokens go to its own request's stream.

    ``generate`` calls :meth:`should_stop` after appending each step's tokens and then :meth:`put` with
    them; rows that ended (end of sequence, own ``max_new_tokens``, consumer gone) ignore what follows.
    """

    def __init__(
        self,
        requests: Sequence[BatchRequest],
        tokenizer: Any,
        *,
        input_tokens: Sequence[int],
        eos_token_ids: set[int],
        on_usage: Callable[[Usage], None] = lambda usage: None,
    ) -> None:
        self.requests = list(requests)
        self.streams = [LoopStreamer(tokenizer, r.loop, r.queue, skip_prompt=False) for r in requests]
        self.input_tokens = list(input_tokens)
        self.eos_token_ids = eos_token_ids
        self.on_usage = on_usage
        self.counts = [0] * len(self.requests)
        self.open = [True] * len(self.requests)
        #: Per row, the step after which it stops because its consumer left (None while wanted).
        self.cut: list[int | None] = [None] * len(self.requests)
        self._prompt_seen = False

    def should_stop(self, input_ids: torch.Tensor, prompt_width: int) -> torch.Tensor:
        """Per row, whether it has ended or ends with the tokens just appended."""
        step = int(input_ids.shape[-1]) - prompt_width
        done = []
        for i, request in enumerate(self.requests):
            if self.open[i] and self.cut[i] is None and request.stop.is_set():
                self.cut[i] = step
            limit_reached = step >= request.params.max_new_tokens
            done.append(not self.open[i] or self.cut[i] is not None or limit_reached)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def put(self, value: torch.Tensor) -> None:
        """Hand one step's tokens (one per row) to the rows' streams; the first call is the prompt."""
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for i, token in enumerate(value.reshape(-1).tolist()):
            if not self.open[i]:
                continue
            self.counts[i] += 1
            self.streams[i].put(torch.tensor([token]))
            cut = self.cut[i]
            limit_reached = self.counts[i] >= self.requests[i].params.max_new_tokens
            stopped = cut is not None and self.counts[i] >= cut
            if limit_reached or stopped or token in self.eos_token_ids:
                self._close(i)

    def end(self) -> None:
        """``generate`` has returned: every row still open ends now."""
        for i in range(len(self.requests)):
            if self.open[i]:
                self._close(i)

    def _close(self, i: int) -> None:
        """Flush row ``i``'s text and end its stream with its token counts."""
        self.open[i] = False
        self.streams[i].end()
        request = self.requests[i]
        finish = "length" if self.counts[i] >= request.params.max_new_tokens else "stop"
        usage = Usage(input_tokens=self.input_tokens[i], output_tokens=self.counts[i], finish_reason=finish)
        self.on_usage(usage)
        request.finish(StreamEnd(usage=usage))


class SplitterCriterion(StoppingCriteria):
    """Adapts :meth:`SequenceSplitter.should_stop` to ``generate``'s stopping-criteria interface."""

    def __init__(self, splitter: SequenceSplitter, prompt_width: int) -> None:
        self.splitter = splitter
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        """True for the rows that have ended."""
        return self.splitter.should_stop(input_ids, self.prompt_width)  # type: ignore[return-value]


class Batcher:
    """A queue of requests and the worker threads that take them off it in batches.

    ``run`` receives each batch (requests in arrival order) on a worker thread; it must end every
    request it is given (``BatchRequest.finish``) and never raise.
    """

    def __init__(
        self,
        run: Callable[[list[BatchRequest]], None],
        *,
        name: str,
        window_s: float,
        max_batch_size: int,
        workers: int = 1,
    ) -> None:
        self.run = run
        self.window_s = window_s
        self.max_batch_size = max_batch_size
        self._pending: deque[BatchRequest] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._loop, name=f"hf-{name}-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def pending(self) -> int:
        """Requests waiting for a batch."""
        with self._cond:
            return len(self._pending)

    def submit(self, request: BatchRequest) -> None:
        """Queue ``request`` for the next batch it fits."""
        with self._cond:
            if self._closed:
                raise RuntimeError("batcher is closed")
            self._pending.append(request)
            self._cond.notify_all()

    def withdraw(self, request: BatchRequest) -> bool:
        """Take ``request`` off the queue if it is still waiting; False once a batch has taken it."""
        with self._cond:
            try:
                self._pending.remove(request)
            except ValueError:
                return False
            return True

    def _next_batch(self) -> list[BatchRequest] | None:
        """Block until a batch is due (window over or batch full) and take it; None once closed."""
        with self._cond:
            while not self._closed:
                if not self._pending:
                    self._cond.wait()
                    continue
                first = self._pending[0]
                key = first.key
                group = [first] if key is None else [r for r in self._pending if r.key == key]
                group = group[: self.max_batch_size]
                wait = first.arrival + self.window_s - time.monotonic()
                if len(group) >= self.max_batch_size or wait <= 0 or key is None:
                    for request in group:
                        self._pending.remove(request)
                    return group
                self._cond.wait(wait)
        return None

    def _loop(self) -> None:
        """Worker thread: run batches until the batcher closes."""
        while (group := self._next_batch()) is not None:
            self.run(group)

    def close(self, error: BaseException) -> None:
        """Stop taking batches, fail the waiting requests with ``error`` and wait for the workers."""
        with self._cond:
            self._closed = True
            waiting = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        for request in waiting:
            request.finish(StreamEnd(error=error))
        for thread in self._threads:
            thread.join()
