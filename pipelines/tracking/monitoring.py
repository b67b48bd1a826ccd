"""Score distribution statistics stored with a model, and the drift signal computed against them."""

from __future__ import annotations

import numpy as np

PSI_BINS = 10
_EPS = 1e-4


def reference_statistics(scores: np.ndarray) -> dict[str, object]:
    """What a model keeps about its training scores (N,): the drift signal's reference. (Each feature's typical
    contribution is the detector's calibration reference, `Detector.calibrate`.)"""
    return {
        "rows": int(scores.size),
        "mean": float(scores.mean()),
        "std": float(scores.std()),
        "quantiles": np.quantile(scores, np.linspace(0, 1, 101)).tolist(),
    }


def decile_counts(scores: np.ndarray, reference_quantiles: list[float]) -> np.ndarray:
    """How many of `scores` (N,) fall in each of the reference distribution's deciles: (10,) ints, which add up
    over parts of a data set."""
    edges = np.asarray(reference_quantiles)[:: 100 // PSI_BINS][1:-1]  # the 9 inner decile edges
    return np.bincount(np.searchsorted(edges, scores, side="right"), minlength=PSI_BINS)


def population_stability_index(counts: np.ndarray) -> float:
    """PSI of scores counted per reference decile (`decile_counts`, (10,)) against the reference's 0.1 each.

    Conventional reading: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 large shift.
    """
    actual = np.clip(np.asarray(counts) / max(int(np.sum(counts)), 1), _EPS, None)
    expected = np.full(PSI_BINS, 1.0 / PSI_BINS)
    return float(np.sum((actual - expected) * np.log(actual / expected)))
