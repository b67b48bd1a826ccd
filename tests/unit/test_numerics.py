"""Numerical safeguards: the smooth noise floor, weight decay only on weights, the bounded log-variance, early
stopping after the KL warm-up, and the sample-chunk memory budget."""

import math

import numpy as np
import pytest
import torch

from vae import (
    VAE,
    DataLayout,
    EpochStats,
    FeatureBlock,
    ModelConfig,
    ObjectiveConfig,
    TrainConfig,
    negative_elbo,
    scoring,
    training,
)
from vae import model as model_module
from vae.likelihoods import MixedLikelihood


@pytest.mark.parametrize("log_scale", [-3.0, -1.0, 0.0, 2.0])
def test_the_noise_floor_is_smooth_with_a_gradient_below_it(log_scale):
    """std = m + exp(s): d log p(x = mean) / ds = -d log std / ds = -sigmoid(s - log m), never 0 (a clamp at the
    floor gave 0 for every s < log m = -2.3)."""
    floor = 0.1
    lik = MixedLikelihood(DataLayout((FeatureBlock("gaussian", 1),)), gaussian_min_scale=floor)
    block = lik.blocks[0]
    with torch.no_grad():
        block.log_scale.fill_(log_scale)
    lik.log_prob(torch.zeros(1, 1), torch.zeros(1, 1)).sum().backward()
    sigmoid = 1 / (1 + math.exp(-(log_scale - math.log(floor))))
    assert block.log_scale.grad.item() == pytest.approx(-sigmoid, rel=1e-5)
    assert block.scale().item() == pytest.approx(floor + math.exp(log_scale), rel=1e-6)


def test_weight_decay_applies_to_weights_only():
    model = VAE(ModelConfig(latent_dim=2, hidden_dims=(8,), flow_steps=1), DataLayout((FeatureBlock("gaussian", 3),)))
    optimizer = training.build_optimizer(model, TrainConfig(lr=0.1, weight_decay=0.5))
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.5 and plain["weight_decay"] == 0.0 and decayed["lr"] == 0.1
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith("weight") for p in decayed["params"])
    assert sorted(names[id(p)] for p in plain["params"]) == sorted(
        n for n in names.values() if n.endswith("bias") or n.endswith("log_scale")
    )
    with torch.no_grad():
        model.likelihood.blocks[0].log_scale.fill_(1.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    (0 * sum(p.sum() for p in model.parameters())).backward()  # zero gradients: only decay moves a parameter
    optimizer.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {n for n in names.values() if n.endswith("weight") and before[n].abs().sum() > 0}


def test_the_encoders_log_variance_is_bounded_smoothly():
    model = VAE(ModelConfig(latent_dim=3, hidden_dims=(4,)), DataLayout((FeatureBlock("gaussian", 2),)))
    x = torch.zeros(1, 2)
    with torch.no_grad():
        model.encoder.logvar.weight.zero_()
        model.encoder.logvar.bias.copy_(torch.tensor([1e4, -1e4, -3.0]))
    posterior = model.encode(x)
    logvar = posterior.logvar[0]
    assert 9.9 < logvar[0] <= 10 and -10 <= logvar[1] < -9.9 and logvar[2] == -3.0  # identity on [-5, 5]
    assert torch.isfinite(posterior.kl_to_standard_normal()).all()
    raw = torch.tensor([4.999, 5.0, 5.001, 7.0], requires_grad=True)
    bounded = model_module.bound_logvar(raw)
    bounded.sum().backward()
    assert (bounded[2] - bounded[1]).item() == pytest.approx(0.001, rel=1e-3)  # slope 1 at the knee: no kink
    assert 0 < raw.grad[3] < 1


def test_early_stopping_and_the_best_weights_count_only_epochs_after_the_kl_warmup(monkeypatch):
    """64 rows in batches of 16: 4 steps per epoch; a warm-up of 8 steps ends with epoch 1. Validation losses are
    scripted: the warm-up epoch 0 has the lowest, which must neither be kept nor start the patience count."""
    losses = iter([0.5, 3.0, 2.0, 2.5, 2.6, 2.7])
    snapshots = []

    def scripted(model, batches, objective, **kwargs):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return EpochStats(next(losses), 0.0, 0.0, 16, 1.0, 0)

    monkeypatch.setattr(training, "evaluate", scripted)
    model = VAE(ModelConfig(latent_dim=2, hidden_dims=(8,)), DataLayout((FeatureBlock("gaussian", 3),)))
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    result = training.fit(model, x, x[:16], ObjectiveConfig(kl_warmup_steps=8), TrainConfig(epochs=6, batch_size=16,
                          patience=2), log=None)  # fmt: skip
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3, 4]  # stopped after two epochs without progress
    assert result.best_epoch == 2 and result.best_val_loss == 2.0
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, snapshots[2][name])


def _wide(hidden: int) -> VAE:
    return VAE(ModelConfig(latent_dim=4, hidden_dims=(hidden,)), DataLayout((FeatureBlock("gaussian", 9),)))


def test_the_sample_chunk_counts_the_widest_decoder_activation():
    """A (4096,)-wide decoder layer holds 4096 floats per draw and row, 455 times the 9 of the output: 16 draws of
    1024 rows fill the 2^26-float (256 MiB) budget. Counting only the output allowed 7281 draws, so all 5000 at
    once: 5000 x 1024 x 4096 floats, 78 GiB, in the hidden layer."""
    assert scoring.samples_per_chunk(_wide(4096), rows=1024, samples=5000) == 2**26 // (1024 * 4096) == 16
    assert scoring.samples_per_chunk(_wide(4), rows=1024, samples=10**4) == 2**26 // (1024 * 9) == 7281
    assert scoring.samples_per_chunk(_wide(4096), rows=10**6, samples=5000) == 1
    image = DataLayout((FeatureBlock("bernoulli", 784),), image_shape=(1, 28, 28))
    conv = VAE(ModelConfig(latent_dim=4, hidden_dims=(64,), network="conv", conv_channels=(32, 64)), image)
    # the widest: the first transposed convolution's output, 32 channels of 14 x 14
    assert scoring.samples_per_chunk(conv, rows=64, samples=5000) == 2**26 // (64 * 32 * 14 * 14)
    flow = VAE(ModelConfig(latent_dim=4, hidden_dims=(8,), flow_steps=2, flow_hidden_dims=(2048,)), image)
    assert scoring.samples_per_chunk(flow, rows=64, samples=5000) == 2**26 // (64 * 2048)


def test_the_negative_elbo_is_streamed_in_chunks_of_that_size(monkeypatch):
    model = _wide(64)
    x, noise = torch.randn(10, 9), torch.randn(50, 4)
    whole = negative_elbo(model, x, samples=50, noise=noise)
    calls = []
    model.decoder.register_forward_hook(lambda module, inputs, output: calls.append(output.shape[0]))
    monkeypatch.setattr(scoring, "_SAMPLE_BUDGET", 10 * 64 * 7)  # 7 draws per chunk
    chunked = negative_elbo(model, x, samples=50, noise=noise)
    assert calls == [1] + [7] * 7 + [1]  # the one-draw measurement of the widest activation, then 50 = 7 * 7 + 1
    torch.testing.assert_close(chunked.score, whole.score)
    torch.testing.assert_close(chunked.contributions, whole.contributions)
