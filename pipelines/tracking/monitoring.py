"""Score distribution statistics stored with a model, and the drift signal computed against them."""

from __future__ import annotations

import numpy as np

PSI_BINS = 10
_EPS = 1e-4


def reference_statistics(scores: np.ndarray, contributions: np.ndarray) -> dict[str, object]:
    """What a model keeps about its training scores (N,) and per-feature contributions (N, F)."""
    return {
        "rows": int(scores.size),
        "mean": float(scores.mean()),
        "std": float(scores.std()),
        "quantiles": np.quantile(scores, np.linspace(0, 1, 101)).tolist(),
        "feature_baseline": np.median(contributions, axis=0).tolist(),
    }


def population_stability_index(scores: np.ndarray, reference_quantiles: list[float]) -> float:
    """PSI of `scores` (N,) against the reference distribution, over its deciles (0.1 expected mass each).

    Conventional reading: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 large shift.
    """
    edges = np.asarray(reference_quantiles)[:: 100 // PSI_BINS][1:-1]  # the 9 inner decile edges
    actual = np.bincount(np.searchsorted(edges, scores, side="right"), minlength=PSI_BINS) / max(len(scores), 1)
    expected = np.full(PSI_BINS, 1.0 / PSI_BINS)
    actual = np.clip(actual, _EPS, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))
