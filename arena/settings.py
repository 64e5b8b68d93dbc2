"""The arena's settings: one typed object, read from the command line and ``ARENA_*`` variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from arena.sampling import PolicyName

DEFAULT_ROSTER = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


class ArenaSettings(BaseSettings):
    """Everything an operator can set. Environment variables use the ``ARENA_`` prefix (ARENA_DB, …)."""

    model_config = SettingsConfigDict(env_prefix="ARENA_", extra="ignore")

    config: Path = Field(DEFAULT_ROSTER, description="roster YAML listing the models")
    db: str = Field("sqlite:///arena.db", description="SQLAlchemy URL (SQLite file or PostgreSQL)")
    host: str = "127.0.0.1"
    port: int = Field(7860, ge=0, le=65535)
    data_dir: Path = Field(Path("arena_data"), description="where uploaded images are kept")
    image_store: str | None = Field(
        None,
        description=(
            "the shared image store: a directory, or an fsspec URL such as s3://bucket/images (needs the "
            "fsspec extra); default data_dir/images. Every arena process of one database uses the same"
        ),
    )
    cache_dir: Path = Field(Path.home() / ".cache" / "vlm-arena", description="built demo models")
    seed: int | None = Field(None, description="seed for pair sampling (tests, reproducible demos)")
    max_images: int = Field(4, ge=0, le=16, description="images per turn")
    max_image_mb: int = Field(15, ge=1, description="largest accepted upload, MiB")
    max_image_frames: int = Field(
        100, ge=1, description="frames an animated upload may have (only the first is kept)"
    )
    max_image_aspect: float = Field(
        50.0, ge=1, description="largest ratio of an upload's long side to its short side"
    )
    max_prompt_chars: int = Field(4000, ge=1)
    max_turns: int = Field(8, ge=1, description="turns per battle")
    response_timeout_s: float = Field(300.0, gt=0, description="longest a model may take to answer")
    concurrency: int = Field(32, ge=1, description="battles generating at once, across all sessions")
    ip_salt: SecretStr | None = Field(
        None, description="secret salt for hashing voters' IPs; generated and kept in data_dir if unset"
    )
    secret_key: SecretStr | None = Field(
        None,
        description=(
            "key that signs the battle tokens browsers keep across reloads; generated and kept in "
            "data_dir/secret_key if unset (give every arena process of one database the same key)"
        ),
    )
    battle_token_ttl_h: float = Field(
        24.0, gt=0, description="hours a browser's battle token stays valid (a reload within it resumes)"
    )
    db_connect_wait_s: float = Field(
        10.0,
        ge=0,
        description="how long a new database connection waits for a PostgreSQL server that refuses it (a restart)",
    )
    leaderboard_refresh_s: float = Field(
        60.0, gt=0, description="seconds between checks for new votes that refresh the leaderboard snapshots"
    )
    leaderboard_worker: bool = Field(
        True,
        description="compute leaderboard snapshots in a worker process (False: in a thread of the web process)",
    )
    leaderboard_min_votes: int = Field(
        30, ge=1, description="anonymous votes a model needs before the leaderboard shows its rating"
    )
    health_interval_s: float = Field(
        60.0, ge=0, description="seconds between health checks of idle or unhealthy models (0: start-up only)"
    )
    health_failures: int = Field(
        3, ge=1, description="failed requests in a row that take a model out of battles until a check passes"
    )
    model_refresh_s: float = Field(
        5.0, gt=0, description="seconds between re-reads of the models' admin settings (enabled, weight)"
    )
    admin_user: str = Field("admin", min_length=1, description="user name for signing in at /admin")
    admin_password: SecretStr | None = Field(
        None, description="admin password; generated once and kept in data_dir/admin_password if unset"
    )
    admin_session_s: int = Field(8 * 3600, ge=60, description="how long an admin sign-in lasts, seconds")
    max_battles_per_hour: int = Field(
        60,
        ge=0,
        description="new battles a voter may start per hour, by session and by IP hash (0: no limit)",
    )
    max_votes_per_day: int = Field(
        500, ge=0, description="votes a voter may cast per 24 hours, by session and by IP hash (0: no limit)"
    )
    moderation: Literal["none", "blocklist", "openai", "local"] = Field(
        "none", description="moderation of prompts, images and answers: none, blocklist, openai or local"
    )
    moderation_blocklist: Path | None = Field(
        None, description="blocklist moderation: a file of regular expressions, one per line"
    )
    moderation_url: str | None = Field(
        None, description="openai moderation: base URL of an OpenAI-compatible server (…/v1)"
    )
    moderation_api_key: SecretStr | None = Field(None, description="openai moderation: API key, if any")
    moderation_model: str = Field("omni-moderation-latest", description="openai moderation: model name")
    moderation_threshold: float = Field(
        0.5, ge=0, le=1, description="local moderation: score at or above which an image is flagged"
    )
    moderation_timeout_s: float = Field(10.0, gt=0, description="longest a moderation check may take")
    moderation_fail_closed: bool = Field(
        False, description="refuse a request when the moderation provider cannot be reached (default: allow)"
    )
    terms_file: Path | None = Field(
        None, description="Markdown file with the terms of use voters accept (default: the built-in terms)"
    )
    terms_version: str | None = Field(
        None, description="version recorded with each acceptance (default: a hash of the terms' text)"
    )
    sampling_policy: PolicyName = Field(
        "weighted",
        description=(
            "how battles choose their pair: weighted (by the models' sampling weights), uniform (every "
            "pair alike), or active (the pairs whose votes most shrink the wide rating intervals, then "
            "those that separate the top models, read from the leaderboard snapshot)"
        ),
    )
    sampling_boost: float = Field(
        5.0, gt=0, description="a new model's weight is multiplied by this until it has enough votes"
    )
    sampling_boost_until_votes: int = Field(
        3000, ge=0, description="counted votes after which a model's new-model boost ends"
    )
    sampling_target_boost: float = Field(
        3.0,
        gt=0,
        description="how much more likely a pair is when one model lists the other in battle_targets",
    )
    sampling_min_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description=(
            "fairness floor: no drawable model is in fewer battles than this fraction of its uniform share "
            "(2/n of battles with n models); 0.5 = at least half"
        ),
    )
    sampling_interval_target: float = Field(
        25.0,
        gt=0,
        description=(
            "active: full width (upper - lower, rating points) of the 95% interval the median model should "
            "reach before votes go to separating the top models"
        ),
    )
    sampling_top_k: int = Field(
        5, ge=0, description="active: how many top models should end in order with separated intervals"
    )
    sampling_explore: float = Field(
        0.1, ge=0, le=1, description="active: share of battles whose pair is drawn uniformly (exploration)"
    )
