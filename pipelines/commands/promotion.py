"""Pure functions over arrays for evaluation: detection metrics, the two baselines and the promotion rule.

No MLflow, no Ray: `pipelines/commands/evaluate.py` is the recipe that feeds them registered models and Parquet rows.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class Decision:
    kind: str  # promoted, kept or first_champion
    reason: str  # one sentence with the numbers

    @property
    def moves_champion(self) -> bool:
        return self.kind in ("promoted", "first_champion")


def decide(metric: str, margin: float, challenger: tuple[str, float], champion: tuple[str, float] | None) -> Decision:
    """The promotion gate. challenger / champion: (label such as "thyroid-vae/3", value of `metric`).

    The challenger becomes champion when there is none, or when it beats the champion's value by more than
    `margin`; otherwise the champion stays.
    """
    title = METRIC_TITLES.get(metric, metric)
    who, value = challenger
    if champion is None:
        return Decision("first_champion", f"no champion yet: challenger {who} ({title} {value:.4f}) becomes champion.")
    incumbent, incumbent_value = champion
    if who == incumbent:
        return Decision("kept", f"challenger {who} is already the champion ({title} {value:.4f}).")
    gain = value - incumbent_value
    comparison = f"challenger {who} {title} {value:.4f} vs champion {incumbent} {incumbent_value:.4f} ({gain:+.4f})"
    if gain - margin > TIE_TOLERANCE:
        return Decision("promoted", f"{comparison} beats the margin {margin:g}: challenger promoted.")
    return Decision("kept", f"{comparison} does not beat the margin {margin:g}: champion kept.")
