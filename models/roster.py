"""The model roster: which models the arena serves, read from a YAML file and validated.

A roster file looks like::

    models:
      - name: demo-llava-tiny
        display_name: Tiny LLaVA (untrained demo)
        backend: hf
        params: {tiny_demo: llava, device: cpu}
        generation: {max_new_tokens: 48, temperature: 0.8}
        timeouts: {first_token_s: 60, total_s: 300}
        retries: 1

Each backend kind's ``params`` are checked against its schema in :mod:`models.params`.
Any invalid entry raises :class:`RosterError` naming the file, the model and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.base import GenerationParams
from models.params import PARAMS_BY_KIND, params_problems

BackendKind = Literal["hf", "openai", "scripted"]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$"

#: The longest identity alias a roster entry may list.
MAX_ALIAS_LENGTH = 100


class GenerationDefaults(BaseModel):
    """Per-model sampling defaults; the arena turns them into :class:`GenerationParams` per request."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(default=256, gt=0)
    temperature: float = Field(default=0.7, ge=0)
    top_p: float = Field(default=1.0, gt=0, le=1)

    def to_params(self, seed: int | None = None) -> GenerationParams:
        """The generation settings for one request, with an optional sampling seed."""
        return GenerationParams(
            max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p, seed=seed
        )


class Timeouts(BaseModel):
    """How long the arena waits for a model: for its first token and for the whole answer."""

    model_config = ConfigDict(extra="forbid")

    first_token_s: float = Field(default=60.0, gt=0)
    total_s: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Timeouts:
        if self.total_s < self.first_token_s:
            raise ValueError("total_s must be at least first_token_s")
        return self


