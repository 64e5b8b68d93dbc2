"""The roster's models in the database: registering them once, and the sampling settings operators change."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models.roster import ModelSpec
from storage import repo
from storage.schema import ModelRow


def model_seed(spec: ModelSpec) -> repo.ModelSeed:
    """What the roster says about a model, for registering it in the database the first time."""
    return repo.ModelSeed(
        name=spec.name,
        display_name=spec.display_name or spec.name,
        organization=spec.organization,
        backend=spec.backend,
        enabled=spec.enabled,
        sampling_weight=spec.sampling_weight,
        license=spec.license,
        link=spec.link,
    )


def seed_roster(
    sessions: sessionmaker[Session], specs: Sequence[ModelSpec], now: datetime
) -> list[ModelSpec]:
    """Register every roster model the database does not know yet; return those it says are enabled.

    The database is the source of truth for a model's settings once it is registered (operators
    change them on the admin page or with ``python -m arena admin``), so a model disabled in the
    roster but enabled by an operator is loaded, and the other way round.
    """
    with sessions.begin() as db:
        repo.sync_models(db, [model_seed(s) for s in specs], now)
        enabled = dict(db.execute(select(ModelRow.name, ModelRow.enabled)).all())
    return [s for s in specs if enabled.get(s.name, s.enabled)]


@dataclass(frozen=True)
class ModelSampling:
    """A model's sampling settings as stored in the database (operators change them; see arena.admin)."""

    enabled: bool
    sampling_weight: float
    deprecated: bool

    @property
    def drawable(self) -> bool:
        return self.enabled and not self.deprecated and self.sampling_weight > 0


def choosable_models(
    specs: Mapping[str, ModelSpec], settings: Mapping[str, ModelSampling]
) -> list[tuple[str, str]]:
    """The loaded models a voter may pick for a side-by-side battle (enabled, not deprecated, per the
    database): (display name, name), in roster order."""
    return [
        (spec.display_name or spec.name, spec.name)
        for spec in specs.values()
        if (stored := settings.get(spec.name)) is not None and stored.enabled and not stored.deprecated
    ]
