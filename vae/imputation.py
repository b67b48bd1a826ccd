"""Filling missing values with a trained VAE: Markov chains on (z, x_missing) given the observed values.

`metropolis` (the default) is Metropolis-within-Gibbs (Mattei & Frellsen 2018): propose z' ~ q(z | x),
accept it with the ratio p(x | z') p(z') q(z | x) / (p(x | z) p(z) q(z' | x)), then draw x_missing ~ p(. | z);
its chain targets the model's exact conditional p(x_missing | x_observed). `pseudo_gibbs` (Rezende et al.
2014) accepts every proposal: simpler, approximate. Missing entries start at the preprocessing's fill (the
training mean, the share of ones, the unknown bucket). Rows with nothing observed draw z from the prior.

The point estimate of a missing entry is the decoder mean averaged over the chains and over the iterations
after burn-in (a Rao-Blackwellised estimate of E[x_missing | x_observed]); categorical and binary entries take
the most probable value of that average. Each chain's last draw is one multiple imputation.
Observed entries are copied through: only entries flagged missing change. Slots in `forbidden` (the unknown
bucket) are never drawn; the acceptance ratio uses the model's unmasked likelihood, exact when the model gives
those slots ~0 probability (it does unless its training rows had missing categories).
N = rows, D = input width, S = chains, L = latent size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .model import VAE, standard_normal_log_prob
from .preprocessing import Preprocessor

IMPUTATION_METHODS = ("metropolis", "pseudo_gibbs")


@dataclass(frozen=True)
class Acceptance:
    """Metropolis proposals accepted of those made (pseudo-Gibbs and rows with nothing observed make none);
    parts of one table add up."""

    accepted: int = 0
    proposals: int = 0

    @property
    def rate(self) -> float:
        """The share accepted, 1.0 where no proposal was made."""
        return self.accepted / self.proposals if self.proposals else 1.0

    def __add__(self, other: Acceptance) -> Acceptance:
        return Acceptance(self.accepted + other.accepted, self.proposals + other.proposals)


@dataclass
class Imputation:
    """Encoded rows with their missing entries filled."""

    estimate: np.ndarray  # (N, D) point estimate (decoder means averaged; categories as probabilities)
    draws: np.ndarray  # (S, N, D) one draw per chain from the last iteration
    acceptance: Acceptance


def _log_joint(model: VAE, params: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log p(x | z) + log p(z) from decoder parameters already computed for z: (B,)."""
    return model.likelihood.log_prob(params, x).sum(-1) + standard_normal_log_prob(z)


def impute(
    model: VAE,
    x: np.ndarray,
    missing: np.ndarray,
    c: np.ndarray | None = None,
    iterations: int = 50,
    chains: int = 8,
    method: str = "metropolis",
    seed: int | torch.Generator = 0,
    forbidden: np.ndarray | None = None,
    batch_size: int = 1024,
) -> Imputation:
    """Fill the entries of x (N, D) where `missing` (N, D) is True; c: (N, K) conditions or None.

    forbidden: (D,) bool categorical slots never drawn (the unknown buckets of tabular data).
    Rows go through in batches of `batch_size` (each runs S chains at once); the seed fixes the result. A
    generator as `seed` (on the model's device) continues its stream, so a table imputed in consecutive parts of
    whole batches with one generator gets exactly the result of one call.
    """
    if method not in IMPUTATION_METHODS:
        raise ValueError(f"method must be one of {list(IMPUTATION_METHODS)}, got {method!r}")
    if iterations < 1 or chains < 1:
        raise ValueError(f"iterations and chains must be >= 1, got {iterations} and {chains}")
    if method == "metropolis" and model.flow is not None:
        raise ValueError(
            "method 'metropolis' needs q(z|x) at any z, which an IAF posterior (model.flow_steps > 0) cannot give;"
            " use method=pseudo_gibbs"
        )
    if np.shape(missing) != np.shape(x):
        raise ValueError(f"missing mask {np.shape(missing)} does not match x {np.shape(x)}")
    model.eval()
    device = next(model.parameters()).device
    generator = seed if isinstance(seed, torch.Generator) else torch.Generator(device=device).manual_seed(seed)
    mask = None if forbidden is None else torch.as_tensor(forbidden, dtype=torch.bool, device=device)
    chain = _Chains(model, iterations, chains, method, generator, mask)
    parts = [
        chain.run(x[start : start + batch_size], missing[start : start + batch_size],
                  None if c is None else c[start : start + batch_size])
        for start in range(0, len(x), batch_size)
    ]  # fmt: skip
    return Imputation(
        estimate=np.concatenate([p[0] for p in parts]),
        draws=np.concatenate([p[1] for p in parts], axis=1),
        acceptance=sum((p[2] for p in parts), Acceptance()),
    )


