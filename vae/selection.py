"""Choosing among trained models without labels: the default stays unless another model fits held-out rows
significantly better.

The held-out NLL tracks detection only loosely (a model that fits normal rows better can also fit anomalies
better), and among close candidates the lowest mean NLL picks by noise: on the 20 sets of the development suite the
lowest-NLL model of the shipped sweep averaged 0.46 AUROC points below the default. Comparing each candidate with
the default on the same rows (a one-sided Wilcoxon signed-rank test on the per-row differences, robust to the few
rows with a huge NLL) and moving only on significance keeps the default where the evidence is weak
(`python -m bench sweep`, bench/RESULTS.md).

The comparison uses only held-out rows that repeat no training row (`row_hashes`): a repeated row tests how well
a model remembers, not how well it generalises, and a model with room to memorise (a latent wider than the data, a
small beta) wins on tables full of repeats (19 % of 33_skin's normal rows are distinct) while detecting worse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class Choice:
    index: int  # the chosen model
    p_values: np.ndarray  # (P,) one-sided p of "lower NLL than the reference" per model; nan for the reference


def choose_over_reference(nll: np.ndarray, reference: int, significance: float = SIGNIFICANCE) -> Choice:
    """Of P models scored on the same N held-out rows (`nll`: (P, N) per-row negative log-likelihood, nats), the one
    with the lowest mean NLL among the `reference` (the default) and the models whose per-row NLL is lower than
    the reference's by a one-sided Wilcoxon signed-rank test at `significance`. Models identical to the reference
    on every row (p = 1) and non-finite rows (dropped pairwise) never count as evidence."""
    from scipy.stats import wilcoxon

    nll = np.asarray(nll, dtype=np.float64)
    if nll.ndim != 2 or not 0 <= reference < len(nll):
        raise ValueError(f"choose_over_reference: nll must be (P, N) with the reference among the P, got {nll.shape}")
    p_values = np.full(len(nll), np.nan)
    best, best_mean = reference, _mean(nll[reference], nll[reference])
    for index, rows in enumerate(nll):
        if index == reference:
            continue
        finite = np.isfinite(rows) & np.isfinite(nll[reference])
        differences = rows[finite] - nll[reference][finite]
        p_values[index] = 1.0 if not np.any(differences) else wilcoxon(differences, alternative="less").pvalue
        mean = _mean(rows, nll[reference])
        if p_values[index] < significance and mean < best_mean:
            best, best_mean = index, mean
    return Choice(best, p_values)


def row_hashes(*parts: np.ndarray | None) -> np.ndarray:
    """(N,) uint64, one hash per row of the (N, ...) arrays taken together (None skipped): equal rows hash
    equally, distinct rows collide with a chance of about 2**-64 per pair."""
    import pandas as pd

    arrays = [np.asarray(part, dtype=np.float64) for part in parts if part is not None]
    flat = [part.reshape(len(part), int(np.prod(part.shape[1:]))) for part in arrays]
    if not flat:
        raise ValueError("row_hashes: no array given")
    return pd.util.hash_pandas_object(pd.DataFrame(np.concatenate(flat, axis=1)), index=False).to_numpy()


def _mean(rows: np.ndarray, reference: np.ndarray) -> float:
    """The mean over the rows where both are finite (the rows the test compares)."""
    finite = np.isfinite(rows) & np.isfinite(reference)
    return float(rows[finite].mean()) if finite.any() else float("inf")
