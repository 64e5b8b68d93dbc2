"""Battle frames built from the vote columns ``storage.counts.vote_columns`` reads, chunk by chunk.

``analysis.io.load_battles_db`` turns each chunk of driver rows into compact arrays at once
(``column_arrays``), then joins the chunks into the usual battle frame (``frame_from_columns``): model
names and winners as categoricals, in vote order, with no dict or record object per vote.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from analysis.io import BATTLE_COLUMNS, battles_frame
from storage.vocabulary import ANONY


def column_arrays(chunk: tuple[Any, ...]) -> tuple[Any, ...]:
    """One chunk of ``vote_columns`` as compact arrays (the driver's row objects can then go)."""
    vote_id, battle_id, model_a, model_b, winner, voter, mode, tstamp, turns = chunk
    return (
        np.array(vote_id, dtype=np.int64),
        np.array(battle_id, dtype=object),
        np.array(model_a, dtype=np.int64),
        np.array(model_b, dtype=np.int64),
        pd.Categorical(winner),
        np.array(voter, dtype=object),
        np.array(mode, dtype=object) == ANONY,
        np.array(tstamp, dtype=np.float64),
        np.array(turns, dtype=np.int64),
    )


def frame_from_columns(chunks: list[tuple[Any, ...]], names: Mapping[int, str]) -> pd.DataFrame:
    """The battle frame (``BATTLE_COLUMNS``, dtypes as ``load_battles_file``) of ``column_arrays``
    chunks, in vote order (time, then vote id)."""
    if not chunks:
        return battles_frame([])
    tstamp = np.concatenate([c[7] for c in chunks])
    order = np.lexsort((np.concatenate([c[0] for c in chunks]), tstamp))

    def joined(i: int) -> np.ndarray:
        return np.concatenate([c[i] for c in chunks])[order]

    ia, ib = joined(2), joined(3)
    present = np.unique(np.concatenate([ia, ib]))
    labels = [names[int(i)] for i in present]
    ranks = sorted(range(len(labels)), key=labels.__getitem__)
    code_of = {int(present[k]): rank for rank, k in enumerate(ranks)}
    model_dtype = pd.CategoricalDtype(pd.Index([labels[k] for k in ranks]))
    winners = pd.api.types.union_categoricals([c[4] for c in chunks], sort_categories=True)
    voter = joined(5)
    voter[pd.isna(voter)] = "arena_user"
    turns = joined(8)
    return pd.DataFrame(
        {
            "question_id": pd.Series(joined(1), dtype=object),
            "model_a": pd.Categorical.from_codes(_codes(ia, present, code_of), dtype=model_dtype),
            "model_b": pd.Categorical.from_codes(_codes(ib, present, code_of), dtype=model_dtype),
            "winner": pd.Categorical.from_codes(winners.codes[order], dtype=winners.dtype),
            "judge": pd.Series(voter, dtype=object),
            "turn": np.where(turns > 0, turns, 1),
            "anony": joined(6).astype(bool),
            "tstamp": tstamp[order],
        },
        columns=list(BATTLE_COLUMNS),
    )


def _codes(ids: np.ndarray, present: np.ndarray, code_of: Mapping[int, int]) -> np.ndarray:
    """Category codes of model ids: position of each id's name in the sorted name list."""
    remap = np.array([code_of[int(i)] for i in present], dtype=np.int64)
    return remap[np.searchsorted(present, ids)]


__all__ = ["column_arrays", "frame_from_columns"]
