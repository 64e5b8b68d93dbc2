"""Agreement between a judge (an LLM/VLM) and people on the same battles, as MT-Bench defines it.

Definitions follow Zheng et al. 2023, "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena" (and
FastChat's ``compute_agreement.py``):

- Votes are keyed by ``(question_id, unordered model pair, turn)``. A verdict whose model order is
  swapped relative to a vote has its winner flipped before the two are compared; both tie kinds
  ("tie", "tie (bothbad)") are the same outcome.
- Judge–human agreement compares the judge's verdict with **every** human vote on its key: each
  (verdict, vote) pair is one *comparison*. ``agreement_with_ties`` is the share of comparisons with
  the same outcome among three (A / B / tie; MT-Bench setup S1); ``agreement_without_ties`` drops the
  comparisons where either side says tie (setup S2).
- Human–human agreement takes all pairs of votes by different people on the same key.
- Position consistency: the judge sees each battle in both answer orders; the battle is consistent when
  both orders pick the same winner once the swapped order is mapped back. The final verdict is that
  winner; a disagreement becomes a tie (counted inconsistent); a missing or unparseable order gives no
  verdict.

Frames use the FastChat vocabulary (``model_a``, ``model_b``, ``winner`` in {"model_a", "model_b", "tie",
"tie (bothbad)"}); model columns may be plain strings or categoricals (as ``analysis.io`` loads them).
Randomness (the bootstrap) comes in as a ``numpy.random.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

WINNER_VALUES: tuple[str, ...] = ("model_a", "model_b", "tie", "tie (bothbad)")
#: Outcome labels of the confusion matrix: A = model_a won, B = model_b won, tie = either tie kind.
LABELS: tuple[str, str, str] = ("A", "B", "tie")
REQUIRED_COLUMNS: tuple[str, ...] = ("question_id", "model_a", "model_b", "winner")
VERDICT_LABELS: tuple[str, str, str] = ("A", "B", "tie")
ANSWER_ORDERS: tuple[str, str] = ("AB", "BA")

_WINNER_CODE: dict[str, int] = {"model_a": 0, "model_b": 1, "tie": 2, "tie (bothbad)": 2}
_FLIP = np.array([1, 0, 2])  # code seen from the other model order
_FIGURES: tuple[str, ...] = ("agreement_with_ties", "agreement_without_ties", "cohen_kappa")


# --------------------------------------------------------------------------------------------------
# Preparing vote frames
# --------------------------------------------------------------------------------------------------


def _key_text(value: Any) -> str:
    """A question id as text, so 81, 81.0 and "81" from different loaders match."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def _prepare(frame: pd.DataFrame, what: str, *, allow_missing_winner: bool) -> pd.DataFrame:
    """Validate a vote/verdict frame and bring it to canonical form.

    Returns columns ``qid, first, second, turn`` (the key, models sorted), ``flipped`` (the row lists
    the models in the other order), ``code`` (0 = model_a, 1 = model_b, 2 = tie in the row's own order;
    -1 = no winner), ``canon`` (the code in sorted-model order), ``judge`` and ``category`` (or None).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} are missing required column(s): {', '.join(missing)}")
    if len(frame) == 0:
        raise ValueError(f"no {what}: the frame is empty")

    a = frame["model_a"].astype(object)
    b = frame["model_b"].astype(object)
    qid = frame["question_id"].astype(object)
    for name, col in (("question_id", qid), ("model_a", a), ("model_b", b)):
        null = col.isna()
        if null.any():
            raise ValueError(f"{int(null.sum())} row(s) of the {what} have no {name}")
    a = a.map(str)
    b = b.map(str)
    same = (a == b).to_numpy()
    if same.any():
        raise ValueError(f"{int(same.sum())} row(s) of the {what} have model_a == model_b")

    winner = frame["winner"].astype(object)
    no_winner = winner.isna().to_numpy()
    if no_winner.any() and not allow_missing_winner:
        raise ValueError(f"{int(no_winner.sum())} row(s) of the {what} have no winner")
    known = winner.isin(WINNER_VALUES).to_numpy()
    bad = ~known & ~no_winner
    if bad.any():
        counts = winner[bad].astype(str).value_counts()
        shown = ", ".join(f"{v!r} ({n})" for v, n in counts.head(10).items())
        raise ValueError(
            f"unknown winner value(s) in {int(bad.sum())} row(s) of the {what}: {shown}; "
            f"expected one of {', '.join(WINNER_VALUES)}"
        )
    code = np.full(len(frame), -1, dtype=np.int64)
    code[known] = winner[known].map(_WINNER_CODE).to_numpy(dtype=np.int64)

    if "turn" in frame.columns:
        turn = pd.to_numeric(frame["turn"].astype(object), errors="coerce").fillna(1)
        turn = turn.astype(np.int64) if (turn % 1 == 0).all() else turn.astype(np.float64)
    else:
        turn = pd.Series(1, index=frame.index, dtype=np.int64)

    flipped = (a > b).to_numpy()
    canon = np.where(flipped & (code >= 0), _FLIP[np.clip(code, 0, 2)], code)
    out = pd.DataFrame(
        {
            "qid": qid.map(_key_text).to_numpy(),
            "first": np.where(flipped, b, a),
            "second": np.where(flipped, a, b),
            "turn": turn.to_numpy(),
            "flipped": flipped,
            "code": code,
            "canon": canon,
            "judge": frame["judge"].astype(object).to_numpy() if "judge" in frame.columns else None,
            "category": frame["category"].astype(object).to_numpy() if "category" in frame.columns else None,
        }
    )
    return out


_KEY = ["qid", "first", "second", "turn"]


def _select_judge(verdicts: pd.DataFrame, judge_name: str | None) -> pd.DataFrame:
    """Keep one judge's verdicts; several judges without ``judge_name`` is an error."""
    names = verdicts["judge"].dropna().unique()
    if judge_name is not None:
        keep = verdicts["judge"] == judge_name
        if not keep.any():
            shown = ", ".join(sorted(map(str, names))[:10]) or "none"
            raise ValueError(f"no verdicts by judge {judge_name!r}; judges present: {shown}")
        return verdicts.loc[keep].reset_index(drop=True)
    if len(names) > 1:
        shown = ", ".join(sorted(map(str, names))[:10])
        raise ValueError(f"the judge verdicts come from {len(names)} judges ({shown}); pass judge_name=")
    return verdicts


