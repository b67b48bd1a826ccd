"""Training objectives. Each returns its parts, averaged over the batch, so every term can be logged.

`total` is the quantity to minimise (a negative bound); `recon` is the expected log-likelihood
E_q[log p(x|z)] and `kl` the divergence term, both as positive "per row" averages. Variants add their own
parts in `extras`: `log_det` (a flow posterior's mean summed log|det|), `adv_generator` (an AAE encoder's
adversarial loss) and, from the training engine, `adv_discriminator`. The AAE's parts (`AAEParts`) also
carry the encoded latents that its discriminator's step learns from.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .adversarial import frozen, generator_loss
from .config import ObjectiveConfig
from .config_base import choose
from .model import VAE, VAEOutput


@dataclass
class LossParts:
    total: torch.Tensor  # () the loss: -bound
    recon: torch.Tensor  # () E_q[log p(x|z)] per row
    kl: torch.Tensor  # () KL(q || p) (or its estimate) per row; 0 for an AAE, which has no KL term
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # () each, per row; logged as metrics


@dataclass
class AAEParts(LossParts):
    """An adversarial autoencoder's parts, with the latents its discriminator is then trained on."""

    encoded: torch.Tensor = field(kw_only=True)  # (S * B, L) detached draws of z ~ q(z|x)


def _flow_parts(out: VAEOutput) -> dict[str, torch.Tensor]:
    return {} if out.log_det is None else {"log_det": out.log_det.mean()}


def elbo(out: VAEOutput, beta: float = 1.0, analytic_kl: bool = True) -> LossParts:
    """The beta-ELBO: E_q[log p(x|z)] - beta * KL(q(z|x) || p(z)), averaged over samples and rows.

    With `analytic_kl=False` the KL is the Monte Carlo estimate log q(z|x) - log p(z) at the drawn z (the only
    one a flow posterior has: asking it for the closed form raises ValueError).
    """
    if analytic_kl and not out.analytic_kl:
        raise ValueError("elbo: this posterior (a flow) has no closed-form KL; use analytic_kl=False")
    recon = out.log_px.sum(-1).mean(0)  # (B,)
    kl = out.kl if analytic_kl else out.kl_monte_carlo  # (B,)
    return LossParts(total=-(recon - beta * kl).mean(), recon=recon.mean(), kl=kl.mean(), extras=_flow_parts(out))


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
    return LossParts(total=-bound.mean(), recon=recon.mean(), kl=kl.mean(), extras=_flow_parts(out))


def adversarial_autoencoder(out: VAEOutput, discriminator: nn.Module, weight: float = 1.0) -> AAEParts:
    """The AAE's encoder/decoder loss: -E_q[log p(x|z)] + weight * (-log D(z)) at the drawn z.

    The discriminator's parameters get no gradient here; it is trained by its own step (`Adversary.step`).
    """
    recon = out.log_px.sum(-1).mean(0)  # (B,)
    z = out.z.flatten(0, 1)  # (S * B, L)
    with frozen(discriminator):
        adversarial = generator_loss(discriminator, z)
    return AAEParts(
        total=-recon.mean() + weight * adversarial,
        recon=recon.mean(),
        kl=torch.zeros((), device=recon.device),
        extras={"adv_generator": adversarial},
        encoded=z.detach(),
    )


def kl_weight(config: ObjectiveConfig, step: int | None) -> float:
    """beta, ramped linearly from 0 over the first `kl_warmup_steps` optimiser steps (step None: full beta)."""
    if step is None or config.kl_warmup_steps == 0:
        return config.beta
    return config.beta * min(1.0, step / config.kl_warmup_steps)


def kl_warmup_done(config: ObjectiveConfig, step: int) -> bool:
    """Whether the KL warm-up is over after `step` optimiser steps (at once without a warm-up): only from then
    on does the training objective match the full-beta validation loss, so only then may an epoch be the best
    one or count towards early stopping's patience."""
    return step >= config.kl_warmup_steps


@dataclass(frozen=True)
class LossInputs:
    """What an objective reads from one training step: the model (possibly DDP-wrapped), x (B, D) or (B, C, H, W),
    c (B, K) or None, `observed` (B, F) bool or None, the optimiser step (None: full beta) and, for an AAE, its
    discriminator."""

    model: nn.Module
    x: torch.Tensor
    c: torch.Tensor | None
    observed: torch.Tensor | None
    step: int | None
    discriminator: nn.Module | None


Objective = Callable[[LossInputs, ObjectiveConfig], LossParts]


def _elbo_loss(inputs: LossInputs, config: ObjectiveConfig) -> LossParts:
    out = inputs.model(inputs.x, inputs.c, observed=inputs.observed)
    return elbo(out, kl_weight(config, inputs.step), config.analytic_kl)


def _iwae_loss(inputs: LossInputs, config: ObjectiveConfig) -> LossParts:
    out = inputs.model(inputs.x, inputs.c, n_samples=config.iwae_samples, observed=inputs.observed)
    return iwae(out, kl_weight(config, inputs.step))


def _aae_loss(inputs: LossInputs, config: ObjectiveConfig) -> AAEParts:
    if inputs.discriminator is None:
        raise ValueError("compute_loss: objective.kind=aae needs the discriminator (see vae.adversarial.Adversary)")
    out = inputs.model(inputs.x, inputs.c, observed=inputs.observed)
    return adversarial_autoencoder(out, inputs.discriminator, config.adversarial_weight)


# The objective kinds (`ObjectiveConfig.kind`): the one list of them, which config validation reads.
OBJECTIVES: dict[str, Objective] = {"elbo": _elbo_loss, "iwae": _iwae_loss, "aae": _aae_loss}


def compute_loss(
    model: VAE | torch.nn.Module,
    x: torch.Tensor,
    c: torch.Tensor | None,
    config: ObjectiveConfig,
    step: int | None = None,
    discriminator: nn.Module | None = None,
    observed: torch.Tensor | None = None,
) -> LossParts:
    """The configured objective (`config.kind`, a name in OBJECTIVES) on one batch: x (B, D) or (B, C, H, W),
    c (B, K) or None. `model` may be wrapped (DDP): it is called, never unwrapped. An AAE objective needs its
    (unwrapped) `discriminator` and returns `AAEParts`. `observed` (B, F) bool, where given, marks the features
    each row has a value for: the others are left out of the reconstruction term, as scoring leaves them out, so
    the decoder never learns the encoder's fill-in (the mean, or the unknown category) as a value."""
    objective = choose(OBJECTIVES, config.kind, "ObjectiveConfig.kind")
    return objective(LossInputs(model, x, c, observed, step, discriminator), config)
