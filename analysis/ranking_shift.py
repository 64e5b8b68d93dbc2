"""How a leaderboard changes on a subset of prompts: all prompts vs one tag (e.g. the prompts that need
their image, MMStar's criterion), and one leaderboard per category (VisionArena).

Battles carry their tags in a ``category`` column (``analysis.io.load_battles_db(categories=True)``
joins a battle's tags with '+'; a battle file may hold one category per record). Pure functions over
battle frames; the report (``python -m analysis report``) shows their tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from analysis.ratings import ratings_table


def tagged(df: pd.DataFrame, tag: str) -> np.ndarray:
    """Which battles carry ``tag`` in their ``category`` column (tags joined with '+'); all False without it."""
    if "category" not in df.columns:
        return np.zeros(len(df), dtype=bool)
    return np.array(
        [isinstance(v, str) and tag in v.split("+") for v in df["category"].astype(object)], dtype=bool
    )


@dataclass(frozen=True)
class RankingShift:
    """The subset's leaderboard beside the full one.

    ``table``: one row per model rated on both (``rating_all``, ``ci_lower_all``, ``ci_upper_all``,
    ``rank_all``, the same with ``_subset``, ``shift`` = subset − all rating, and ``moved``: the two 95%
    intervals do not overlap, i.e. the model moved by more than its intervals allow). ``spearman``:
    rank correlation of the two ratings over those models (NaN under 3 models). Without an anchor the
    subset ratings are shifted so that both have the same mean over the shared models.
    """

    tag: str
    n_battles: int
    n_subset: int
    spearman: float
    table: pd.DataFrame

    @property
    def movers(self) -> list[str]:
        return [str(m) for m in self.table.loc[self.table["moved"], "model"]]


def ranking_shift(
    clean: pd.DataFrame,
    tag: str,
    *,
    bootstrap: int,
    seed: int,
    anchor: tuple[str, float] | None = None,
    full: pd.DataFrame | None = None,
) -> RankingShift:
    """The Bradley–Terry leaderboard on battles tagged ``tag`` against the one on all battles.

    ``full`` is the all-battles table when already computed (same ``bootstrap``, ``seed`` and ``anchor``).
    Raises ValueError when fewer than two models have tagged battles.
    """
    subset = clean.loc[tagged(clean, tag)].reset_index(drop=True)
    if subset.empty:
        raise ValueError(f"no battles tagged {tag!r}")
    if full is None:
        full = ratings_table(
            clean, method="bt", bootstrap=bootstrap, rng=np.random.default_rng(seed), anchor=anchor
        )
    sub_anchor = (
        anchor
        if anchor is not None and anchor[0] in set(subset["model_a"]) | set(subset["model_b"])
        else None
    )
    part = ratings_table(
        subset, method="bt", bootstrap=bootstrap, rng=np.random.default_rng(seed), anchor=sub_anchor
    )
    cols = ["model", "rating", "ci_lower", "ci_upper"]
    both = full[cols].merge(part[cols], on="model", suffixes=("_all", "_subset"))
    if sub_anchor is None and len(both):
        offset = float(both["rating_all"].mean() - both["rating_subset"].mean())
        for c in ("rating_subset", "ci_lower_subset", "ci_upper_subset"):
            both[c] = both[c] + offset
    both["rank_all"] = both["rating_all"].rank(ascending=False, method="min").astype(int)
    both["rank_subset"] = both["rating_subset"].rank(ascending=False, method="min").astype(int)
    both["shift"] = both["rating_subset"] - both["rating_all"]
    both["moved"] = (both["ci_lower_subset"] > both["ci_upper_all"]) | (
        both["ci_upper_subset"] < both["ci_lower_all"]
    )
    both = both.sort_values("rating_all", ascending=False, kind="stable").reset_index(drop=True)
    rho = math.nan
    if len(both) >= 3:
        rho = float(spearmanr(both["rating_all"], both["rating_subset"]).statistic)
    return RankingShift(tag=tag, n_battles=len(clean), n_subset=len(subset), spearman=rho, table=both)


def category_leaderboards(
    clean: pd.DataFrame, tags: Sequence[str], *, min_battles: int = 1, anchor: tuple[str, float] | None = None
) -> pd.DataFrame:
    """Bradley–Terry ratings (point estimates) per tag: one row per model, one column per tag with at
    least ``min_battles`` tagged battles, headed ``TAG (n=BATTLES)``; NaN where a model has none."""
    columns: dict[str, pd.Series] = {}
    for tag in tags:
        subset = clean.loc[tagged(clean, tag)].reset_index(drop=True)
        if len(subset) < max(min_battles, 1):
            continue
        try:
            table = ratings_table(subset, method="bt", bootstrap=0, rng=np.random.default_rng(0), anchor=None)
        except ValueError:
            continue
        columns[f"{tag} (n={len(subset)})"] = pd.Series(
            table["rating"].to_numpy(), index=table["model"].astype(str)
        )
    if not columns:
        return pd.DataFrame()
    out = pd.DataFrame(columns)
    out.index.name = "model"
    return out.sort_index()


__all__ = ["RankingShift", "category_leaderboards", "ranking_shift", "tagged"]