# --------------------------------------------------------------------------------------------------
# Matching and figures
# --------------------------------------------------------------------------------------------------


def match_votes(human: pd.DataFrame, judge: pd.DataFrame, *, judge_name: str | None = None) -> pd.DataFrame:
    """One row per (judge verdict, human vote) comparison on the same key.

    Keys are ``(question_id, unordered model pair, turn)``; ``turn`` defaults to 1 when a frame has
    no such column. Both outcomes are given in the orientation of the human vote: columns
    ``question_id, model_a, model_b, turn`` (as the person saw them), ``human`` and ``judge`` (labels
    "A", "B", "tie"), ``voter`` (the human frame's ``judge`` column, when present) and ``category``
    (from the human frame, else from the judge frame; None when neither has one).

    Judge rows without a winner are left out (``agreement`` reports how many). Raises ``ValueError``
    for missing columns, unknown winner values, several verdicts of one judge on one key, or
    verdicts from several judges when ``judge_name`` is not given.
    """
    h = _prepare(human, "human votes", allow_missing_winner=False)
    j, _ = _judge_verdicts(judge, judge_name)
    return _match(h, j)


def _judge_verdicts(judge: pd.DataFrame, judge_name: str | None) -> tuple[pd.DataFrame, int]:
    """Prepared verdicts of one judge that have a winner, and how many rows had none."""
    j_all = _select_judge(_prepare(judge, "judge verdicts", allow_missing_winner=True), judge_name)
    j = j_all.loc[j_all["code"] >= 0]
    if len(j) == 0:
        raise ValueError("no judge verdict has a winner")
    dup = j.duplicated(_KEY, keep=False)
    if dup.any():
        n_keys = int(j.loc[dup, _KEY].drop_duplicates().shape[0])
        raise ValueError(
            f"the judge gave several verdicts on {n_keys} key(s) (question_id, model pair, turn); "
            "combine the two answer orders first (combine_orders) or pass judge_name="
        )
    return j, int(len(j_all) - len(j))


