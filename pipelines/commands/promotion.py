"""Pure functions over arrays for evaluation: detection metrics, the two baselines and the promotion gate.

No MLflow, no Ray: `pipelines/commands/evaluate.py` is the recipe that feeds them registered models and Parquet rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score

METRICS = ("auroc", "average_precision", "precision", "recall", "f1")
METRIC_TITLES = {"auroc": "AUROC", "average_precision": "AP"}
TIE_TOLERANCE = 1e-9  # a gain equal to the margin up to float noise (0.91 - 0.90 > 0.01) is a tie, not a win


def metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """AUROC and average precision of scores (N,) against labels (N,) (1 = anomaly), and precision, recall
    and F1 of the rows flagged by `scores > threshold`. No flagged row gives precision 0 (and F1 0).

    Raises ValueError when the labels are not 0/1 with both classes present.
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(f"metrics: labels {labels.shape} and scores {scores.shape} must be the same (N,) shape")
    if not np.isin(labels, (0, 1)).all() or len(np.unique(labels)) != 2:
        raise ValueError("metrics: labels must be 0/1 with at least one row of each class")
    flagged = scores > threshold
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, flagged.astype(int), average="binary", zero_division=0
    )
    return {
        "auroc": float(roc_auc_score(labels, scores)),
        "average_precision": float(average_precision_score(labels, scores)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
    }


def ranked_finite(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Scores (N,) with +inf (a value no model gives any likelihood, `vae.Detector.score_rows`) replaced by a finite
    score above every other and above `threshold`: the same ranks and flags, and numbers the metrics, their
    bootstrap and the plots can take (scikit-learn refuses infinity)."""
    scores = np.asarray(scores, dtype=np.float64)
    infinite = np.isposinf(scores)
    if not infinite.any():
        return scores
    finite = scores[~infinite]
    top = max(float(finite.max()) if finite.size else threshold, threshold)
    return np.where(infinite, top + max(1.0, abs(top)), scores)


def isolation_forest_scores(train: np.ndarray, rows: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fit a seeded IsolationForest on train (N, D); anomaly scores (higher = more anomalous) of the
    training rows (N,) and of `rows` (M,)."""
    forest = IsolationForest(random_state=seed).fit(train)
    return -forest.score_samples(train), -forest.score_samples(rows)


def pca_reconstruction_scores(train: np.ndarray, rows: np.ndarray, variance: float) -> tuple[np.ndarray, np.ndarray]:
    """Squared distance to the principal subspace fitted on train (N, D), for the training rows (N,) and
    `rows` (M,). The subspace keeps the fewest components explaining `variance` of the training variance,
    at most D - 1 so that a residual remains."""
    pca = PCA().fit(train)
    explained = np.cumsum(pca.explained_variance_ratio_)
    components = min(int(np.searchsorted(explained, variance) + 1), max(train.shape[1] - 1, 1))
    basis = pca.components_[:components]  # (K, D), orthonormal rows

    def residual(x: np.ndarray) -> np.ndarray:
        centred = x - pca.mean_
        return np.square(centred - centred @ basis.T @ basis).sum(axis=1)

    return residual(train), residual(rows)


METRIC_FUNCTIONS = {"auroc": roc_auc_score, "average_precision": average_precision_score}


def gain_interval(
    labels: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    metric: str,
    confidence: float,
    resamples: int,
    seed: int,
) -> tuple[float, float]:
    """A seeded paired bootstrap of metric(challenger) - metric(champion) on the same labelled rows: scores (N,)
    each, labels (N,). Each resample draws the normal rows and the anomalies apart, with replacement (so both
    classes are always there), as integer row weights shared by the two models; returns the central `confidence`
    percentile interval (low, high) of the `resamples` gains."""
    score = METRIC_FUNCTIONS[metric]
    rng = np.random.default_rng(seed)
    classes = [np.flatnonzero(labels == value) for value in (0, 1)]
    gains = np.empty(resamples)
    for i in range(resamples):
        weights = np.zeros(len(labels))
        for rows in classes:
            weights[rows] = np.bincount(rng.integers(0, len(rows), len(rows)), minlength=len(rows))
        gains[i] = score(labels, challenger, sample_weight=weights) - score(labels, champion, sample_weight=weights)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(gains, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Gate:
    """The promotion rules: the challenger's `metric` on the labelled rows must reach `floor` and beat every
    baseline the evaluation computed; against a champion it must gain more than `margin`, with the `confidence`
    bootstrap interval of the gain above zero."""

    metric: str
    floor: float
    margin: float
    confidence: float


@dataclass(frozen=True)
class Decision:
    kind: str  # promoted, kept (the champion stays), first_champion, or refused (below the floor or a baseline)
    reason: str  # one sentence with the numbers
    numbers: dict[str, float] = field(default_factory=dict)  # every number the decision compared, by name

    @property
    def moves_champion(self) -> bool:
        return self.kind in ("promoted", "first_champion")


def decide(
    gate: Gate,
    challenger: tuple[str, float],
    baselines: dict[str, float],
    champion: tuple[str, float, tuple[float, float] | None] | None,
) -> Decision:
    """The promotion gate. challenger: (label such as "thyroid-vae/3", value of `gate.metric`); baselines: name ->
    value; champion: (label, value, bootstrap interval (low, high) of challenger - champion), or None when there is
    no champion. The floor and the baselines come first, for a first champion too; then the champion comparison.
    """
    title = METRIC_TITLES.get(gate.metric, gate.metric)
    who, value = challenger
    numbers = {"challenger": value, "floor": gate.floor, **{f"baseline_{k}": v for k, v in baselines.items()}}
    if champion is not None and champion[0] == who:
        return Decision("kept", f"challenger {who} is already the champion ({title} {value:.4f}).", numbers)
    if value < gate.floor:
        return Decision("refused", f"challenger {who} {title} {value:.4f} is below the floor {gate.floor:g}: "
                                   "not promoted.", numbers)  # fmt: skip
    beaten_by = {name: v for name, v in baselines.items() if value - v <= TIE_TOLERANCE}
    if beaten_by:
        others = ", ".join(f"{name} {v:.4f}" for name, v in beaten_by.items())
        return Decision("refused", f"challenger {who} {title} {value:.4f} does not beat the baseline(s) {others}: "
                                   "not promoted.", numbers)  # fmt: skip
    if champion is None:
        reason = (f"no champion yet: challenger {who} ({title} {value:.4f}) clears the floor {gate.floor:g} and the "
                  "baselines: it becomes champion.")  # fmt: skip
        return Decision("first_champion", reason, numbers)
    incumbent, incumbent_value, (low, high) = champion
    gain = value - incumbent_value
    numbers |= {"champion": incumbent_value, "gain": gain, "gain_low": low, "gain_high": high, "margin": gate.margin}
    comparison = (f"challenger {who} {title} {value:.4f} vs champion {incumbent} {incumbent_value:.4f} ({gain:+.4f}, "
                  f"{gate.confidence:.0%} interval [{low:+.4f}, {high:+.4f}])")  # fmt: skip
    if gain - gate.margin <= TIE_TOLERANCE:
        return Decision("kept", f"{comparison} does not beat the margin {gate.margin:g}: champion kept.", numbers)
    if low <= 0:
        return Decision("kept", f"{comparison}: the interval includes zero, the gain may be noise: champion kept.",
                        numbers)  # fmt: skip
    return Decision("promoted", f"{comparison} beats the margin {gate.margin:g}: challenger promoted.", numbers)
