"""Adversarial autoencoder: the discriminator's role, its checks, and prior matching on the real thyroid rows."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from pipelines.sample_data.datasets import load_thyroid, one_class_split
from vae import (
    VAE,
    Adversary,
    ConfigError,
    DataLayout,
    Detector,
    FeatureBlock,
    ModelConfig,
    ObjectiveConfig,
    Preprocessor,
    ScoreConfig,
    TrainConfig,
    check_variant,
    compute_loss,
    evaluate,
    fit,
    train_epoch,
)
from vae.adversarial import discriminator_loss, generator_loss
from vae.objectives import AAEParts

AAE = ObjectiveConfig(kind="aae", adversarial_weight=1.0, discriminator_lr=3e-3, discriminator_hidden_dims=(16,))


@pytest.fixture(autouse=True)
def _one_thread():
    """Small nets train several times faster on one thread than on cores shared with other processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(latent: int = 2) -> VAE:
    return VAE(ModelConfig(latent_dim=latent, hidden_dims=(16,)), DataLayout((FeatureBlock("gaussian", 4),)))


class _FirstCoordinate(nn.Module):
    """A fixed discriminator: the logit that z came from the prior is z_0."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z[:, 0]


def test_the_losses_label_prior_draws_one_and_encoded_rows_zero():
    """Prior rows at logit +3 and encoded rows at -3 are all told apart correctly: the discriminator's loss is
    log(1 + e^-3) per row. The encoder's loss -log D(encoded) is then log(1 + e^3): it is caught."""
    prior, encoded = torch.full((3, 2), 3.0), torch.full((5, 2), -3.0)
    assert discriminator_loss(_FirstCoordinate(), encoded, prior).item() == pytest.approx(math.log1p(math.exp(-3)))
    assert discriminator_loss(_FirstCoordinate(), prior, encoded).item() == pytest.approx(math.log1p(math.exp(3)))
    assert generator_loss(_FirstCoordinate(), encoded).item() == pytest.approx(math.log1p(math.exp(3)))


def test_the_generator_step_trains_the_autoencoder_not_the_discriminator():
    model = _model()
    adversary = Adversary.for_objective(AAE, latent_dim=2)
    parts = compute_loss(model, torch.randn(8, 4), None, AAE, discriminator=adversary.module)
    parts.total.backward()
    assert all(p.grad is None for p in adversary.module.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    assert torch.allclose(parts.total, -parts.recon + parts.extras["adv_generator"])
    assert isinstance(parts, AAEParts) and set(parts.extras) == {"adv_generator"}
    assert parts.kl == 0 and parts.encoded.shape == (8, 2) and not parts.encoded.requires_grad
    assert all(p.requires_grad for p in adversary.module.parameters())  # unfrozen again
    with pytest.raises(ValueError, match="needs the discriminator"):
        compute_loss(model, torch.randn(8, 4), None, AAE)


def test_the_discriminator_learns_to_tell_encoded_rows_from_prior_draws():
    torch.manual_seed(0)
    adversary = Adversary.for_objective(AAE, latent_dim=2)
    encoded = torch.randn(256, 2) * 0.2 + 3.0  # far from N(0, I)
    before = adversary.loss(encoded).item()
    for _ in range(200):
        adversary.step(encoded)
    assert before == pytest.approx(np.log(2), abs=0.3)
    assert adversary.loss(encoded).item() < 0.1


def test_epochs_report_the_adversarial_parts_and_other_objectives_have_no_adversary():
    model, x = _model(), torch.randn(64, 4)
    adversary = Adversary.for_objective(AAE, latent_dim=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train = train_epoch(model, x.split(16), optimizer, AAE, adversary=adversary)
    val = evaluate(model, x.split(16), AAE, adversary=adversary)
    for stats in (train, val):
        assert set(stats.extras) == {"adv_generator", "adv_discriminator"}
        assert stats.loss == pytest.approx(-stats.recon + stats.extras["adv_generator"], rel=1e-5)
    assert Adversary.for_objective(ObjectiveConfig(), latent_dim=2) is None


def test_aae_state_round_trips_for_checkpoints():
    adversary = Adversary.for_objective(AAE, latent_dim=2)
    adversary.step(torch.randn(32, 2))
    restored = Adversary.for_objective(AAE, latent_dim=2, state=adversary.state_dict())
    z = torch.randn(5, 2)
    assert torch.equal(restored.module(z), adversary.module(z))
    assert restored.optimizer.state_dict()["state"].keys() == adversary.optimizer.state_dict()["state"].keys()


def test_aae_scores_by_reconstruction_only_and_takes_no_flow():
    check_variant(ModelConfig(), AAE, ScoreConfig(kind="reconstruction"))
    for kind in ("negative_elbo", "nll"):
        with pytest.raises(ConfigError, match=rf"ScoreConfig.kind: an adversarial autoencoder .* {kind!r}"):
            check_variant(ModelConfig(), AAE, ScoreConfig(kind=kind))
    with pytest.raises(ConfigError, match="ModelConfig.flow_steps"):
        check_variant(ModelConfig(flow_steps=2), AAE)
    pre = Preprocessor(numeric=["a", "b", "c", "d"]).fit({k: np.arange(5.0) for k in "abcd"})
    detector = Detector(_model(), pre, ScoreConfig(kind="negative_elbo"), objective=AAE)
    with pytest.raises(ConfigError, match="score it with 'reconstruction'"):
        detector.score({k: np.arange(5.0) for k in "abcd"})
    with pytest.raises(ConfigError, match="ObjectiveConfig.discriminator_lr"):
        ObjectiveConfig(kind="aae", discriminator_lr=0)


def _encoded_moments(adversarial_weight: float) -> tuple[float, float]:
    """Train on the thyroid training rows (normal only); max |mean| and max |cov - I| of their encodings."""
    table, labels = load_thyroid()
    split = one_class_split(labels, seed=0)
    pre = Preprocessor(numeric=list(table)).fit({k: v[split.train] for k, v in table.items()})
    x = pre.transform(table)
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent_dim=2, hidden_dims=(32, 32)), DataLayout(pre.layout_blocks()))
    objective = ObjectiveConfig(kind="aae", adversarial_weight=adversarial_weight, discriminator_lr=3e-3)
    train = TrainConfig(epochs=30, batch_size=64, lr=2e-3, patience=None, seed=0)
    fit(model, x[split.train], x[split.validation], objective, train, log=None)
    with torch.no_grad():
        z = model.encode(torch.tensor(x[split.train])).mu.numpy()  # (1655, 2)
    return float(np.abs(z.mean(0)).max()), float(np.abs(np.cov(z.T) - np.eye(2)).max())


def test_the_aggregate_posterior_of_the_thyroid_rows_matches_the_prior():
    """Measured (seed 0): |mean| 0.08, |cov - I| 0.13; seeds 1-3: |mean| <= 0.09, |cov - I| 0.20-0.44.
    The same training without the adversarial term (a plain autoencoder): |mean| 0.8-1.1, |cov - I| 7-10."""
    mean, cov = _encoded_moments(adversarial_weight=1.0)
    assert mean < 0.25 and cov < 0.6, (mean, cov)
    mean, cov = _encoded_moments(adversarial_weight=0.0)
    assert cov > 3, (mean, cov)  # fails the bound above five times over