def _match(h: pd.DataFrame, j: pd.DataFrame) -> pd.DataFrame:
    """Inner join of prepared human votes and judge verdicts on the canonical key."""
    jj = j[_KEY + ["canon", "category"]].rename(
        columns={"canon": "judge_canon", "category": "judge_category"}
    )
    m = h.merge(jj, on=_KEY, how="inner", sort=False)
    judge_code = np.where(m["flipped"].to_numpy(), _FLIP[m["judge_canon"].to_numpy()], m["judge_canon"])
    labels = np.asarray(LABELS, dtype=object)
    flipped = m["flipped"].to_numpy()
    category = m["category"].where(m["category"].notna(), m["judge_category"])
    return pd.DataFrame(
        {
            "question_id": m["qid"].to_numpy(),
            "model_a": np.where(flipped, m["second"], m["first"]),
            "model_b": np.where(flipped, m["first"], m["second"]),
            "turn": m["turn"].to_numpy(),
            "human": labels[m["code"].to_numpy()],
            "judge": labels[judge_code],
            "voter": m["judge"].to_numpy(),
            "category": category.to_numpy(),
        }
    )


def _confusion_counts(comparisons: pd.DataFrame) -> np.ndarray:
    """3x3 counts, rows human, columns judge, in ``LABELS`` order."""
    index = {label: i for i, label in enumerate(LABELS)}
    hi = comparisons["human"].map(index).to_numpy(dtype=np.int64)
    ji = comparisons["judge"].map(index).to_numpy(dtype=np.int64)
    return np.bincount(hi * 3 + ji, minlength=9).reshape(3, 3)


def _figures(cells: np.ndarray) -> dict[str, np.ndarray]:
    """Agreement figures from confusion counts of shape (..., 3, 3); NaN where undefined."""
    cells = np.asarray(cells, dtype=np.float64)
    n = cells.sum(axis=(-2, -1))
    diag = np.trace(cells, axis1=-2, axis2=-1)
    decisive = cells[..., :2, :2]
    n_decisive = decisive.sum(axis=(-2, -1))
    agree_decisive = decisive[..., 0, 0] + decisive[..., 1, 1]
    rows = cells.sum(axis=-1)
    cols = cells.sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_o = diag / n
        p_e = (rows * cols).sum(axis=-1) / (n * n)
        kappa = (p_o - p_e) / (1.0 - p_e)
        without = agree_decisive / n_decisive
    # p_e == 1: both sides always give the same single outcome; kappa is undefined
    kappa = np.where(np.isclose(p_e, 1.0), np.nan, kappa)
    return {
        "agreement_with_ties": p_o,
        "agreement_without_ties": without,
        "cohen_kappa": kappa,
        "n_without_ties": n_decisive,
    }


def cohen_kappa(confusion: np.ndarray | pd.DataFrame) -> float:
    """Cohen's kappa of a square confusion matrix of counts: (p_o - p_e) / (1 - p_e); NaN if p_e = 1."""
    cells = np.asarray(confusion, dtype=np.float64)
    if cells.ndim != 2 or cells.shape[0] != cells.shape[1] or cells.sum() <= 0:
        raise ValueError("cohen_kappa needs a square matrix of counts with a positive total")
    n = cells.sum()
    p_o = np.trace(cells) / n
    p_e = float((cells.sum(axis=1) * cells.sum(axis=0)).sum() / (n * n))
    return math.nan if math.isclose(p_e, 1.0) else float((p_o - p_e) / (1.0 - p_e))


def _json_number(x: float) -> float | None:
    """A float for JSON: NaN becomes None."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


@dataclass(frozen=True, eq=False)
class AgreementResult:
    """Judge–human agreement on matched comparisons (see the module docstring for definitions).

    ``intervals`` maps ``agreement_with_ties``, ``agreement_without_ties`` and ``cohen_kappa`` to 95%
    percentile bootstrap intervals (empty when ``bootstrap`` was 0). ``confusion`` has rows = human,
    columns = judge, labels A/B/tie in the human vote's model order. ``n_keys``: keys with at least one
    comparison; ``n_judge_unmatched``: verdicts with no human vote on their key; ``n_judge_missing``:
    judge rows without a winner (left out); both are None in the per-category results.
    """

    n: int
    agreement_with_ties: float
    n_without_ties: int
    agreement_without_ties: float
    cohen_kappa: float
    confusion: pd.DataFrame
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    bootstrap: int = 0
    n_keys: int = 0
    n_judge_unmatched: int | None = None
    n_judge_missing: int | None = None
    by_category: dict[str, AgreementResult] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (NaN becomes None)."""
        out: dict[str, Any] = {
            "n": int(self.n),
            "agreement_with_ties": _json_number(self.agreement_with_ties),
            "n_without_ties": int(self.n_without_ties),
            "agreement_without_ties": _json_number(self.agreement_without_ties),
            "cohen_kappa": _json_number(self.cohen_kappa),
            "ci": {name: [_json_number(lo), _json_number(hi)] for name, (lo, hi) in self.intervals.items()},
            "bootstrap": int(self.bootstrap),
            "n_keys": int(self.n_keys),
            "n_judge_unmatched": self.n_judge_unmatched,
            "n_judge_missing": self.n_judge_missing,
            "confusion": {
                str(h): {str(j): int(self.confusion.loc[h, j]) for j in self.confusion.columns}
                for h in self.confusion.index
            },
        }
        if self.by_category is not None:
            out["by_category"] = {name: res.to_dict() for name, res in self.by_category.items()}
        return out


