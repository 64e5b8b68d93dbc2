"""Battle-frame checks and per-pair aggregation: the winner vocabulary, ``validate_battles``, the
``Aggregated`` pair counts (``aggregate``), battles per model and the comparison graph's connected groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from storage.vocabulary import WIN_A, WIN_B, WINNERS

REQUIRED_COLUMNS: tuple[str, ...] = ("model_a", "model_b", "winner")


def validate_battles(df: pd.DataFrame, *, self_battles: Literal["error", "drop"] = "error") -> pd.DataFrame:
    """Check a battle frame and return a clean copy (fresh index) that the rating functions accept.

    Raises ``ValueError`` for: no rows, missing ``model_a``/``model_b``/``winner`` columns, missing
    model names, winner values outside the FastChat vocabulary (the message lists the bad values and
    how many rows carry them), and rows where a model battles itself. ``self_battles="drop"`` removes
    such rows instead (WildVision-Bench's judge file contains baseline-vs-baseline rows, which the
    published fit skips).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"battles are missing required column(s): {', '.join(missing)}")
    if len(df) == 0:
        raise ValueError("no battles: the input is empty")

    out = df.reset_index(drop=True).copy()
    for col in ("model_a", "model_b"):
        null = out[col].isna()
        if null.any():
            raise ValueError(f"{int(null.sum())} battle row(s) have no {col}")

    bad = ~out["winner"].isin(WINNERS)
    if bad.any():
        counts = out.loc[bad, "winner"].astype(str).value_counts(dropna=False)
        shown = ", ".join(f"{value!r} ({n})" for value, n in counts.head(10).items())
        more = f" and {len(counts) - 10} more" if len(counts) > 10 else ""
        raise ValueError(
            f"unknown winner value(s) in {int(bad.sum())} row(s): {shown}{more}; "
            f"expected one of {', '.join(WINNERS)}"
        )

    same = _same_model(out["model_a"], out["model_b"])
    if same.any():
        if self_battles == "drop":
            out = out.loc[~same].reset_index(drop=True)
            if len(out) == 0:
                raise ValueError("no battles left after dropping rows where model_a == model_b")
        else:
            names = ", ".join(sorted(map(str, out.loc[same, "model_a"].unique()))[:5])
            raise ValueError(
                f"{int(same.sum())} row(s) have model_a == model_b (e.g. {names}); "
                "a model cannot battle itself (drop those rows: self_battles='drop', CLI --drop-self-battles)"
            )
    return out


