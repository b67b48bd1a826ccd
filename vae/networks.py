"""Encoder and decoder networks: an MLP for feature vectors, a small CNN for images (C, H, W).

Encoders map x (and an optional condition c) to the posterior's (mu, logvar), each (B, L).
Decoders map z (..., L) (and c) to the likelihood parameters (..., D), D = the flattened input width.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .config import DataLayout, ModelConfig
from .config_base import choose

# The activation kinds (`ModelConfig.activation`): the one list of them, which config validation reads.
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}
_HALF_TYPES = (torch.float16, torch.bfloat16)


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """A network output made float32 when autocast left it in half precision (bf16/fp16); otherwise unchanged
    (float32 stays float32, float64 stays float64)."""
    return t.float() if t.dtype in _HALF_TYPES else t


def activation_layer(name: str) -> nn.Module:
    """A new activation layer of the kind `name` in ACTIVATIONS."""
    return choose(ACTIVATIONS, name, "activation")()


def mlp(in_dim: int, hidden_dims: tuple[int, ...], activation: str) -> tuple[nn.Sequential, int]:
    """A stack of Linear + activation layers; returns it with its output width (in_dim when empty)."""
    layers: list[nn.Module] = []
    for width in hidden_dims:
        layers += [nn.Linear(in_dim, width), activation_layer(activation)]
        in_dim = width
    return nn.Sequential(*layers), in_dim


def _with_condition(h: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    if c is None:
        return h
    return torch.cat([h, c.expand(*h.shape[:-1], c.shape[-1])], dim=-1)


class MLPEncoder(nn.Module):
    def __init__(self, config: ModelConfig, layout: DataLayout) -> None:
        super().__init__()
        self.trunk, width = mlp(layout.input_dim + layout.condition_dim, config.hidden_dims, config.activation)
        self.mu = nn.Linear(width, config.latent_dim)
        self.logvar = nn.Linear(width, config.latent_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(_with_condition(x.flatten(1), c))  # (B, H)
        return self.mu(h), self.logvar(h)


class MLPDecoder(nn.Module):
    def __init__(self, config: ModelConfig, layout: DataLayout) -> None:
        super().__init__()
        hidden = tuple(reversed(config.hidden_dims))
        self.trunk, width = mlp(config.latent_dim + layout.condition_dim, hidden, config.activation)
        self.out = nn.Linear(width, layout.input_dim)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return self.out(self.trunk(_with_condition(z, c)))  # (..., D)


class ConvEncoder(nn.Module):
    """Two stride-2 convolutions (H, W -> H/4, W/4), then a linear layer to (mu, logvar)."""

    def __init__(self, config: ModelConfig, layout: DataLayout) -> None:
        super().__init__()
        channels, height, width = layout.image_shape
        c1, c2 = config.conv_channels
        self.image_shape = layout.image_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, c1, 4, stride=2, padding=1), activation_layer(config.activation),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), activation_layer(config.activation),
            nn.Flatten(),
        )  # fmt: skip
        flat = c2 * (height // 4) * (width // 4)
        self.trunk, hidden = mlp(flat + layout.condition_dim, config.hidden_dims[:1], config.activation)
        self.mu = nn.Linear(hidden, config.latent_dim)
        self.logvar = nn.Linear(hidden, config.latent_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x.reshape(-1, *self.image_shape))  # (B, c2 * H/4 * W/4)
        h = self.trunk(_with_condition(h, c))
        return self.mu(h), self.logvar(h)


class ConvDecoder(nn.Module):
    """A linear layer to (c2, H/4, W/4), then two stride-2 transposed convolutions back to (C, H, W)."""

    def __init__(self, config: ModelConfig, layout: DataLayout) -> None:
        super().__init__()
        channels, height, width = layout.image_shape
        c1, c2 = config.conv_channels
        self.grid = (c2, height // 4, width // 4)
        self.trunk, hidden = mlp(config.latent_dim + layout.condition_dim, config.hidden_dims[:1], config.activation)
        self.project = nn.Sequential(nn.Linear(hidden, math.prod(self.grid)), activation_layer(config.activation))
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), activation_layer(config.activation),
            nn.ConvTranspose2d(c1, channels, 4, stride=2, padding=1),
        )  # fmt: skip

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.project(self.trunk(_with_condition(z, c)))  # (..., c2 * H/4 * W/4)
        images = self.deconv(h.reshape(-1, *self.grid))  # (N, C, H, W)
        return images.reshape(*lead, -1)  # (..., D)


def mlp_networks(config: ModelConfig, layout: DataLayout) -> tuple[nn.Module, nn.Module]:
    """The MLP (encoder, decoder): any layout, images flattened."""
    return MLPEncoder(config, layout), MLPDecoder(config, layout)


def conv_networks(config: ModelConfig, layout: DataLayout) -> tuple[nn.Module, nn.Module]:
    """The CNN (encoder, decoder): image layouts whose H and W divide by 4."""
    if layout.image_shape is None:
        raise ValueError("ModelConfig.network: 'conv' needs image data (a layout with image_shape)")
    _, height, width = layout.image_shape
    if height % 4 or width % 4:
        raise ValueError(f"ModelConfig.network: 'conv' needs H and W divisible by 4, got {layout.image_shape}")
    return ConvEncoder(config, layout), ConvDecoder(config, layout)


# The network kinds (`ModelConfig.network`): (config, layout) -> (encoder, decoder).
NETWORKS: dict[str, Callable[[ModelConfig, DataLayout], tuple[nn.Module, nn.Module]]] = {
    "mlp": mlp_networks,
    "conv": conv_networks,
}


def build_networks(config: ModelConfig, layout: DataLayout) -> tuple[nn.Module, nn.Module]:
    """The (encoder, decoder) pair of the configured network kind (a name in NETWORKS), checked against the layout."""
    return choose(NETWORKS, config.network, "ModelConfig.network")(config, layout)