def _result_from(
    comparisons: pd.DataFrame, bootstrap: int, rng: np.random.Generator, **extra: Any
) -> AgreementResult:
    """Figures, confusion matrix and bootstrap intervals of a set of comparisons."""
    cells = _confusion_counts(comparisons)
    point = _figures(cells)
    n = int(cells.sum())
    intervals: dict[str, tuple[float, float]] = {}
    if bootstrap > 0:
        # resampling the n comparisons with replacement = one multinomial draw over the 9 cells
        draws = rng.multinomial(n, cells.ravel() / n, size=bootstrap).reshape(bootstrap, 3, 3)
        boot = _figures(draws)
        for name in _FIGURES:
            values = boot[name][~np.isnan(boot[name])]
            if len(values) == 0:
                intervals[name] = (math.nan, math.nan)
            else:
                lo, hi = np.percentile(values, [2.5, 97.5])
                intervals[name] = (float(lo), float(hi))
    confusion = pd.DataFrame(
        cells, index=pd.Index(LABELS, name="human"), columns=pd.Index(LABELS, name="judge")
    )
    a, b = comparisons["model_a"], comparisons["model_b"]
    keys = pd.DataFrame(
        {
            "q": comparisons["question_id"],
            "lo": a.where(a < b, b),
            "hi": b.where(a < b, a),
            "t": comparisons["turn"],
        }
    )
    n_keys = int(len(keys.drop_duplicates()))
    return AgreementResult(
        n=n,
        agreement_with_ties=float(point["agreement_with_ties"]),
        n_without_ties=int(point["n_without_ties"]),
        agreement_without_ties=float(point["agreement_without_ties"]),
        cohen_kappa=float(point["cohen_kappa"]),
        confusion=confusion,
        intervals=intervals,
        bootstrap=int(bootstrap),
        n_keys=n_keys,
        **extra,
    )


def agreement(
    human: pd.DataFrame,
    judge: pd.DataFrame,
    *,
    bootstrap: int = 1000,
    rng: np.random.Generator | None = None,
    by_category: bool = False,
    judge_name: str | None = None,
) -> AgreementResult:
    """Agreement between a judge's verdicts and human votes on the same battles (MT-Bench definitions).

    ``human`` and ``judge``: frames with ``question_id, model_a, model_b, winner`` and optionally
    ``turn`` (default 1), ``judge`` (voter id resp. judge name) and ``category``. Each judge verdict is
    compared with every human vote on its key. ``bootstrap`` rounds resample the matched comparisons
    for 95% percentile intervals (0 = none); ``rng`` defaults to an unseeded generator, pass one for
    reproducible intervals. ``by_category`` adds one result per category (comparisons without a
    category are left out of that breakdown). ``judge_name`` selects one judge when the judge frame
    holds several.

    Raises ``ValueError`` for missing columns, unknown winners, duplicate verdicts on a key, or when no
    verdict matches a human vote.
    """
    if bootstrap < 0:
        raise ValueError(f"bootstrap rounds must be >= 0, got {bootstrap}")
    rng = np.random.default_rng() if rng is None else rng
    h = _prepare(human, "human votes", allow_missing_winner=False)
    j, n_missing = _judge_verdicts(judge, judge_name)
    comparisons = _match(h, j)
    if len(comparisons) == 0:
        raise ValueError(
            "no judge verdict matches a human vote on (question_id, model pair, turn); "
            f"{len(j)} verdict(s), {len(h)} vote(s)"
        )
    matched_keys = h[_KEY].drop_duplicates()
    n_unmatched = int(len(j) - j.merge(matched_keys, on=_KEY, how="inner").shape[0])

    categories: dict[str, AgreementResult] | None = None
    if by_category:
        categories = {}
        has_cat = comparisons["category"].notna()
        groups = comparisons.loc[has_cat].groupby(comparisons.loc[has_cat, "category"].map(str), sort=True)
        for name, part in groups:
            categories[str(name)] = _result_from(part, bootstrap, rng)
    return _result_from(
        comparisons,
        bootstrap,
        rng,
        n_judge_unmatched=n_unmatched,
        n_judge_missing=n_missing,
        by_category=categories,
    )


