"""Image grids logged with an image model: validation images against their reconstructions, and decoder
means at draws from the prior p(z), one row per class when the model is conditioned on one categorical column."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from vae import Detector, ImagePreprocessor

from . import plots

GRID_COLUMNS = 10  # tiles per row
UNCONDITIONAL_ROWS = 4


def _tensor(a: np.ndarray | None) -> torch.Tensor | None:
    return None if a is None else torch.tensor(np.asarray(a), dtype=torch.float32)  # copies read-only batches


def reconstruction_grid(detector: Detector, x: np.ndarray, c: np.ndarray | None = None) -> Figure:
    """Up to GRID_COLUMNS images x (N, D) above their reconstructions (the decoder's mean at the posterior mean)."""
    image: ImagePreprocessor = detector.preprocessor
    x, c = x[:GRID_COLUMNS], None if c is None else c[:GRID_COLUMNS]
    reconstructed = detector.model.eval().reconstruct(_tensor(x), _tensor(c)).numpy()
    rows = [("original", image.images(x)), ("reconstruction", image.images(reconstructed))]
    return plots.image_grid(rows, "validation images and their reconstructions")


def sample_conditions(detector: Detector, c: np.ndarray | None) -> list[tuple[str, np.ndarray | None]]:
    """(row label, condition (K,) or None) for each row of the samples grid: every class of a single categorical
    condition column; else the conditions of the first validation rows `c` (N, K); None for an unconditional model."""
    condition = detector.condition
    if condition is None:
        return [("z ~ p(z)", None)] * UNCONDITIONAL_ROWS
    if len(condition.columns) == 1 and condition.categorical:
        column = condition.categorical[0]
        classes = condition.categories[column]
        encoded = condition.transform({column: np.asarray(classes, dtype=object)})
        return [(f"{column}={label}", row) for label, row in zip(classes, encoded, strict=True)]
    return [(f"validation row {i}", row) for i, row in enumerate(c[:UNCONDITIONAL_ROWS])]


def samples_grid(detector: Detector, c: np.ndarray | None = None, seed: int = 0) -> Figure:
    """GRID_COLUMNS decoder means at z ~ p(z) for each row of `sample_conditions` (`c`: validation conditions)."""
    model = detector.model.eval()
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for label, condition in sample_conditions(detector, c):
        z = torch.randn((GRID_COLUMNS, model.config.latent_dim), generator=generator)
        cond = None if condition is None else _tensor(condition).expand(GRID_COLUMNS, -1)
        with torch.no_grad():
            means = model.likelihood.mean(model.decode(z, cond)).numpy()
        rows.append((label, detector.preprocessor.images(means)))
    conditional = "" if detector.condition is None else " per condition"
    return plots.image_grid(rows, f"samples from the prior{conditional} (decoder means)")


def image_figures(detector: Detector, x: np.ndarray, c: np.ndarray | None = None) -> dict[str, Figure]:
    """Artifact path -> figure for an image model, from validation rows x (N, D) and conditions c (N, K)."""
    return {
        "plots/reconstructions.png": reconstruction_grid(detector, x, c),
        "plots/samples.png": samples_grid(detector, c),
    }
