"""The variational autoencoder: a diagonal-Gaussian posterior q(z|x[,c]) (optionally refined by an inverse
autoregressive flow), a standard-normal prior p(z), and a mixed likelihood p(x|z[,c]) over the layout's blocks.

B = batch, S = posterior samples per row, L = latent size, D = input width, F = features.

Precision: under (bf16) autocast the networks run in bf16, but their outputs are cast to float32 before any
density is evaluated: x, the likelihood parameters, every log-density and the KL stay in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .config import DataLayout, ModelConfig, check_resolved
from .flows import InverseAutoregressiveFlow
from .likelihoods import MixedLikelihood
from .networks import build_networks, full_precision

_LOG_2PI = math.log(2 * math.pi)
LOGVAR_KNEE = 5.0  # the encoder's log-variance is passed through unchanged on [-LOGVAR_KNEE, LOGVAR_KNEE] ...
LOGVAR_LIMIT = 10.0  # ... and saturates smoothly towards +-LOGVAR_LIMIT beyond


def bound_logvar(raw: torch.Tensor) -> torch.Tensor:
    """A smooth bound on a log-variance: the identity on [-5, 5], beyond it sign(raw) (5 + 5 tanh((|raw| - 5) / 5)),
    with slope 1 at the knee (no kink), so the result lies in [-10, 10]: a posterior std in [0.0067, 148].
    exp(logvar) can neither overflow nor collapse to zero, and unlike a clamp the bound keeps a gradient just past
    the knee. (...) -> (...)."""
    inner = raw.clamp(-LOGVAR_KNEE, LOGVAR_KNEE)
    room = LOGVAR_LIMIT - LOGVAR_KNEE
    return inner + room * torch.tanh((raw - inner) / room)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last axis: (..., L) -> (...)."""
    return -0.5 * (z.square() + _LOG_2PI).sum(-1)