# --------------------------------------------------------------------------------------------------
# Human–human agreement
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HumanAgreement:
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (NaN becomes None)."""
        return {
            "n_keys": int(self.n_keys),
            "n_pairs": int(self.n_pairs),
            "agreement_with_ties": _json_number(self.agreement_with_ties),
            "n_pairs_without_ties": int(self.n_pairs_without_ties),
            "agreement_without_ties": _json_number(self.agreement_without_ties),
        }


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
    h = _prepare(human, "human votes", allow_missing_winner=False)
    h = h.assign(key=pd.factorize(pd.MultiIndex.from_frame(h[_KEY]))[0])
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


# --------------------------------------------------------------------------------------------------
# Position consistency (judge verdicts in both answer orders)
# --------------------------------------------------------------------------------------------------

_CARRIED = ("question_id", "model_a", "model_b", "turn", "judge", "category")
_MAP_BACK = {"A": "B", "B": "A", "tie": "tie"}
_VERDICT_WINNER = {"A": "model_a", "B": "model_b", "tie": "tie"}


def _battle_keys(verdicts: pd.DataFrame) -> list[str]:
    """Columns that identify a battle: battle_id, else question_id + model_a + model_b (+ turn)."""
    if "battle_id" in verdicts.columns:
        return ["battle_id"]
    needed = ["question_id", "model_a", "model_b"]
    missing = [c for c in needed if c not in verdicts.columns]
    if missing:
        raise ValueError(
            "per-order verdicts need a battle_id column or question_id, model_a and model_b "
            f"(missing: {', '.join(missing)})"
        )
    return needed + (["turn"] if "turn" in verdicts.columns else [])


def combine_orders(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Combine a judge's verdicts on both answer orders into one verdict per battle.

    ``verdicts``: one row per (battle, order) with ``battle_id`` (or ``question_id, model_a, model_b``
    and optionally ``turn``), ``answer_order`` ("AB": model_a's answer shown first, "BA": model_b's
    shown first) and ``verdict`` in {"A", "B", "tie", None}, where "A" is the answer the judge saw
    *first* in that order and None means missing or unparseable. Both rows of a battle must name its
    models in the same ``model_a``/``model_b`` order.

    Returns one row per battle: the key columns (plus ``question_id, model_a, model_b, turn, judge,
    category`` when present), ``verdict_ab`` and ``verdict_ba`` (the BA verdict mapped back, so "A" means
    model_a), ``status`` ("consistent", "inconsistent", "missing"), ``bias`` ("first"/"second" when an
    inconsistent judge picked the same position both times, else None) and ``winner`` in the FastChat
    vocabulary: the common winner, "tie" when the orders disagree, None when an order is missing. The
    frame can be passed to ``agreement`` as the judge verdicts (rows without a winner are skipped there).
    """
    for col in ("answer_order", "verdict"):
        if col not in verdicts.columns:
            raise ValueError(f"per-order verdicts are missing required column: {col}")
    if len(verdicts) == 0:
        raise ValueError("no per-order verdicts: the frame is empty")
    keys = _battle_keys(verdicts)
    df = verdicts.reset_index(drop=True).copy()
    for k in keys:
        df[k] = df[k].astype(object)
        if df[k].isna().any():
            raise ValueError(f"{int(df[k].isna().sum())} per-order verdict(s) have no {k}")

    order = df["answer_order"].astype(object).map(lambda v: v.strip().upper() if isinstance(v, str) else v)
    bad_order = ~order.isin(ANSWER_ORDERS)
    if bad_order.any():
        shown = ", ".join(sorted({repr(v) for v in df.loc[bad_order, "answer_order"]})[:10])
        raise ValueError(f"answer_order must be 'AB' or 'BA'; got {shown}")
    df["answer_order"] = order

    verdict = df["verdict"].astype(object)
    verdict = verdict.where(verdict.notna(), None)
    bad = verdict.notna() & ~verdict.isin(VERDICT_LABELS)
    if bad.any():
        shown = ", ".join(sorted({repr(v) for v in verdict[bad]})[:10])
        raise ValueError(f"unknown verdict value(s) {shown}; expected 'A', 'B', 'tie' or None (unparseable)")
    df["verdict"] = verdict

    dup = df.duplicated(keys + ["answer_order"], keep=False)
    if dup.any():
        raise ValueError(
            f"{int(dup.sum())} rows repeat a (battle, answer_order); expected one verdict per order"
        )

    carried = [c for c in _CARRIED if c in df.columns and c not in keys]
    df = df.sort_values("answer_order", kind="stable")  # AB rows first: carried values come from them
    battles = df.groupby(keys, sort=False, dropna=False)
    out = battles[carried].first() if carried else battles.size().to_frame().iloc[:, :0]
    ab = df.loc[df["answer_order"] == "AB"].set_index(keys)["verdict"]
    ba = df.loc[df["answer_order"] == "BA"].set_index(keys)["verdict"]
    out["verdict_ab"] = ab.reindex(out.index).astype(object)
    ba_raw = ba.reindex(out.index).astype(object)
    out["verdict_ba"] = ba_raw.map(_MAP_BACK).astype(object)
    out = out.reset_index()
    ba_raw = ba_raw.to_numpy()

    v_ab = out["verdict_ab"].where(out["verdict_ab"].notna(), None).to_numpy(dtype=object)
    v_ba = out["verdict_ba"].where(out["verdict_ba"].notna(), None).to_numpy(dtype=object)
    missing = np.array([x is None or y is None for x, y in zip(v_ab, v_ba, strict=True)], dtype=bool)
    same = np.array([x == y for x, y in zip(v_ab, v_ba, strict=True)], dtype=bool) & ~missing
    status = np.where(missing, "missing", np.where(same, "consistent", "inconsistent"))
    bias = [
        ("first" if a == "A" and r == "A" else "second" if a == "B" and r == "B" else None)
        if s == "inconsistent"
        else None
        for s, a, r in zip(status, v_ab, ba_raw, strict=True)
    ]
    winner = [
        _VERDICT_WINNER[a] if s == "consistent" else "tie" if s == "inconsistent" else None
        for s, a in zip(status, v_ab, strict=True)
    ]
    out["verdict_ab"] = pd.Series(v_ab, dtype=object)
    out["verdict_ba"] = pd.Series(v_ba, dtype=object)
    out["status"] = status.astype(object)
    out["bias"] = pd.Series(bias, dtype=object)
    out["winner"] = pd.Series(winner, dtype=object)
    return out


