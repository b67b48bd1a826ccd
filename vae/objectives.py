"""Training objectives. Each returns its parts, averaged over the batch, so every term can be logged.

`total` is the quantity to minimise (a negative bound); `recon` is the expected log-likelihood
E_q[log p(x|z)] and `kl` the divergence term, both as positive "per row" averages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import ObjectiveConfig
from .model import VAE, VAEOutput


@dataclass
class LossParts:
    total: torch.Tensor  # () the loss: -bound
    recon: torch.Tensor  # () E_q[log p(x|z)] per row
    kl: torch.Tensor  # () KL(q || p) (or its estimate) per row


def elbo(out: VAEOutput, beta: float = 1.0, analytic_kl: bool = True) -> LossParts:
    """The beta-ELBO: E_q[log p(x|z)] - beta * KL(q(z|x) || p(z)), averaged over samples and rows.

    With `analytic_kl=False` the KL is the Monte Carlo estimate log q(z|x) - log p(z) at the drawn z.
    """
    recon = out.log_px.sum(-1).mean(0)  # (B,)
    kl = out.kl if analytic_kl else (out.log_qz - out.log_pz).mean(0)  # (B,)
    return LossParts(total=-(recon - beta * kl).mean(), recon=recon.mean(), kl=kl.mean())


def log_importance_weights(out: VAEOutput, beta: float = 1.0) -> torch.Tensor:
    """log w_s = log p(x|z_s) - beta * (log q(z_s|x) - log p(z_s)): (S, B)."""
    return out.log_px.sum(-1) - beta * (out.log_qz - out.log_pz)


def iwae(out: VAEOutput, beta: float = 1.0) -> LossParts:
    """The importance-weighted bound log (1/S) sum_s w_s over the S samples in `out` (S = 1: the ELBO).

    The reported parts are the self-normalised importance averages of log p(x|z) and log q - log p,
    with the weights treated as constants.
    """
    log_w = log_importance_weights(out, beta)  # (S, B)
    n = log_w.shape[0]
    bound = torch.logsumexp(log_w, dim=0) - math.log(n)  # (B,)
    weights = torch.softmax(log_w, dim=0).detach()  # (S, B)
    recon = (weights * out.log_px.sum(-1)).sum(0)
    kl = (weights * (out.log_qz - out.log_pz)).sum(0)
    return LossParts(total=-bound.mean(), recon=recon.mean(), kl=kl.mean())


def kl_weight(config: ObjectiveConfig, step: int | None) -> float:
    """beta, ramped linearly from 0 over the first `kl_warmup_steps` optimiser steps (step None: full beta)."""
    if step is None or config.kl_warmup_steps == 0:
        return config.beta
    return config.beta * min(1.0, step / config.kl_warmup_steps)


def compute_loss(
    model: VAE | torch.nn.Module,
    x: torch.Tensor,
    c: torch.Tensor | None,
    config: ObjectiveConfig,
    step: int | None = None,
) -> LossParts:
    """The configured objective on one batch. `model` may be wrapped (DDP): it is called, never unwrapped."""
    beta = kl_weight(config, step)
    if config.kind == "iwae":
        return iwae(model(x, c, n_samples=config.iwae_samples), beta)
    return elbo(model(x, c), beta, config.analytic_kl)