@dataclass(frozen=True)
class Aggregated:
    """Battle outcomes counted per unordered model pair.

    ``models`` is sorted; pair ``k`` is ``(models[a[k]], models[b[k]])`` with ``a[k] < b[k]``, and
    ``wins_a``/``wins_b``/``ties`` count how often the first/second model won or the battle was a tie
    (both tie kinds), whatever side each model was shown on.
    """

    models: list[str]
    a: np.ndarray
    b: np.ndarray
    wins_a: np.ndarray
    wins_b: np.ndarray
    ties: np.ndarray

    @classmethod
    def from_cells(cls, models: list[str], keys: np.ndarray, cells: np.ndarray) -> Aggregated:
        """Counts from pair keys ``a * len(models) + b`` (``a < b``) and their cells (pairs x 3:
        first model won, second won, tie)."""
        m = len(models)
        return cls(
            models=models,
            a=(keys // m).astype(np.int64),
            b=(keys % m).astype(np.int64),
            wins_a=np.ascontiguousarray(cells[:, 0]),
            wins_b=np.ascontiguousarray(cells[:, 1]),
            ties=np.ascontiguousarray(cells[:, 2]),
        )

    @property
    def n_battles(self) -> int:
        """Total number of battles counted."""
        return int(self.wins_a.sum() + self.wins_b.sum() + self.ties.sum())

    def to_frame(self) -> pd.DataFrame:
        """The counts as a readable frame (one row per pair)."""
        names = np.asarray(self.models, dtype=object)
        return pd.DataFrame(
            {
                "model_a": names[self.a],
                "model_b": names[self.b],
                "wins_a": self.wins_a,
                "wins_b": self.wins_b,
                "ties": self.ties,
            }
        )

    def num_battles(self) -> pd.Series:
        """Battles per model (each battle counts for both of its models)."""
        n = self.wins_a + self.wins_b + self.ties
        per_model = np.bincount(self.a, weights=n, minlength=len(self.models)) + np.bincount(
            self.b, weights=n, minlength=len(self.models)
        )
        return pd.Series(
            per_model.astype(np.int64), index=pd.Index(self.models, name="model"), name="num_battles"
        )


def _shared_categories(a: pd.Series, b: pd.Series) -> pd.Index | None:
    """The categories of two categorical columns when they are the same (codes then compare)."""
    if (
        isinstance(a.dtype, pd.CategoricalDtype)
        and isinstance(b.dtype, pd.CategoricalDtype)
        and a.cat.categories.equals(b.cat.categories)
    ):
        return a.cat.categories
    return None


def _same_model(a: pd.Series, b: pd.Series) -> pd.Series:
    """Rows where model_a equals model_b, for plain and categorical columns alike."""
    if _shared_categories(a, b) is not None:
        ca, cb = a.cat.codes.to_numpy(), b.cat.codes.to_numpy()
        return pd.Series((ca == cb) & (ca >= 0), index=a.index)
    if isinstance(a.dtype, pd.CategoricalDtype) or isinstance(b.dtype, pd.CategoricalDtype):
        return pd.Series(a.to_numpy(dtype=object) == b.to_numpy(dtype=object), index=a.index)
    return a == b


def model_codes(df: pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Sorted model names of a validated battle frame and each row's model_a / model_b index into them.

    Same result as ``sorted(set(model_a) | set(model_b))`` plus a dict lookup per row, but hashed once
    per distinct name (categorical columns need no hashing at all).
    """
    a, b = df["model_a"], df["model_b"]
    cats = _shared_categories(a, b)
    if cats is not None:
        ca = a.cat.codes.to_numpy().astype(np.int64)
        cb = b.cat.codes.to_numpy().astype(np.int64)
        names_index = cats
    else:
        codes, uniques = pd.factorize(pd.concat([a, b], ignore_index=True), use_na_sentinel=True)
        ca, cb = codes[: len(a)].astype(np.int64), codes[len(a) :].astype(np.int64)
        names_index = pd.Index(uniques)
    if len(ca) and min(int(ca.min()), int(cb.min())) < 0:
        raise ValueError("battle rows without a model name: validate the battles first")
    k = len(names_index)
    present = np.flatnonzero(np.bincount(ca, minlength=k) + np.bincount(cb, minlength=k))
    names = names_index[present].tolist()
    order = sorted(range(len(names)), key=names.__getitem__)
    remap = np.full(k, -1, dtype=np.int64)
    remap[present[order]] = np.arange(len(order), dtype=np.int64)
    return [names[i] for i in order], remap[ca], remap[cb]


#: Count pairs in a dense models x models table up to this size (else sort the pair keys).
_DENSE_PAIR_LIMIT = 1 << 20


def aggregate(df: pd.DataFrame) -> Aggregated:
    """Count wins and ties per unordered model pair of a validated battle frame."""
    models, ia, ib = model_codes(df)
    winner = df["winner"]
    a_won = (winner == WIN_A).to_numpy(dtype=bool, na_value=False)
    b_won = (winner == WIN_B).to_numpy(dtype=bool, na_value=False)

    swap = ia > ib
    m = len(models)
    pair = np.minimum(ia, ib) * m + np.maximum(ia, ib)
    # outcome class per battle: 0 = first model of the pair (lower index) won, 1 = second won, 2 = tie
    outcome = np.where(a_won | b_won, np.where(swap, a_won, b_won), 2)
    if m * m <= _DENSE_PAIR_LIMIT:
        counts = np.bincount(pair * 3 + outcome, minlength=3 * m * m).reshape(m * m, 3)
        keys = np.flatnonzero(counts.any(axis=1))
        counts = counts[keys]
    else:
        keys, inverse = np.unique(pair, return_inverse=True)
        counts = np.bincount(inverse * 3 + outcome, minlength=3 * len(keys)).reshape(len(keys), 3)
    return Aggregated.from_cells(models, keys, counts.astype(np.int64))


def num_battles(df: pd.DataFrame) -> pd.Series:
    """Number of battles each model took part in (index = model, sorted by name)."""
    cats = _shared_categories(df["model_a"], df["model_b"])
    if cats is not None:
        codes = np.concatenate([df["model_a"].cat.codes.to_numpy(), df["model_b"].cat.codes.to_numpy()])
        per_cat = np.bincount(codes[codes >= 0].astype(np.int64), minlength=len(cats))
        present = np.flatnonzero(per_cat)
        names = cats[present].tolist()
        order = sorted(range(len(names)), key=names.__getitem__)
        return pd.Series(
            per_cat[present[order]].astype(np.int64),
            index=pd.Index([names[i] for i in order], name="model"),
            name="num_battles",
        )
    counts = pd.concat([df["model_a"], df["model_b"]], ignore_index=True).value_counts()
    counts = counts.sort_index().astype(np.int64)
    counts.index.name = "model"
    counts.name = "num_battles"
    return counts


def connected_groups(agg: Aggregated) -> list[list[str]]:
    """Groups of models linked directly or indirectly by at least one battle, largest first."""
    m = len(agg.models)
    played = (agg.wins_a + agg.wins_b + agg.ties) > 0
    graph = coo_matrix((np.ones(int(played.sum())), (agg.a[played], agg.b[played])), shape=(m, m))
    n_comp, labels = connected_components(graph, directed=False)
    groups = [[agg.models[i] for i in np.flatnonzero(labels == c)] for c in range(n_comp)]
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def check_connected(agg: Aggregated) -> None:
    """Raise if the comparison graph splits into groups whose ratings cannot be compared."""
    groups = connected_groups(agg)
    if len(groups) > 1:

        def show(group: list[str]) -> str:
            head = ", ".join(group[:6])
            return "{" + head + (f", ... ({len(group)} models)" if len(group) > 6 else "") + "}"

        raise ValueError(
            f"the comparison graph is disconnected into {len(groups)} groups that never battled each "
            f"other, so their ratings are not comparable: {'; '.join(show(g) for g in groups)}"
        )
