"""The ``params`` each backend kind accepts in a roster entry, as typed models.

They live here, apart from the backends, so that the roster can validate a whole file (and name the
file, model and field of any mistake) without importing torch, transformers or httpx.
"""

from __future__ import annotations

import re
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.tiny import Architecture


class HFParams(BaseModel):
    """``hf``: a transformers image-text-to-text model loaded in the arena's process (cpu or cuda)."""

    model_config = ConfigDict(extra="forbid")

    #: A local directory, or a hub id where a hub is reachable.
    model: str | None = None
    #: Instead of ``model``: build a tiny random-weight model of this architecture (offline demo, tests).
    tiny_demo: Architecture | None = None
    #: ``auto`` (cuda when available), ``cpu``, ``cuda`` or ``cuda:N``.
    device: str = "auto"
    #: Passed to ``from_pretrained`` instead of ``device`` to shard a large model (e.g. ``auto``).
    device_map: str | dict[str, Any] | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    #: Generations of this model that run at the same time; further requests wait in a queue.
    max_concurrency: int = Field(default=1, ge=1, le=64)
    #: Requests allowed to wait; beyond that a request fails at once as unavailable (the arena then
    #: shows the neutral message instead of a page that hangs for minutes).
    max_queue: int = Field(default=16, ge=0)
    #: Requests that share one ``generate`` call at most (1 turns batching off).
    max_batch_size: int = Field(default=8, ge=1, le=256)
    #: How long the first waiting request waits for others to batch with (milliseconds).
    batch_window_ms: float = Field(default=10, ge=0, le=10_000)

    @model_validator(mode="after")
    def _one_source(self) -> HFParams:
        """Exactly one of ``model`` and ``tiny_demo`` says what to load; the device is well formed."""
        if (self.model is None) == (self.tiny_demo is None):
            raise ValueError("set exactly one of 'model' and 'tiny_demo'")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        return self


class OpenAIParams(BaseModel):
    """``openai``: any server speaking the OpenAI chat-completions API (vLLM, SGLang, TGI, hosted APIs)."""

    model_config = ConfigDict(extra="forbid")

    #: The API root, e.g. ``http://gpu-1:8000/v1`` or ``https://api.openai.com/v1``.
    base_url: str
    #: The model id the server knows (defaults to the roster name).
    model: str | None = None
    #: Name of the environment variable holding the API key (sent as ``Authorization: Bearer``).
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    #: Extra HTTP headers sent with every request.
    headers: dict[str, str] = Field(default_factory=dict)
    #: Extra fields merged into every request body (e.g. ``top_k``, ``repetition_penalty``).
    extra_body: dict[str, Any] = Field(default_factory=dict)
    #: Images are scaled down so that their longer side is at most this many pixels.
    max_image_side: int = Field(default=1536, ge=16)
    image_format: Literal["png", "jpeg"] = "jpeg"
    jpeg_quality: int = Field(default=90, ge=1, le=100)
    #: Ask for a final usage chunk (``stream_options.include_usage``); turn off for servers that reject it.
    include_usage: bool = True
    #: The request field for the answer length; newer OpenAI models want ``max_completion_tokens``.
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    connect_timeout_s: float = Field(default=10.0, gt=0)
    #: Most requests in flight to this server at once (the HTTP connection pool's size).
    max_connections: int = Field(default=64, ge=1)
    #: How health checks probe the server: ``models`` asks ``GET /models``; ``none`` skips the probe.
    health_check: Literal["models", "none"] = "models"

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        """An http(s) URL without a trailing slash (paths are appended to it)."""
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"base_url must start with http:// or https:// and a host, got {value!r}")
        return value.rstrip("/")


class ScriptedParams(BaseModel):
    """``scripted``: a deterministic fake model for tests, demos without weights and load benchmarks."""

    model_config = ConfigDict(extra="forbid")

    reply: str | None = None
    #: Regex -> answer: the first regex found in the last user text picks the answer (before ``reply``).
    replies: dict[str, str] = Field(default_factory=dict)
    delay_s: float = Field(default=0.0, ge=0)
    first_token_delay_s: float = Field(default=0.0, ge=0)
    chunk_words: int = Field(default=1, ge=1)
    fail_after: int | None = Field(default=None, ge=0)

    @field_validator("replies")
    @classmethod
    def _valid_patterns(cls, replies: dict[str, str]) -> dict[str, str]:
        """Every key compiles as a Python regular expression."""
        for pattern in replies:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"replies: bad regular expression {pattern!r}: {exc}") from None
        return replies


PARAMS_BY_KIND: dict[str, type[BaseModel]] = {
    "hf": HFParams,
    "openai": OpenAIParams,
    "scripted": ScriptedParams,
}


def params_problems(exc: ValidationError) -> list[tuple[tuple[int | str, ...], str]]:
    """Each problem of a params validation error as (location inside params, message)."""
    return [(tuple(e["loc"]), e["msg"].removeprefix("Value error, ")) for e in exc.errors()]


P = TypeVar("P", bound=BaseModel)


def parse_params(kind: type[P], name: str, params: dict[str, Any]) -> P:
    """Validate a roster entry's params for a backend factory; ValueError naming model and field."""
    try:
        return kind.model_validate(params)
    except ValidationError as exc:
        problems = "; ".join(
            f"params.{'.'.join(map(str, loc))}: {msg}" if loc else f"params: {msg}"
            for loc, msg in params_problems(exc)
        )
        raise ValueError(f"model {name!r}: invalid {kind.__name__}: {problems}") from None
