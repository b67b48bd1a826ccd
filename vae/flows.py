"""Inverse autoregressive flow (Kingma et al. 2016) on top of the diagonal-Gaussian posterior.

Each step is a MADE network computing (m, s) from z autoregressively (output i sees z_<i only) and the
gated update z' = sigma * z + (1 - sigma) * m with sigma = sigmoid(s), whose Jacobian is triangular with
log|det| = sum_i log sigma_i. The variable order is reversed between steps. This is the variant without a
context vector: the steps depend on z only, the encoder still sets the base distribution per row.

Shapes: z is (..., L); log-determinants are (...).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .networks import full_precision

_GATE_BIAS = 2.0  # sigmoid(2) = 0.88: each step starts close to the identity, as the paper recommends


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (out_features, in_features)."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Masked autoencoder: (m, s) = MADE(z), where m_i and s_i depend on z_1 .. z_{i-1} only."""

    def __init__(self, dim: int, hidden_dims: tuple[int, ...]) -> None:
        super().__init__()
        inputs = torch.arange(1, dim + 1)  # degree of each input
        layers: list[nn.Module] = []
        previous = inputs
        for width in hidden_dims:
            degrees = torch.arange(width) % max(1, dim - 1) + 1  # 1 .. dim-1: unit k sees inputs <= k
            layers += [MaskedLinear(degrees[:, None] >= previous[None, :]), nn.ELU()]
            previous = degrees
        self.trunk = nn.Sequential(*layers)
        output_mask = (inputs[:, None] > previous[None, :]).repeat(2, 1)  # output i sees units of degree < i
        self.out = MaskedLinear(output_mask)
        with torch.no_grad():
            self.out.weight.mul_(0.1)
            self.out.bias.zero_()
            self.out.bias[dim:] = _GATE_BIAS

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(m, s), each (..., L), in full precision (float32 under autocast)."""
        m, s = full_precision(self.out(self.trunk(z))).chunk(2, dim=-1)
        return m, s


class InverseAutoregressiveFlow(nn.Module):
    """`steps` IAF steps over latents of size `dim` (ELU MADEs, as in the paper); no steps: the identity."""

    def __init__(self, dim: int, steps: int, hidden_dims: tuple[int, ...]) -> None:
        super().__init__()
        self.steps = nn.ModuleList(MADE(dim, hidden_dims) for _ in range(steps))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z_0 (..., L) -> (z_K (..., L), sum over steps of log|det dz_k/dz_{k-1}| (...))."""
        log_det = torch.zeros(z.shape[:-1], device=z.device, dtype=z.dtype)
        for i, made in enumerate(self.steps):
            if i:
                z = z.flip(-1)  # a permutation: |det| = 1
            m, s = made(z)
            gate = torch.sigmoid(s)
            z = gate * z + (1 - gate) * m
            log_det = log_det + F.logsigmoid(s).sum(-1)
        return z, log_det
