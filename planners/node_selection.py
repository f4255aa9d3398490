"""Choosing a task's causal nodes among its proxy columns.

Owns the screening rules (too many missing values, near-constant, near-duplicate) and the ranking
that picks the K columns a causal graph over them can use best. Pure numpy/scipy, deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

MAX_MISSING_FRACTION = 0.5
MIN_DISTINCT_VALUES = 3
DUPLICATE_CORRELATION = 0.95
MIN_PAIRED_CASES = 3  # fewer complete pairs than this: the correlation is unknown, taken as 0


def select_nodes(columns: Sequence[str], values: np.ndarray, k: int) -> list[str]:
    """Return at most ``k`` proxy columns to serve as causal nodes, most informative first.

    Screening, in this order:
    - a column with more than 50 % missing (NaN or infinite) values is dropped;
    - a near-constant column (fewer than 3 distinct values, or a standard deviation below 1e-9 of
      its magnitude) is dropped;
    - of two near-duplicates (|Pearson r| or |Spearman rho| above 0.95 on the cases both have),
      the less informative is dropped: informative means fewer missing values, then higher
      connectedness (below), then the name that sorts first.

    Ranking: connectedness = the summed absolute Spearman correlation of a column with every other
    surviving column. A node that is related to many others is what a causal graph can use; an
    isolated one would only become a parentless, childless node. Rank-based, so monotone but
    nonlinear relations count, and outliers do not dominate. Ties are broken by column name.
    Fewer than ``k`` names come back when fewer columns survive.
    """
    columns = [str(c) for c in columns]
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] != len(columns):
        raise ValueError(f"values must be (n_cases, {len(columns)}), got shape {data.shape}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if k == 0 or data.shape[0] == 0:
        return []
    data = np.where(np.isfinite(data), data, np.nan)
    missing = np.isnan(data).mean(axis=0)
    usable = [j for j in range(len(columns))
              if missing[j] <= MAX_MISSING_FRACTION and not _near_constant(data[:, j])]
    pearson, spearman = _correlations(data[:, usable])

    def connectedness(members: list[int]) -> dict[int, float]:
        return {a: float(sum(abs(spearman[a, b]) for b in members if b != a)) for a in members}

    everyone = list(range(len(usable)))
    score = connectedness(everyone)
    by_information = sorted(everyone, key=lambda a: (missing[usable[a]], -score[a], columns[usable[a]]))
    kept: list[int] = []
    for a in by_information:
        duplicate = any(max(abs(pearson[a, b]), abs(spearman[a, b])) > DUPLICATE_CORRELATION for b in kept)
        if not duplicate:
            kept.append(a)
    score = connectedness(kept)
    ranked = sorted(kept, key=lambda a: (-score[a], columns[usable[a]]))
    return [columns[usable[a]] for a in ranked[:k]]


def _near_constant(column: np.ndarray) -> bool:
    present = column[~np.isnan(column)]
    if np.unique(present).size < MIN_DISTINCT_VALUES:
        return True
    return bool(np.std(present) <= 1e-9 * max(1.0, float(np.abs(np.mean(present)))))


def _correlations(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise Pearson and Spearman matrices, each pair on the cases where both are present."""
    m = data.shape[1]
    pearson, spearman = np.eye(m), np.eye(m)
    present = ~np.isnan(data)
    for a in range(m):
        for b in range(a + 1, m):
            both = present[:, a] & present[:, b]
            if both.sum() < MIN_PAIRED_CASES:
                continue
            x, y = data[both, a], data[both, b]
            pearson[a, b] = pearson[b, a] = _pearson(x, y)
            spearman[a, b] = spearman[b, a] = _pearson(rankdata(x), rankdata(y))
    return pearson, spearman


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    denominator = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denominator) if denominator > 0 else 0.0
