"""Figures logged with each run (matplotlib, no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402


def loss_curves(history: dict[str, list[tuple[int, float]]]) -> Figure:
    """One line per metric name: history maps name -> [(epoch, value), ...]."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, points in sorted(history.items()):
        if points:
            epochs, values = zip(*sorted(points), strict=True)
            ax.plot(epochs, values, marker=".", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (nats per row)")
    ax.set_title("training and validation loss")
    ax.legend()
    fig.tight_layout()
    return fig


def score_histogram(scores: np.ndarray, threshold: float, title: str = "validation anomaly scores") -> Figure:
    """Histogram of scores (N,) with the threshold marked; log-scaled x when scores span decades."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(scores, bins=60, color="tab:blue", alpha=0.8)
    ax.axvline(threshold, color="tab:red", linestyle="--", label=f"threshold {threshold:.3g}")
    ax.set_xlabel("anomaly score")
    ax.set_ylabel("rows")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def latent_projection(means: np.ndarray, labels: np.ndarray | None = None) -> Figure:
    """The first two principal components of posterior means (N, L), coloured by label when given."""
    centred = means - means.mean(0)
    if centred.shape[1] >= 2:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        points = centred @ vt[:2].T
    else:
        points = np.column_stack([centred[:, 0], np.zeros(len(centred))])
    fig, ax = plt.subplots(figsize=(5, 5))
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=4, alpha=0.6)
    else:
        for value, colour in ((0, "tab:blue"), (1, "tab:red")):
            mask = labels == value
            ax.scatter(points[mask, 0], points[mask, 1], s=4 if value == 0 else 12, c=colour, alpha=0.6,
                       label="anomaly" if value else "normal")  # fmt: skip
        ax.legend()
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("posterior means (validation sample)")
    fig.tight_layout()
    return fig


def score_drift(scores: np.ndarray, reference_quantiles: list[float] | None, threshold: float | None) -> Figure:
    """Today's score density against the training reference (rebuilt from its 101 quantiles: 1 % of mass
    between consecutive quantiles), with the threshold."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(scores, bins=60, density=True, alpha=0.6, color="tab:blue", label="this run")
    if reference_quantiles:
        edges = np.asarray(reference_quantiles)
        widths = np.maximum(np.diff(edges), 1e-12)
        ax.stairs(0.01 / widths, edges, color="black", label="training reference")
    if threshold is not None:
        ax.axvline(threshold, color="tab:red", linestyle="--", label=f"threshold {threshold:.3g}")
    ax.set_xlabel("anomaly score")
    ax.set_ylabel("density")
    ax.set_title("scores against the training reference")
    ax.legend()
    fig.tight_layout()
    return fig


def metric_by_param(table: pd.DataFrame, metric: str, params: list[str]) -> Figure:
    """A sweep's best `metric` per trial against each swept parameter (one panel each; log x for positive
    values spanning a decade or more; lists and strings as categories). `table` has a column per param and
    `best <metric>`."""
    fig, axes = plt.subplots(1, len(params), figsize=(4.5 * len(params), 4), squeeze=False, sharey=True)
    y = table[f"best {metric}"].to_numpy(dtype=float)
    for ax, name in zip(axes[0], params, strict=True):
        values = table[name].tolist()
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric:
            x = np.asarray(values, dtype=float)
            ax.scatter(x, y, alpha=0.8)
            if x.min() > 0 and x.max() >= 10 * x.min():
                ax.set_xscale("log")
        else:
            labels = sorted({str(v) for v in values})
            ax.scatter([labels.index(str(v)) for v in values], y, alpha=0.8)
            ax.set_xticks(range(len(labels)), labels, rotation=30)
        ax.set_xlabel(name)
    axes[0][0].set_ylabel(f"best {metric}")
    fig.suptitle(f"sweep: best {metric} of each trial")
    fig.tight_layout()
    return fig


def roc_pr_curves(labels: np.ndarray, scores: dict[str, np.ndarray]) -> Figure:
    """ROC and precision-recall curves against labels (N,) (1 = anomaly) of each named score array (N,)."""
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(12, 5))
    for name, values in scores.items():
        fpr, tpr, _ = roc_curve(labels, values)
        roc.plot(fpr, tpr, label=name)
        precision, recall, _ = precision_recall_curve(labels, values)
        pr.step(recall, precision, where="post", label=name)
    roc.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    pr.axhline(np.mean(labels), color="grey", linestyle=":", label="chance (anomaly share)")
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    pr.set(xlabel="recall", ylabel="precision", title="precision-recall", ylim=(0, 1.02))
    for ax in (roc, pr):
        ax.legend(fontsize="small", loc="lower right" if ax is roc else "lower left")
    fig.tight_layout()
    return fig


def image_grid(rows: list[tuple[str, np.ndarray]], title: str) -> Figure:
    """One row of tiles per (label, images (N, C, H, W) in [0, 1]): grey for one channel, colour for three.
    Rows shorter than the longest leave their last cells empty."""
    columns = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(0.8 * columns + 1.4, 0.8 * len(rows) + 0.6), squeeze=False)
    for (label, images), row in zip(rows, axes, strict=True):
        for ax, image in zip(row, images, strict=False):
            tile = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)  # (H, W) or (H, W, C)
            ax.imshow(tile, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in row[len(images) :]:
            ax.axis("off")
        row[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
