"""Bradley–Terry bootstrap (``bootstrap_bt``): one multinomial draw of the pair counts per round (on a
worker thread for big runs), all rounds fitted together by a preconditioned batched iteration, with
a one-round fit for any round that does not settle.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Unpack

import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix
from tqdm import tqdm

from analysis.aggregation import Aggregated, check_connected
from analysis.bt_fit import POLISH_MAX_MODELS, fit_bt_units
from analysis.fitting import (
    DEFAULT_L2_C,
    Anchor,
    BTPairs,
    RatingScale,
    ScaleKeywords,
    cell_probabilities,
    check_rounds,
    single_thread_blas,
    split_cells,
)


def bootstrap_bt(
    agg: Aggregated,
    n_rounds: int,
    rng: np.random.Generator,
    *,
    progress: bool = False,
    anchor: Anchor | None = None,
    l2_c: float = DEFAULT_L2_C,
    **scale: Unpack[ScaleKeywords],
) -> pd.DataFrame:
    """Bootstrap BT ratings: ``n_rounds`` × models, columns ordered by median rating (descending).

    Each round resamples all battles with replacement, done as one multinomial draw over the
    (pair, outcome) cells with the observed cell frequencies as probabilities and the number of
    battles as n. Every round is fitted to its maximum-likelihood optimum (the same answer as fitting
    the round on its own with ``fit_bt``), all rounds side by side (see ``_bootstrap_units``). A round
    in which some group of models loses all links to the rest is still fitted (the L2 penalty keeps it
    finite), as FastChat does; this is rare unless a model has very few battles. ``anchor``, ``l2_c``
    and the scale keywords are those of ``fit_bt``.
    """
    check_rounds(n_rounds)
    rs = RatingScale(**scale, anchor=anchor)
    rs.check_anchor(agg.models)
    check_connected(agg)
    with single_thread_blas():
        rows = _bootstrap_units(agg, n_rounds, rng, base=rs.base, l2_c=l2_c, progress=progress)
    return rs.bootstrap_frame(rows, agg.models)


#: A batched round counts as fitted once its last step, and the estimated distance still to go, are
#: below this (units of ``scale``: 1e-10 x 400 = 4e-8 rating points).
_BOOT_TOL = 1e-10
#: Iterations of the batched fit before a round is handed to the one-round fit instead.
_BOOT_MAX_ITER = 60
#: Pair x round cells per batch (memory of the work arrays: ~8 bytes x this, a few times over).
_BOOT_CHUNK_CELLS = 1 << 19
#: Draw the multinomials on a worker thread when a run samples at least this many cells in all.
_BOOT_THREAD_CELLS = 1 << 21


def _bootstrap_units(
    agg: Aggregated,
    n_rounds: int,
    rng: np.random.Generator,
    *,
    base: float,
    l2_c: float,
    progress: bool = False,
) -> np.ndarray:
    """Bootstrap strengths in units of ``scale`` (each row mean 0), one row per round.

    The draws are ``rng.multinomial(total, pvals)`` for round 0, 1, ... in order, as a plain loop would
    make them (big runs make them on a worker thread, one batch ahead, while this thread fits). Rounds
    are fitted in batches by the iteration ``x <- x - P grad_r(x)``, where ``P`` is the inverse Hessian
    of the full data at the point estimate: a resample's Hessian differs from it by a few percent, so
    each iteration gains about a digit, with no per-round linear algebra and no exp() per pair (a pair's
    win probability is ``e_a / (e_a + e_b)`` with ``e = exp(alpha * x)`` per model). A round that does
    not settle quickly (a resample that drops most of a model's battles) is fitted on its own with
    ``fit_bt_units`` instead; both give the optimum to far better than 1e-6 rating points.
    """
    m, k = len(agg.models), len(agg.a)
    total, pvals = cell_probabilities(agg)
    chunk = max(1, min(n_rounds, _BOOT_CHUNK_CELLS // max(k, 1)))
    sizes = [min(chunk, n_rounds - start) for start in range(0, n_rounds, chunk)]
    threaded = n_rounds * 3 * k >= _BOOT_THREAD_CELLS
    rows = np.empty((n_rounds, m))
    with _multinomial_draws(rng, total, pvals, sizes, threaded) as draws:
        point = fit_bt_units(agg, base=base, l2_c=l2_c)
        batch = _BatchFit.build(agg, point, base=base, l2_c=l2_c)
        bar = tqdm(total=n_rounds, desc="bootstrap", disable=not progress, leave=False)
        start = 0
        for counts in draws:
            r = len(counts)
            if batch is not None:
                x, ok = batch.fit(counts)
            else:
                x, ok = np.empty((r, m)), np.zeros(r, dtype=bool)
            for j in np.flatnonzero(~ok):
                x[j] = fit_bt_units(agg, base=base, l2_c=l2_c, x0=point, weights=split_cells(counts[j], k))
            rows[start : start + r] = x
            start += r
            bar.update(r)
        bar.close()
    return rows


@contextlib.contextmanager
def _multinomial_draws(
    rng: np.random.Generator, total: int, pvals: np.ndarray, sizes: list[int], threaded: bool
) -> Iterator[Iterator[np.ndarray]]:
    """Batches of ``rng.multinomial(total, pvals, size=s)`` for each ``s`` in ``sizes``, in order.

    With ``threaded`` one worker thread makes them, up to two batches ahead of the consumer (numpy
    releases the GIL while it samples). The generator is only ever used by one thread at a time and
    in the same order as a plain loop, so the draws are the same either way.
    """
    if not threaded:
        yield (rng.multinomial(total, pvals, size=s) for s in sizes)
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bt-bootstrap-draws")
    pending: deque[Future[np.ndarray]] = deque()
    queue = iter(sizes)

    def submit() -> None:
        size = next(queue, None)
        if size is not None:
            pending.append(pool.submit(rng.multinomial, total, pvals, size))

    def batches() -> Iterator[np.ndarray]:
        while pending:
            counts = pending.popleft().result()
            submit()
            yield counts

    try:
        submit()
        submit()
        yield batches()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _BatchFit:
    """Fits many resamples of the same pairs at once (see ``_bootstrap_units``)."""

    a: np.ndarray
    b: np.ndarray
    incidence: csr_matrix  # models x pairs: +1 for the pair's first model, -1 for its second
    precond: np.ndarray  # models x models inverse Hessian (mean pinned) at the point estimate
    point: np.ndarray
    alpha: float
    l2: float
    total: float

    @classmethod
    def build(cls, agg: Aggregated, point: np.ndarray, *, base: float, l2_c: float) -> _BatchFit | None:
        """Set up for ``agg`` around the point estimate; None when there are too many models."""
        m, k = len(agg.models), len(agg.a)
        if m < 2 or m > POLISH_MAX_MODELS:
            return None
        pairs = BTPairs.from_counts(agg, base=base, l2_c=l2_c)
        try:
            precond = np.linalg.inv(pairs.hessian(pairs.probabilities(point), m))
        except np.linalg.LinAlgError:
            return None
        if not np.isfinite(precond).all():
            return None
        incidence = csr_matrix(
            (
                np.concatenate([np.ones(k), -np.ones(k)]),
                (np.concatenate([agg.a, agg.b]), np.tile(np.arange(k), 2)),
            ),
            shape=(m, k),
        )
        return cls(agg.a, agg.b, incidence, precond, point, pairs.alpha, pairs.l2, pairs.total)

    def fit(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Strengths (rounds x models, each row mean 0) for multinomial draws ``counts`` (rounds x 3K),
        and which rounds converged (the others are left for the one-round fit)."""
        k = len(self.a)
        rounds = len(counts)
        wins_a, wins_b, ties = split_cells(counts, k)
        n = np.ascontiguousarray((wins_a + wins_b + ties).T, dtype=np.float64) / self.total
        # grad = alpha * D (n * p - s) + l2 x; the D s part is fixed per round
        fixed = self.incidence @ (
            np.ascontiguousarray((wins_a + 0.5 * ties).T, dtype=np.float64) / self.total
        )
        x = np.repeat(self.point[:, None], rounds, axis=1)
        out = np.empty_like(x)
        done = np.zeros(rounds, dtype=bool)
        active = np.arange(rounds)
        last = np.full(rounds, np.inf)
        ea, eb = np.empty((k, rounds)), np.empty((k, rounds))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for _ in range(_BOOT_MAX_ITER):
                if ea.shape[1] != len(active):
                    ea, eb = np.empty((k, len(active))), np.empty((k, len(active)))
                e = np.exp(self.alpha * x)
                np.take(e, self.a, axis=0, out=ea)
                np.take(e, self.b, axis=0, out=eb)
                eb += ea
                np.divide(ea, eb, out=ea)  # P(first model wins)
                ea *= n
                grad = self.incidence @ ea
                grad -= fixed
                grad *= self.alpha
                grad += self.l2 * x
                step = self.precond @ grad
                x -= step
                size = np.abs(step).max(axis=0)
                # linear convergence at rate q leaves at most size * q / (1 - q) to go
                rate = size / last
                left = np.where(rate < 1.0, size * rate / np.maximum(1.0 - rate, 1e-300), np.inf)
                settled = (size < _BOOT_TOL) & (left < _BOOT_TOL)
                broken = ~np.isfinite(size)
                last = size
                finished = settled | broken
                if finished.any():
                    idx = active[settled]
                    out[:, idx] = x[:, settled]
                    done[idx] = True
                    keep = ~finished
                    active, x, n, fixed, last = (
                        active[keep],
                        x[:, keep],
                        n[:, keep],
                        fixed[:, keep],
                        last[keep],
                    )
                    if len(active) == 0:
                        break
                    n, fixed, x = (
                        np.ascontiguousarray(n),
                        np.ascontiguousarray(fixed),
                        np.ascontiguousarray(x),
                    )
        out = out.T
        out -= out.mean(axis=1, keepdims=True)
        return out, done
