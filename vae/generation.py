"""Sampling new rows from a trained VAE: z ~ N(0, I), decode, then a draw (or the mean) of p(x | z[, c]).

Works on any layout (tabular blocks or images): the result is the model's encoded space, (n, D); turning it
back into raw columns is the preprocessing's job (`Preprocessor.inverse_transform`), images just reshape.
n = rows, D = input width, K = condition width, L = latent size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .config_base import choose
from .images import ImagePreprocessor
from .labels import canonical_label
from .likelihoods import GENERATION_MODES
from .model import VAE
from .preprocessing import Preprocessor


@torch.no_grad()
def generate(
    model: VAE,
    n: int,
    c: np.ndarray | None = None,
    mode: str = "mean",
    seed: int = 0,
    forbidden: np.ndarray | None = None,
    batch_size: int = 4096,
) -> np.ndarray:
    """n rows from the model in its encoded space: z ~ N(0, I), decoded, then drawn by `mode` (a name in
    `vae.likelihoods.GENERATION_MODES`, see `MixedLikelihood.draw`): (n, D) float32.

    c: (n, K) or (K,) condition rows of a conditional VAE. forbidden: (D,) bool slots never drawn. The same seed
    gives the same rows.
    """
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"the number of rows must be a positive integer, got {n!r}")
    choose(GENERATION_MODES, mode, "mode")
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    cond = None if c is None else torch.as_tensor(np.asarray(c, dtype=np.float32), device=device)
    if cond is not None and cond.dim() == 1:
        cond = cond.expand(n, -1)
    model.check_condition(cond)
    mask = None if forbidden is None else torch.as_tensor(forbidden, dtype=torch.bool)
    parts = []
    for start in range(0, n, batch_size):
        rows = min(batch_size, n - start)
        z = torch.randn((rows, model.config.latent_dim), generator=generator, device=device)
        part = None if cond is None else cond[start : start + rows]
        parts.append(model.likelihood.draw(model.decode(z, part), mode, generator, mask).cpu())
    return torch.cat(parts).numpy().astype(np.float32)


def condition_rows(condition: Preprocessor | None, values: Mapping[str, Any], n: int) -> np.ndarray | None:
    """The condition matrix (n, K) that gives every row the raw condition `values` (column -> one value).

    Raises ValueError naming an unknown column, a missing one, a category unseen in training or a
    non-numeric value, so a request that the model cannot honour fails before anything is generated.
    """
    if condition is None:
        if values:
            raise ValueError(f"the model is not conditional; remove the condition {dict(values)}")
        return None
    unknown = sorted(set(values) - set(condition.columns))
    if unknown:
        raise ValueError(f"unknown condition column(s) {unknown}; the model's are {condition.columns}")
    absent = [column for column in condition.columns if column not in values]
    if absent:
        raise ValueError(f"set a value for each condition column; missing {absent}")
    for column in condition.categorical:
        if canonical_label(values[column], condition.label_kinds[column]) not in condition.categories[column]:
            raise ValueError(
                f"condition {column}={values[column]!r} was not seen in training; known: {condition.categories[column]}"
            )
    for column in condition.numeric:
        value = values[column]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise ValueError(f"condition {column} must be a finite number, got {value!r}")
    table = {column: np.full(n, values[column], dtype=object) for column in condition.columns}
    return condition.transform(table)


def generate_table(
    model: VAE,
    preprocessor: Preprocessor | ImagePreprocessor,
    n: int,
    condition: Preprocessor | None = None,
    condition_values: Mapping[str, Any] | None = None,
    mode: str = "mean",
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """n raw rows (column -> (n,) values, see `Preprocessor.inverse_transform`, or the image column of
    `ImagePreprocessor.inverse_transform`), the condition columns included. Categorical columns never take the
    unknown bucket."""
    values = dict(condition_values or {})
    c = condition_rows(condition, values, n)
    x = generate(model, n, c, mode, seed, forbidden=preprocessor.unknown_slots())
    table = preprocessor.inverse_transform(x)
    for column, value in values.items():
        table[column] = np.full(n, value, dtype=object)
    return table