class DiagonalGaussian:
    """N(mu, diag(exp(logvar))) with reparameterised sampling; mu and logvar are (B, L)."""

    def __init__(self, mu: torch.Tensor, logvar: torch.Tensor) -> None:
        self.mu = mu
        self.logvar = logvar

    @property
    def std(self) -> torch.Tensor:
        return (0.5 * self.logvar).exp()

    def rsample(
        self, n: int = 1, generator: torch.Generator | None = None, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """n reparameterised draws: (n, B, L), differentiable in mu and logvar.

        `noise` (n, L) gives the standard-normal draws to use for every row (common random numbers: a row's
        samples then do not depend on which other rows share its batch); otherwise they are drawn here.
        """
        if noise is not None:
            eps = noise.to(self.mu)[:, None, :]  # (n, 1, L), broadcast over rows
        else:
            eps = torch.randn((n, *self.mu.shape), generator=generator, device=self.mu.device, dtype=self.mu.dtype)
        return self.mu + self.std * eps

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z) summed over the latent axis: (..., B, L) -> (..., B)."""
        return -0.5 * (((z - self.mu) / self.std).square() + self.logvar + _LOG_2PI).sum(-1)

    def draw(
        self, n: int = 1, generator: torch.Generator | None = None, noise: torch.Tensor | None = None
    ) -> LatentDraws:
        """n reparameterised draws (see `rsample`) with their log-densities."""
        z = self.rsample(n, generator, noise)
        return LatentDraws(z, self.log_prob(z), None)

    def kl_to_standard_normal(self) -> torch.Tensor:
        """Closed-form KL(q || N(0, I)): (B,)."""
        return 0.5 * (self.mu.square() + self.logvar.exp() - 1.0 - self.logvar).sum(-1)


@dataclass
class LatentDraws:
    z: torch.Tensor  # (S, B, L) reparameterised posterior draws
    log_q: torch.Tensor  # (S, B) log q(z_s | x)
    log_det: torch.Tensor | None  # (S, B) the flow's summed log|det|; None without a flow


class FlowPosterior:
    """q(z_K | x): the diagonal Gaussian `base` pushed through an inverse autoregressive flow.

    log q(z_K | x) = log q(z_0 | x) - sum_k log|det dz_k / dz_(k-1)|. There is no closed-form KL.
    """

    def __init__(self, base: DiagonalGaussian, flow: InverseAutoregressiveFlow) -> None:
        self.base = base
        self.flow = flow

    @property
    def mu(self) -> torch.Tensor:
        """The base mean pushed through the flow, (B, L): a point summary of q, not its exact mean."""
        return self.flow(self.base.mu)[0]

    def draw(
        self, n: int = 1, generator: torch.Generator | None = None, noise: torch.Tensor | None = None
    ) -> LatentDraws:
        base = self.base.draw(n, generator, noise)
        z, log_det = self.flow(base.z)
        return LatentDraws(z, base.log_q - log_det, log_det)


Posterior = DiagonalGaussian | FlowPosterior


@dataclass
class VAEOutput:
    """Everything the objectives and scores need from one pass over a batch."""

    log_px: torch.Tensor  # (S, B, F) per-feature log p(x | z_s); 0 for a feature marked missing
    log_qz: torch.Tensor  # (S, B) log q(z_s | x)
    log_pz: torch.Tensor  # (S, B) log p(z_s)
    posterior: Posterior
    z: torch.Tensor  # (S, B, L) the latents drawn
    log_det: torch.Tensor | None = None  # (S, B) the flow's summed log|det| (already inside log_qz)

    @property
    def kl_monte_carlo(self) -> torch.Tensor:
        """The KL estimated at the drawn latents, mean over samples of log q(z|x) - log p(z): (B,)."""
        return (self.log_qz - self.log_pz).mean(0)

    @property
    def analytic_kl(self) -> bool:
        """Whether `kl` is the closed form: a diagonal-Gaussian posterior has one, a flow posterior has none."""
        return isinstance(self.posterior, DiagonalGaussian)

    @property
    def kl(self) -> torch.Tensor:
        """KL(q(z|x) || p(z)) per row: the closed form when `analytic_kl`, else `kl_monte_carlo`: (B,)."""
        return self.posterior.kl_to_standard_normal() if self.analytic_kl else self.kl_monte_carlo


class VAE(nn.Module):
    """A (conditional) VAE over rows laid out as `layout` describes.

    x is (B, D) for feature vectors or (B, C, H, W) for images; c, when the layout has a condition, is (B, K).
    """

    def __init__(self, config: ModelConfig, layout: DataLayout) -> None:
        super().__init__()
        check_resolved(config, "a VAE")
        self.config = config
        self.layout = layout
        self.encoder, self.decoder = build_networks(config, layout)
        self.likelihood = MixedLikelihood(layout, config.gaussian_min_scale)
        self.flow = None
        if config.flow_steps:
            self.flow = InverseAutoregressiveFlow(config.latent_dim, config.flow_steps, config.flow_hidden_dims)

    def check_condition(self, c: torch.Tensor | None) -> None:
        """Raise ValueError unless c is (..., K) for a conditional VAE (K = its condition width), None otherwise."""
        wanted = self.layout.condition_dim
        if wanted and (c is None or c.shape[-1] != wanted):
            got = None if c is None else tuple(c.shape)
            raise ValueError(f"this VAE is conditional: c must be (B, {wanted}), got {got}")
        if not wanted and c is not None:
            raise ValueError("this VAE has no condition, but a condition c was given")

    def encode(self, x: torch.Tensor, c: torch.Tensor | None = None) -> Posterior:
        """q(z|x[,c]): the encoder's diagonal Gaussian (its log-variance through `bound_logvar`, mu and logvar in
        full precision), pushed through the flow when the model has one."""
        self.check_condition(c)
        mu, logvar = self.encoder(x, c)
        gaussian = DiagonalGaussian(full_precision(mu), bound_logvar(full_precision(logvar)))
        return gaussian if self.flow is None else FlowPosterior(gaussian, self.flow)

    def decode(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Likelihood parameters for latents z (..., L), in full precision (float32 under autocast): (..., D)."""
        return full_precision(self.decoder(z, c))

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None, **draw: Any) -> VAEOutput:
        """Encode, draw latents per row, decode, and evaluate every log-density: `evaluate` on x's posterior, with
        its keyword arguments (`n_samples`, `generator`, `noise`, `observed`)."""
        return self.evaluate(self.encode(x, c), x, c, **draw)

    def evaluate(
        self,
        posterior: Posterior,
        x: torch.Tensor,
        c: torch.Tensor | None = None,
        n_samples: int = 1,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        observed: torch.Tensor | None = None,
    ) -> VAEOutput:
        """Draw `n_samples` latents from an already computed posterior of x and evaluate every log-density
        (`noise`: shared standard-normal draws (n_samples, L), see `DiagonalGaussian.rsample`).

        `observed` (B, F) bool marks the known features of each row: the others get log p(x_f | z) = 0 in
        `log_px`, i.e. they are marginalised out (exact: the likelihood factorises given z). Their filled-in
        values still reach the encoder, which needs some input there.
        """
        draws = posterior.draw(n_samples, generator, noise)
        params = self.decode(draws.z, c)  # (S, B, D)
        return VAEOutput(
            log_px=self.likelihood.log_prob(params, x.flatten(1), observed),
            log_qz=draws.log_q,
            log_pz=standard_normal_log_prob(draws.z),
            posterior=posterior,
            z=draws.z,
            log_det=draws.log_det,
        )

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's mean at the posterior mean (see `FlowPosterior.mu`), in the encoded input space: (B, D)."""
        return self.likelihood.mean(self.decode(self.encode(x, c).mu, c))
