"""Network shapes, conditional sampling, and the boundary between the library and the pipeline glue."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from vae import VAE, DataLayout, FeatureBlock, ModelConfig
from vae.generation import generate


@pytest.mark.parametrize(("network", "shape"), [("conv", (1, 8, 8)), ("conv", (3, 12, 16)), ("mlp", (1, 8, 8))])
def test_image_models_map_images_to_flat_likelihoods(network, shape):
    width = shape[0] * shape[1] * shape[2]
    layout = DataLayout((FeatureBlock("bernoulli", width),), image_shape=shape)
    model = VAE(ModelConfig(latent_dim=4, hidden_dims=(32,), network=network), layout)
    x = torch.rand(5, *shape)
    out = model(x, n_samples=3)
    assert out.log_px.shape == (3, 5, width)
    assert out.log_qz.shape == out.log_pz.shape == (3, 5)
    assert model.reconstruct(x).shape == (5, width)
    assert generate(model, 2, mode="sample").shape == (2, width)


def test_conv_network_needs_a_compatible_image():
    with pytest.raises(ValueError, match="'conv' needs image data"):
        VAE(ModelConfig(network="conv"), DataLayout((FeatureBlock("gaussian", 4),)))
    with pytest.raises(ValueError, match="divisible by 4"):
        VAE(ModelConfig(network="conv"), DataLayout((FeatureBlock("bernoulli", 30),), image_shape=(1, 5, 6)))


def test_conditional_sampling_follows_the_condition():
    """A CVAE whose decoder reads only the condition samples x = condition-dependent means."""
    layout = DataLayout((FeatureBlock("categorical", 3, ("class",)),), condition_dim=3)
    model = VAE(ModelConfig(latent_dim=2, hidden_dims=()), layout)
    with torch.no_grad():
        model.decoder.out.weight.zero_()
        model.decoder.out.weight[:, 2:] = 50 * torch.eye(3)  # columns after the latent read the condition
        model.decoder.out.bias.zero_()
    for cls in range(3):
        draws = generate(model, 100, np.eye(3)[cls], mode="sample", seed=cls)
        assert (draws.argmax(1) == cls).all()
    per_row = np.tile(np.eye(3), (4, 1))  # (12, 3): one condition per row
    assert (generate(model, 12, per_row, mode="sample").argmax(1) == per_row.argmax(1)).all()
    with pytest.raises(ValueError, match=r"c must be \(B, 3\)"):
        generate(model, 5)


def test_importing_vae_loads_neither_ray_nor_mlflow():
    code = "import sys, vae; print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