@dataclass(frozen=True)
class PositionConsistency:
    """How often a judge gives the same verdict in both answer orders.

    ``n_battles``: battles seen; ``n_missing``: battles where an order is missing or unparseable (no
    verdict); ``n_complete`` = the rest. ``consistency`` = ``n_consistent / n_complete``;
    ``biased_first`` / ``biased_second``: share of complete battles where the judge picked the answer
    shown first (resp. second) in both orders — MT-Bench's position-bias columns. NaN without complete
    battles.
    """

    n_battles: int
    n_complete: int
    n_consistent: int
    n_inconsistent: int
    n_missing: int
    consistency: float
    biased_first: float
    biased_second: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (NaN becomes None)."""
        return {
            "n_battles": self.n_battles,
            "n_complete": self.n_complete,
            "n_consistent": self.n_consistent,
            "n_inconsistent": self.n_inconsistent,
            "n_missing": self.n_missing,
            "consistency": _json_number(self.consistency),
            "biased_first": _json_number(self.biased_first),
            "biased_second": _json_number(self.biased_second),
        }


def position_consistency(verdicts: pd.DataFrame) -> PositionConsistency:
    """Share of battles whose two answer orders agree (see ``combine_orders`` for the input)."""
    combined = combine_orders(verdicts)
    status = combined["status"]
    n_consistent = int((status == "consistent").sum())
    n_inconsistent = int((status == "inconsistent").sum())
    n_complete = n_consistent + n_inconsistent
    first = int((combined["bias"] == "first").sum())
    second = int((combined["bias"] == "second").sum())
    return PositionConsistency(
        n_battles=len(combined),
        n_complete=n_complete,
        n_consistent=n_consistent,
        n_inconsistent=n_inconsistent,
        n_missing=int((status == "missing").sum()),
        consistency=n_consistent / n_complete if n_complete else math.nan,
        biased_first=first / n_complete if n_complete else math.nan,
        biased_second=second / n_complete if n_complete else math.nan,
    )


__all__ = [
    "LABELS",
    "AgreementResult",
    "HumanAgreement",
    "PositionConsistency",
    "agreement",
    "cohen_kappa",
    "combine_orders",
    "human_human_agreement",
    "match_votes",
    "position_consistency",
]
