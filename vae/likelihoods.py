"""Decoder likelihoods p(x | z): one per feature block, composed over a mixed row.

The decoder emits one number per input column (a mean for Gaussian columns, a logit for Bernoulli
columns and for each category of a categorical group). Each block turns its slice of those numbers
into a log-likelihood per *feature*, so a row's score splits over its original columns.
Shapes: `params` and `x` are (..., D) with D the layout's input width; per-feature outputs are (..., F).
`observed` (..., F) bool, where given, marks the features whose value is known: a missing feature's
log-likelihood term is 0, which marginalises it out exactly because the blocks factorise given z.
`LIKELIHOODS` (the block kinds) and `GENERATION_MODES` (how `MixedLikelihood.draw` turns parameters into x) are
the registries that configs and callers name.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import DataLayout
from .config_base import choose

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class BlockLikelihood(nn.Module):
    """The likelihood of one feature block's W columns: `log_prob` (..., W) -> (..., W), or (..., 1) when
    `grouped` (the columns form one feature, e.g. a one-hot group); `mean` and `sample` (..., W) -> (..., W)."""

    grouped = False

    @classmethod
    def build(cls, width: int, min_scale: float) -> BlockLikelihood:
        """The block for `width` columns (`min_scale`: the floor on a Gaussian's std; other kinds ignore it)."""
        return cls()


class GaussianBlock(BlockLikelihood):
    """Independent Gaussians with a learned per-feature standard deviation std = min_scale + exp(log_scale).

    A smooth floor: std > min_scale always and std -> min_scale as log_scale -> -inf, with a gradient that never
    vanishes (a clamp at the floor would stop learning below it). `log_scale` is the log of the std above the floor.
    """

    @classmethod
    def build(cls, width: int, min_scale: float) -> GaussianBlock:
        return cls(width, min_scale)

    def __init__(self, width: int, min_scale: float) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(width))
        self.min_scale = min_scale

    def log_std(self) -> torch.Tensor:
        """log(min_scale + exp(log_scale)), computed stably: (W,)."""
        log_min = math.log(self.min_scale)
        return log_min + F.softplus(self.log_scale - log_min)

    def scale(self) -> torch.Tensor:
        return self.log_std().exp()  # (W,)

    @torch.no_grad()
    def set_scale(self, std: torch.Tensor | float) -> None:
        """Set the standard deviations (W,) or one for all; each must exceed `min_scale`."""
        std = torch.as_tensor(std, dtype=self.log_scale.dtype).expand_as(self.log_scale)
        if not (std > self.min_scale).all():
            raise ValueError(f"GaussianBlock.set_scale: every std must exceed min_scale={self.min_scale}")
        self.log_scale.copy_((std - self.min_scale).log())

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        log_std = self.log_std()
        z = (x - params) / log_std.exp()
        return -0.5 * z.square() - log_std - _HALF_LOG_2PI  # (..., W)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(params.shape, generator=generator, device=params.device, dtype=params.dtype)
        return params + self.scale() * noise


class BernoulliBlock(BlockLikelihood):
    """Independent Bernoullis over values in [0, 1] (binary columns, pixel intensities)."""

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -F.binary_cross_entropy_with_logits(params, x, reduction="none")  # (..., W)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.bernoulli(torch.sigmoid(params), generator=generator)


class CategoricalBlock(BlockLikelihood):
    """One categorical feature encoded one-hot over the block's columns."""

    grouped = True  # its columns form one feature

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (x * F.log_softmax(params, dim=-1)).sum(-1, keepdim=True)  # (..., 1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return F.softmax(params, dim=-1)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        probs = F.softmax(params, dim=-1).reshape(-1, params.shape[-1])
        index = torch.multinomial(probs, 1, generator=generator).reshape(params.shape[:-1])
        return F.one_hot(index, params.shape[-1]).to(params.dtype)


# The likelihood kinds (`FeatureBlock.kind`): the one list of them, which config validation reads.
LIKELIHOODS: dict[str, type[BlockLikelihood]] = {
    "gaussian": GaussianBlock,
    "bernoulli": BernoulliBlock,
    "categorical": CategoricalBlock,
}


class MixedLikelihood(nn.Module):
    """The product of the layout's block likelihoods over one input row."""

    def __init__(self, layout: DataLayout, gaussian_min_scale: float = 0.05) -> None:
        super().__init__()
        self.widths = [b.width for b in layout.blocks]
        self.blocks = nn.ModuleList(
            choose(LIKELIHOODS, b.kind, "FeatureBlock.kind").build(b.width, gaussian_min_scale) for b in layout.blocks
        )

    def _split(self, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.split(t, self.widths, dim=-1)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor, observed: torch.Tensor | None = None) -> torch.Tensor:
        """Per-feature log p(x | params): params (..., D), x broadcastable to it -> (..., F); 0 where `observed`
        (broadcastable to (..., F)) is False."""
        x = x.expand_as(params)
        parts = zip(self.blocks, self._split(params), self._split(x), strict=True)
        log_px = torch.cat([block.log_prob(p, xb) for block, p, xb in parts], dim=-1)
        return log_px if observed is None else torch.where(observed, log_px, 0.0)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """Expected x under p(x | params), in the input's encoded space: (..., D)."""
        return torch.cat([b.mean(p) for b, p in zip(self.blocks, self._split(params), strict=True)], dim=-1)

    def column_mask(self, features: torch.Tensor) -> torch.Tensor:
        """A per-feature mask (..., F) as a per-column one (..., D): a categorical group's columns take its
        feature's value."""
        repeats: list[int] = []
        for block, width in zip(self.blocks, self.widths, strict=True):
            repeats += [width] if block.grouped else [1] * width
        return features.repeat_interleave(torch.tensor(repeats, device=features.device), dim=-1)

    def squared_error(self, mean: torch.Tensor, x: torch.Tensor, observed: torch.Tensor | None = None) -> torch.Tensor:
        """Per-feature squared distance between x and a reconstruction `mean` (..., D), summed within a
        categorical group: (..., F); 0 where `observed` (..., F) is False."""
        err = (x - mean).square()
        parts = zip(self.blocks, self._split(err), strict=True)
        err = torch.cat([e.sum(-1, keepdim=True) if b.grouped else e for b, e in parts], dim=-1)
        return err if observed is None else torch.where(observed, err, 0.0)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One draw of x per row of params: (..., D)."""
        parts = zip(self.blocks, self._split(params), strict=True)
        return torch.cat([b.sample(p, generator) for b, p in parts], dim=-1)

    def draw(
        self,
        params: torch.Tensor,
        mode: str,
        generator: torch.Generator | None = None,
        forbidden: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x from decoder parameters (..., D) by a mode of GENERATION_MODES: the mean (`"mean"`: Gaussian means,
        Bernoulli and category probabilities) or one draw of p(x | z) (`"sample"`): (..., D).

        forbidden: (D,) bool, categorical slots never drawn (and given probability 0 in the mean), e.g. the
        preprocessing's unknown buckets.
        """
        draw = choose(GENERATION_MODES, mode, "mode")
        if forbidden is not None:
            params = params.masked_fill(forbidden.to(params.device), float("-inf"))
        return draw(self, params, generator)


# How `MixedLikelihood.draw` turns decoder parameters into x: the one list of generation modes.
GENERATION_MODES: dict[str, Callable[[MixedLikelihood, torch.Tensor, torch.Generator | None], torch.Tensor]] = {
    "mean": lambda likelihood, params, _generator: likelihood.mean(params),
    "sample": MixedLikelihood.sample,
}