class ModelSpec(BaseModel):
    """One roster entry: how to reach a model and how the arena presents and samples it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=NAME_PATTERN)
    display_name: str | None = None
    organization: str = ""
    license: str = ""
    link: str = ""
    backend: BackendKind
    params: dict[str, Any] = Field(default_factory=dict)
    sampling_weight: float = Field(default=1.0, ge=0)
    enabled: bool = True
    max_images: int = Field(default=4, ge=0)
    generation: GenerationDefaults = Field(default_factory=GenerationDefaults)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    #: Extra attempts when a request fails before its first token in a way that may pass (HTTP 5xx,
    #: refused connection, no first token in time). Never after text has been shown.
    retries: int = Field(default=1, ge=0, le=5)
    demo: bool = False
    #: Extra identity terms for this model (e.g. ``[GPT-4o, OpenAI, ChatGPT]``): an answer that names one
    #: of them when the voter did not is an identity leak, and its vote does not count.
    aliases: list[str] = Field(default_factory=list)
    #: Other roster models this one should be compared with most: a battle pairing it with one of them
    #: is ``ARENA_SAMPLING_TARGET_BOOST`` times more likely (see ``arena.sampling``).
    battle_targets: list[str] = Field(default_factory=list)

    @field_validator("aliases")
    @classmethod
    def _clean_aliases(cls, aliases: list[str]) -> list[str]:
        """Strip each alias; reject empty ones and ones longer than 100 characters."""
        cleaned = []
        for index, alias in enumerate(aliases):
            text = alias.strip()
            if not text:
                raise ValueError(f"alias #{index + 1} is empty")
            if len(text) > MAX_ALIAS_LENGTH:
                raise ValueError(f"alias #{index + 1} is longer than {MAX_ALIAS_LENGTH} characters")
            cleaned.append(text)
        return cleaned

    @model_validator(mode="after")
    def _default_display_name(self) -> ModelSpec:
        """Show the roster name when no display name is given."""
        if not self.display_name:
            self.display_name = self.name
        return self

    @property
    def label(self) -> str:
        """The name shown to people once the vote has revealed the model."""
        return self.display_name or self.name


class Roster(BaseModel):
    """The validated list of models, with unique names."""

    model_config = ConfigDict(extra="forbid")

    models: list[ModelSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Roster:
        """Reject two entries with the same name; the arena keys votes by name."""
        seen: dict[str, int] = {}
        for index, spec in enumerate(self.models):
            if spec.name in seen:
                raise ValueError(
                    f"duplicate model name {spec.name!r} (entries #{seen[spec.name] + 1} and #{index + 1})"
                )
            seen[spec.name] = index
        return self

    @model_validator(mode="after")
    def _known_targets(self) -> Roster:
        """Each battle target names another model of this roster."""
        names = {spec.name for spec in self.models}
        for spec in self.models:
            for target in spec.battle_targets:
                if target == spec.name:
                    raise ValueError(f"model {spec.name!r} lists itself in battle_targets")
                if target not in names:
                    raise ValueError(
                        f"model {spec.name!r}: battle target {target!r} is not a model of this roster"
                    )
        return self

    def enabled(self) -> list[ModelSpec]:
        """The models that take part in battles, in roster order."""
        return [spec for spec in self.models if spec.enabled]

    def get(self, name: str) -> ModelSpec:
        """The entry called ``name``; KeyError naming the known models if there is none."""
        for spec in self.models:
            if spec.name == name:
                return spec
        known = ", ".join(spec.name for spec in self.models)
        raise KeyError(f"no model named {name!r} in the roster (known: {known})")

    @property
    def names(self) -> list[str]:
        """All model names, in roster order."""
        return [spec.name for spec in self.models]


class RosterError(ValueError):
    """A roster file is missing, unreadable or invalid; the message says where and why."""


def _describe_location(loc: tuple[int | str, ...], data: Any) -> str:
    """Turn a pydantic error location into 'model 'x' (#2), field 'generation.top_p''."""
    if not loc or loc[0] != "models":
        return f"field {'.'.join(map(str, loc))!r}" if loc else "roster"
    if len(loc) == 1:
        return "field 'models'"
    index = loc[1]
    where = f"model #{index + 1}" if isinstance(index, int) else f"model {index!r}"
    entries = data.get("models") if isinstance(data, dict) else None
    if isinstance(index, int) and isinstance(entries, list) and index < len(entries):
        entry = entries[index]
        if isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry["name"]:
            where = f"model {entry['name']!r} (#{index + 1})"
    rest = loc[2:]
    if rest:
        where += f", field {'.'.join(map(str, rest))!r}"
    return where


def _format_validation_error(path: Path, error: ValidationError, data: Any) -> str:
    """One line per problem, each naming the file, the model and the field."""
    lines = [f"invalid roster {path}:"]
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {path}: {_describe_location(tuple(item['loc']), data)}: {message}")
    return "\n".join(lines)


def parse_roster(data: Any, source: str | Path = "<roster>") -> Roster:
    """Validate already-parsed YAML/JSON data as a roster; ``source`` names it in error messages."""
    path = Path(source)
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise RosterError(
            f"invalid roster {path}: the top level must be a mapping with a 'models:' list, got {kind}"
        )
    if "models" not in data:
        raise RosterError(f"invalid roster {path}: missing the top-level 'models:' list")
    try:
        roster = Roster.model_validate(data)
    except ValidationError as exc:
        raise RosterError(_format_validation_error(path, exc, data)) from None
    problems = _params_problems(roster, data)
    if problems:
        raise RosterError("\n".join([f"invalid roster {path}:"] + [f"  {path}: {p}" for p in problems]))
    return roster


def _params_problems(roster: Roster, data: Any) -> list[str]:
    """Check each entry's ``params`` against its backend kind's schema; one line per problem."""
    lines = []
    for index, spec in enumerate(roster.models):
        schema = PARAMS_BY_KIND.get(spec.backend)
        if schema is None:
            continue
        try:
            schema.model_validate(spec.params)
        except ValidationError as exc:
            for loc, message in params_problems(exc):
                where = _describe_location(("models", index, "params", *loc), data)
                lines.append(f"{where}: {message}")
    return lines


def load_roster(path: str | Path) -> Roster:
    """Read and validate the roster YAML file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RosterError(f"roster file not found: {path}") from None
    except OSError as exc:
        raise RosterError(f"cannot read roster file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RosterError(f"invalid YAML in roster {path}: {exc}") from None
    return parse_roster(data, path)
