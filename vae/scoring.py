"""Per-row anomaly scores (higher = more anomalous), per-feature contributions, and threshold calibration.

Three scores: the negative ELBO, the importance-sampled negative log-likelihood -log p(x) (log-mean-exp
over k posterior samples, streamed in chunks so k = 5000 fits in memory), and the reconstruction error.
Shapes: x is (B, D) or (B, C, H, W); c is (B, K) or None; scores are (B,), contributions (B, F).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .config import ScoreConfig
from .model import VAE

# Upper bound on S * B * D floats held at once while streaming importance samples (256 MiB of float32).
_SAMPLE_BUDGET = 1 << 26
_EXPLAIN_SAMPLES = 16


@dataclass
class RowScores:
    score: torch.Tensor  # (B,) higher = more anomalous
    contributions: torch.Tensor  # (B, F) each feature's share of the score's reconstruction part


@torch.no_grad()
def negative_elbo(
    model: VAE,
    x: torch.Tensor,
    c: torch.Tensor | None = None,
    samples: int = 16,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> RowScores:
    """-ELBO with E_q[log p(x|z)] averaged over `samples` draws and the closed-form KL (a flow posterior: the KL
    estimated at the same draws) (`noise`: shared standard-normal draws (samples, L) that make each row's score
    independent of its batch).

    contributions[:, f] = -E_q[log p(x_f | z)]; score = contributions.sum(1) + KL.
    """
    out = model(x, c, n_samples=samples, generator=generator, noise=noise)
    contributions = -out.log_px.mean(0)  # (B, F)
    kl = out.kl if out.kl is not None else out.kl_monte_carlo
    return RowScores(score=contributions.sum(-1) + kl, contributions=contributions)


@torch.no_grad()
def importance_sampled_nll(
    model: VAE,
    x: torch.Tensor,
    c: torch.Tensor | None = None,
    k: int = 5000,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """-log p(x) estimated as -log (1/k) sum_s p(x, z_s) / q(z_s | x), z_s ~ q(z | x): (B,).

    The k samples are drawn in chunks whose size keeps S * B * D under a fixed memory budget;
    `noise` (k, L) fixes the standard-normal draws shared by all rows.
    """
    posterior = model.encode(x, c)
    rows, width = x.shape[0], model.layout.input_dim
    chunk = max(1, min(k, _SAMPLE_BUDGET // max(1, rows * width)))
    total = torch.full((rows,), -math.inf, device=x.device)
    drawn = 0
    while drawn < k:
        n = min(chunk, k - drawn)
        chunk_noise = None if noise is None else noise[drawn : drawn + n]
        out = model.evaluate(posterior, x, c, n, generator, chunk_noise)
        log_w = out.log_px.sum(-1) + out.log_pz - out.log_qz  # (n, B)
        total = torch.logaddexp(total, torch.logsumexp(log_w.float(), dim=0))
        drawn += n
    return -(total - math.log(k))


@torch.no_grad()
def reconstruction_error(model: VAE, x: torch.Tensor, c: torch.Tensor | None = None) -> RowScores:
    """Squared error of the decoder mean at the posterior mean (a flow: the base mean pushed through it), per
    feature (one-hot groups summed)."""
    err = model.likelihood.squared_error(model.reconstruct(x, c), x.flatten(1))  # (B, F)
    return RowScores(score=err.sum(-1), contributions=err)


@torch.no_grad()
def score_batch(
    model: VAE,
    x: torch.Tensor,
    c: torch.Tensor | None,
    config: ScoreConfig,
    noise: torch.Tensor | None = None,
) -> RowScores:
    """The configured score of one batch. The NLL score explains itself with the -ELBO's contributions
    (from at most `_EXPLAIN_SAMPLES` draws: they only rank features)."""
    if config.kind == "reconstruction":
        return reconstruction_error(model, x, c)
    if config.kind == "negative_elbo":
        return negative_elbo(model, x, c, config.samples, noise=noise)
    explain = min(config.samples, _EXPLAIN_SAMPLES)
    explained = negative_elbo(model, x, c, explain, noise=None if noise is None else noise[:explain])
    nll = importance_sampled_nll(model, x, c, config.samples, noise=noise)
    return RowScores(score=nll, contributions=explained.contributions)


def _batch_tensor(a: np.ndarray | torch.Tensor, start: int, size: int, device: torch.device) -> torch.Tensor:
    """Rows [start, start + size) as float32 on `device`; numpy input is copied (it may be read-only)."""
    rows = a[start : start + size]
    if isinstance(rows, np.ndarray):
        rows = torch.from_numpy(np.array(rows, dtype=np.float32))
    return rows.to(device=device, dtype=torch.float32)


@torch.no_grad()
def score_array(
    model: VAE,
    x: np.ndarray | torch.Tensor,
    c: np.ndarray | torch.Tensor | None = None,
    config: ScoreConfig | None = None,
    batch_size: int = 1024,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Score N encoded rows in batches on the model's device: (scores (N,), contributions (N, F)).

    Every row uses the same seeded standard-normal draws, so a row's score depends only on the model, the
    row and the seed: not on the batch size or on which rows it is scored with.
    """
    config = config or ScoreConfig()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((config.samples, model.config.latent_dim), generator=generator).to(device)
    was_training = model.training
    model.eval()
    scores, contributions = [], []
    try:
        for start in range(0, len(x), batch_size):
            xb = _batch_tensor(x, start, batch_size, device)
            cb = None if c is None else _batch_tensor(c, start, batch_size, device)
            rows = score_batch(model, xb, cb, config, noise)
            scores.append(rows.score.float().cpu())
            contributions.append(rows.contributions.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(scores).numpy(), torch.cat(contributions).numpy()


def calibrate_threshold(scores: np.ndarray, contamination: float | None = None, quantile: float | None = None) -> float:
    """The score above which a row is anomalous: the (1 - contamination) or the given quantile of scores."""
    if (contamination is None) == (quantile is None):
        raise ValueError("calibrate_threshold: give exactly one of contamination and quantile")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0 or not np.isfinite(scores).all():
        raise ValueError("calibrate_threshold: scores must be a non-empty array of finite numbers")
    q = 1.0 - contamination if contamination is not None else quantile
    return float(np.quantile(scores, q))
