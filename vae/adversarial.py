"""The adversarial autoencoder's (Makhzani et al. 2015) discriminator, its losses and its optimiser.

A discriminator D(z) tells prior draws z ~ N(0, I) (label 1) from encoded rows z ~ q(z|x) (label 0); the
encoder is trained to fool it, which pushes the aggregate posterior q(z) = E_x q(z|x) towards the prior.
Shapes: z is (N, L); D returns logits (N,).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .config import ObjectiveConfig
from .networks import mlp


class Discriminator(nn.Module):
    """An MLP from a latent (N, L) to the logit (N,) that it was drawn from the prior."""

    def __init__(self, latent_dim: int, hidden_dims: tuple[int, ...]) -> None:
        super().__init__()
        self.trunk, width = mlp(latent_dim, hidden_dims, "relu")
        self.out = nn.Linear(width, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.trunk(z)).squeeze(-1)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Gradients flow through `module` to its input but not into its parameters."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def generator_loss(discriminator: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """The encoder's non-saturating loss -log D(z) for encoded latents z (N, L): ()."""
    logits = discriminator(z)
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


def discriminator_loss(discriminator: nn.Module, encoded: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """-log D(prior) - log(1 - D(encoded)), averaged over the 2N rows: ().

    One call on the stacked rows, so a DDP-wrapped discriminator sees one forward per backward.
    """
    logits = discriminator(torch.cat([prior, encoded]))
    labels = torch.cat([torch.ones(len(prior)), torch.zeros(len(encoded))]).to(logits)
    return F.binary_cross_entropy_with_logits(logits, labels)


class Adversary:
    """The discriminator, what its updates call (`network`: the module itself or a DDP wrapper of it, so
    gradients are averaged over ranks) and its Adam optimiser."""

    def __init__(
        self,
        module: Discriminator,
        lr: float,
        wrap: Callable[[nn.Module], nn.Module] | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        if state is not None:
            module.load_state_dict(state["discriminator"])
        self.module = module
        self.network = module if wrap is None else wrap(module)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=lr)
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])

    @classmethod
    def for_objective(
        cls,
        objective: ObjectiveConfig,
        latent_dim: int,
        wrap: Callable[[nn.Module], nn.Module] | None = None,
        state: dict[str, Any] | None = None,
    ) -> Adversary | None:
        """The adversary an objective trains with (from a checkpointed `state` when given); None when it has none."""
        if objective.kind != "aae":
            return None
        discriminator = Discriminator(latent_dim, objective.discriminator_hidden_dims)
        return cls(discriminator, objective.discriminator_lr, wrap, state)

    @torch.no_grad()
    def loss(self, encoded: torch.Tensor) -> torch.Tensor:
        """The discriminator's loss on encoded latents (N, L) against as many fresh prior draws, no update: ()."""
        return discriminator_loss(self.module, encoded, torch.randn_like(encoded))

    def step(self, encoded: torch.Tensor) -> torch.Tensor:
        """One optimiser step of the discriminator on encoded latents (N, L) against as many fresh prior draws;
        returns its loss ()."""
        self.network.train()
        encoded = encoded.detach()
        loss = discriminator_loss(self.network, encoded, torch.randn_like(encoded))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def state_dict(self) -> dict[str, Any]:
        return {"discriminator": self.module.state_dict(), "optimizer": self.optimizer.state_dict()}
