"""Human–human agreement as MT-Bench defines it: all pairs of votes by different people on one key."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.vote_keys import KEY_COLUMNS, JsonSummary, prepare_votes


@dataclass(frozen=True)
class HumanAgreement(JsonSummary):
    """MT-Bench human–human agreement: all pairs of votes by different people on the same key.

    ``n_keys``: keys with at least one such pair. ``n_pairs`` / ``agreement_with_ties`` count all
    pairs (three outcomes); ``n_pairs_without_ties`` / ``agreement_without_ties`` only the pairs where
    neither vote is a tie. Agreements are NaN when there is no pair.
    """

    n_keys: int
    n_pairs: int
    agreement_with_ties: float
    n_pairs_without_ties: int
    agreement_without_ties: float


def _pair_counts(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group: all pairs, agreeing pairs, non-tie pairs and agreeing non-tie pairs."""
    counts = pd.crosstab([df[c] for c in by], df["canon"]).reindex(columns=[0, 1, 2], fill_value=0)
    c = counts.to_numpy(dtype=np.int64)

    def pairs(x: np.ndarray) -> np.ndarray:
        return x * (x - 1) // 2

    return pd.DataFrame(
        {
            "all": pairs(c.sum(axis=1)),
            "agree": pairs(c).sum(axis=1),
            "decisive": pairs(c[:, 0] + c[:, 1]),
            "agree_decisive": pairs(c[:, 0]) + pairs(c[:, 1]),
        },
        index=counts.index,
    )


def human_human_agreement(human: pd.DataFrame) -> HumanAgreement:
    """Agreement among people who voted on the same key (MT-Bench's human–human figure).

    Every pair of votes on a ``(question_id, unordered model pair, turn)`` key counts once, with
    swapped model orders aligned and both tie kinds equal. When the frame has a ``judge`` column (the
    voter), pairs of votes by the same voter are left out: MT-Bench compares different individuals.
    """
    h = prepare_votes(human, "human votes", allow_missing_winner=False)
    h = h.assign(key=pd.factorize(pd.MultiIndex.from_frame(h[KEY_COLUMNS]))[0])
    per_key = _pair_counts(h, ["key"])
    totals = per_key.sum()
    keys_with_pairs = per_key["all"] > 0
    if "judge" in human.columns and h["judge"].notna().any():
        voted = h.loc[h["judge"].notna()].assign(voter=lambda d: d["judge"].map(str))
        same = _pair_counts(voted, ["key", "voter"])
        totals = totals - same.sum()
        per_key_other = per_key["all"].sub(same.groupby(level="key")["all"].sum(), fill_value=0)
        keys_with_pairs = per_key_other > 0
    n_all, n_dec = int(totals["all"]), int(totals["decisive"])
    return HumanAgreement(
        n_keys=int(keys_with_pairs.sum()),
        n_pairs=n_all,
        agreement_with_ties=float(totals["agree"] / n_all) if n_all else math.nan,
        n_pairs_without_ties=n_dec,
        agreement_without_ties=float(totals["agree_decisive"] / n_dec) if n_dec else math.nan,
    )


__all__ = ["HumanAgreement", "human_human_agreement"]