@dataclass
class _Chains:
    """S Markov chains per row of a batch (see the module docstring)."""

    model: VAE
    iterations: int
    chains: int
    method: str
    generator: torch.Generator
    forbidden: torch.Tensor | None

    @torch.no_grad()
    def run(
        self, x: np.ndarray, missing: np.ndarray, c: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, Acceptance]:
        """(estimate (B, D), draws (S, B, D), acceptance) for a batch x (B, D)."""
        model, generator, forbidden = self.model, self.generator, self.forbidden
        device = next(model.parameters()).device
        n = len(x)

        def chained(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:  # (B, ...) -> (S * B, ...), chain-major
            return torch.as_tensor(np.asarray(a), device=device, dtype=dtype).repeat(self.chains, 1)

        observed = chained(x, torch.float32)
        hole = chained(missing, torch.bool)
        cond = None if c is None else chained(c, torch.float32)
        blind = hole.all(-1)  # (S * B,) rows with nothing observed: their conditional is the prior's
        current, z, params = observed.clone(), None, None
        burn_in = self.iterations // 2
        total = torch.zeros_like(observed)
        accepted = proposals = 0
        for step in range(self.iterations):
            posterior = model.encode(current, cond)
            proposal = posterior.draw(1, generator).z[0]  # (S * B, L), through the flow if the model has one
            prior = torch.randn(proposal.shape, generator=generator, device=device)
            proposal = torch.where(blind[:, None], prior, proposal)
            proposal_params = model.decode(proposal, cond)
            if z is None or self.method == "pseudo_gibbs":
                z, params = proposal, proposal_params
            else:
                log_ratio = (
                    _log_joint(model, proposal_params, current, proposal) + posterior.log_prob(z)
                    - _log_joint(model, params, current, z) - posterior.log_prob(proposal)
                )  # fmt: skip
                uniform = torch.rand(log_ratio.shape, generator=generator, device=device)
                accept = blind | (uniform.log() < log_ratio)
                accepted += int(accept[~blind].sum())
                proposals += int((~blind).sum())
                z = torch.where(accept[:, None], proposal, z)
                params = torch.where(accept[:, None], proposal_params, params)
            current = torch.where(hole, model.likelihood.draw(params, "sample", generator, forbidden), observed)
            if step >= burn_in:
                total += model.likelihood.draw(params, "mean", None, forbidden)
        mean = (total / (self.iterations - burn_in)).reshape(self.chains, n, -1).mean(0)
        estimate = torch.where(hole[:n], mean, observed[:n])
        draws = current.reshape(self.chains, n, -1)
        return estimate.cpu().numpy(), draws.cpu().numpy(), Acceptance(accepted, proposals)


@dataclass
class TableImputation:
    """Raw feature columns imputed by `impute_table`; `fill` puts them into the table's missing entries."""

    estimate: dict[str, np.ndarray]  # column -> (N,) the model's point estimate for every row
    draws: list[dict[str, np.ndarray]]  # one such mapping per chain (its last draw)
    missing: dict[str, np.ndarray]  # column -> (N,) bool, the entries that were missing or non-finite
    acceptance: Acceptance

    def fill(self, table: Mapping[str, Any], imputed: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
        """A copy of the table's columns with the missing entries taken from `imputed` (default: the estimate);
        observed entries and other columns are the table's own values."""
        imputed = self.estimate if imputed is None else imputed
        filled = {column: np.asarray(values) for column, values in table.items()}
        for column, rows in self.missing.items():
            kind = object if object in (filled[column].dtype, imputed[column].dtype) else np.float64
            values = filled[column].astype(kind, copy=True)
            values[rows] = imputed[column][rows]
            filled[column] = values
        return filled


def impute_table(
    model: VAE,
    preprocessor: Preprocessor,
    table: Mapping[str, Any],
    c: np.ndarray | None = None,
    **settings: Any,
) -> TableImputation:
    """Impute the missing or non-finite feature values of raw rows (column -> (N,) values) with `impute`
    (`settings`: iterations, chains, method, seed, batch_size); see `Preprocessor.inverse_transform` for the
    raw values' types."""
    x = preprocessor.transform(table)
    missing = preprocessor.encoded_missing(table)
    result = impute(model, x, missing, c, forbidden=preprocessor.unknown_slots(), **settings)
    return TableImputation(
        estimate=preprocessor.inverse_transform(result.estimate),
        draws=[preprocessor.inverse_transform(draw) for draw in result.draws],
        missing=preprocessor.missing_mask(table),
        acceptance=result.acceptance,
    )
