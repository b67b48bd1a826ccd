"""Anomaly scores against closed forms: the importance-sampled NLL of a linear-Gaussian VAE, contributions,
reconstruction error, and threshold calibration."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from vae import (
    VAE,
    ModelConfig,
    ScoreConfig,
    calibrate_threshold,
    importance_sampled_nll,
    negative_elbo,
    reconstruction_error,
    scoring,
)
from vae.scoring import score_rows


def test_nll_with_the_exact_posterior_is_exact_for_any_k(linear_gaussian):
    x = linear_gaussian.sample(32)
    exact = -linear_gaussian.log_marginal(x)
    # With q(z|x) = p(z|x) every importance weight equals p(x): the estimate has zero variance.
    for k in (1, 10):
        assert torch.allclose(importance_sampled_nll(linear_gaussian.model, x, k=k).score, exact, atol=1e-4)


def test_nll_with_5000_samples_matches_the_closed_form(linear_gaussian):
    """A wrong posterior (mean off by 0.2, about one posterior std; variance doubled) still gives -log p(x)
    within 0.05 nats on every row (measured: at most 0.03 over 64 rows) and 0.005 on average (measured 0.002)."""
    linear_gaussian.set_posterior(mean_shift=0.2, logvar_shift=np.log(2.0))
    x = linear_gaussian.sample(64)
    exact = -linear_gaussian.log_marginal(x)
    estimate = importance_sampled_nll(
        linear_gaussian.model, x, k=5000, generator=torch.Generator().manual_seed(0)
    ).score
    assert (estimate - exact).abs().max() < 0.05
    assert (estimate - exact).mean().abs() < 0.005
    # ... while the -ELBO, an upper bound on -log p(x), is clearly looser on average.
    elbo_gap = (negative_elbo(linear_gaussian.model, x, samples=256).score - exact).mean()
    assert elbo_gap > 0.2


def test_nll_chunking_does_not_change_the_estimate(linear_gaussian, monkeypatch):
    linear_gaussian.set_posterior(mean_shift=0.3, logvar_shift=0.5)
    x = linear_gaussian.sample(16)
    whole = importance_sampled_nll(linear_gaussian.model, x, k=300, generator=torch.Generator().manual_seed(7)).score
    monkeypatch.setattr(scoring, "_SAMPLE_BUDGET", 16 * 5 * 7)  # 7 samples per chunk: 43 chunks
    chunked = importance_sampled_nll(linear_gaussian.model, x, k=300, generator=torch.Generator().manual_seed(7)).score
    assert torch.allclose(whole, chunked, atol=1e-4)


def test_negative_elbo_splits_into_feature_contributions_plus_kl(mixed_model, mixed_batch):
    g = torch.Generator().manual_seed(0)
    rows = negative_elbo(mixed_model, mixed_batch, samples=4, generator=g)
    assert rows.contributions.shape == (8, 6)
    out = mixed_model(mixed_batch, n_samples=4, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(rows.score, -out.log_px.sum(-1).mean(0) + out.kl, atol=1e-5)
    assert torch.allclose(rows.score, rows.contributions.sum(1) + out.kl, atol=1e-5)
    assert torch.equal(rows.latent, out.kl)


@pytest.mark.parametrize("kind", ["negative_elbo", "nll", "reconstruction"])
@pytest.mark.parametrize("flow_steps", [0, 2])
def test_contributions_and_the_latent_term_add_up_to_the_score(mixed_layout, mixed_batch, kind, flow_steps):
    model = VAE(ModelConfig(latent_dim=3, hidden_dims=(16,), flow_steps=flow_steps), mixed_layout)
    observed = np.ones((8, 6), dtype=bool)
    observed[::2, 1] = observed[1::3, 5] = False  # some missing features too
    rows = scoring.score_rows(model, mixed_batch.numpy(), config=ScoreConfig(kind=kind, samples=300), observed=observed)
    assert rows.score.shape == rows.latent.shape == (8,) and rows.contributions.shape == (8, 6)
    total = rows.contributions.astype(np.float64).sum(1) + rows.latent
    np.testing.assert_allclose(total, rows.score, rtol=1e-6, atol=1e-5)
    if kind == "reconstruction":
        assert (rows.latent == 0).all()


def test_nll_contributions_split_the_estimate_by_self_normalised_weights(linear_gaussian, monkeypatch):
    """contributions[:, f] = sum_s w~_s (-log p(x_f | z_s)) over the same draws as the estimate, streamed in chunks."""
    linear_gaussian.set_posterior(mean_shift=0.3, logvar_shift=0.5)
    model, x, noise = linear_gaussian.model, linear_gaussian.sample(16), torch.randn(300, 2)
    out = model(x, n_samples=300, noise=noise)
    weights = torch.softmax(out.log_px.sum(-1) + out.log_pz - out.log_qz, dim=0)  # (S, B)
    expected = -(weights[..., None] * out.log_px).sum(0)  # (B, F)
    monkeypatch.setattr(scoring, "_SAMPLE_BUDGET", 16 * 5 * 7)  # 7 draws per chunk
    rows = importance_sampled_nll(model, x, k=300, noise=noise)
    torch.testing.assert_close(rows.contributions, expected, rtol=1e-5, atol=1e-5)
    # With the exact posterior every weight is p(x): the split is the plain average over draws, the -ELBO's.
    linear_gaussian.set_posterior(mean_shift=0.0, logvar_shift=0.0)
    exact, elbo = (
        importance_sampled_nll(model, x, k=300, noise=noise),
        negative_elbo(model, x, samples=300, noise=noise),
    )
    torch.testing.assert_close(exact.contributions, elbo.contributions, rtol=1e-4, atol=1e-4)
    out = model(x, n_samples=300, noise=noise)
    torch.testing.assert_close(exact.latent, (out.log_qz - out.log_pz).mean(0), rtol=1e-4, atol=1e-4)


def test_reconstruction_error_is_the_squared_error_of_the_decoded_mean(mixed_model, mixed_batch):
    rows = reconstruction_error(mixed_model, mixed_batch)
    with torch.no_grad():
        params = mixed_model.decode(mixed_model.encode(mixed_batch).mu)
    mean = torch.cat([params[:, :3], torch.sigmoid(params[:, 3:5]), torch.softmax(params[:, 5:], -1)], 1)
    err = (mixed_batch - mean).square()
    expected = torch.cat([err[:, :5], err[:, 5:].sum(1, keepdim=True)], 1)  # the one-hot group is one feature
    assert torch.allclose(rows.contributions, expected, atol=1e-6)
    assert torch.allclose(rows.score, expected.sum(1), atol=1e-5)


@pytest.mark.parametrize("kind", ["negative_elbo", "nll", "reconstruction"])
def test_a_rows_score_depends_on_the_row_and_seed_not_on_its_batch(mixed_model, mixed_batch, kind):
    config = ScoreConfig(kind=kind, samples=20)
    rows = mixed_batch.numpy()
    split = score_rows(mixed_model, rows, config=config, batch_size=3, seed=1)
    scores, contrib = split.score, split.contributions
    assert scores.shape == (8,) and contrib.shape == (8, 6)
    together = score_rows(mixed_model, rows, config=config, batch_size=8, seed=1)
    whole, whole_contrib = together.score, together.contributions
    np.testing.assert_allclose(scores, whole, rtol=1e-5)
    np.testing.assert_allclose(contrib, whole_contrib, rtol=1e-5, atol=1e-6)
    reordered = score_rows(mixed_model, rows[::-1].copy(), config=config, batch_size=5, seed=1).score
    np.testing.assert_allclose(scores, reordered[::-1], rtol=1e-5)
    if kind != "reconstruction":  # sampled scores change with the seed
        other = score_rows(mixed_model, rows, config=config, batch_size=8, seed=2).score
        assert not np.allclose(scores, other)


def test_threshold_from_contamination_or_quantile():
    scores = np.arange(1000, dtype=float)
    assert calibrate_threshold(scores, contamination=0.05) == pytest.approx(np.quantile(scores, 0.95))
    assert calibrate_threshold(scores, quantile=0.99) == pytest.approx(989.01)
    assert (scores > calibrate_threshold(scores, contamination=0.1)).mean() == pytest.approx(0.1, abs=0.002)
    with pytest.raises(ValueError, match="exactly one"):
        calibrate_threshold(scores)
    with pytest.raises(ValueError, match="finite"):
        calibrate_threshold(np.array([1.0, np.nan]), contamination=0.1)


def test_read_only_rows_and_masks_score_without_a_warning_and_as_their_copies(tmp_path):
    """Rows handed over by Ray's object store are read-only arrays: `torch.as_tensor` of one printed PyTorch's
    "not writable" warning in every task that scored them (torch warns once per process: hence a fresh one)."""
    script = """
import warnings
import numpy as np
from vae import VAE, DataLayout, FeatureBlock, ModelConfig
from vae.scoring import score_rows

warnings.simplefilter("error")
model = VAE(ModelConfig(latent_dim=2, hidden_dims=(8,)), DataLayout((FeatureBlock("gaussian", 3),)))
x, observed = np.random.default_rng(0).normal(size=(50, 3)), np.ones((50, 3), dtype=bool)
observed[::7, 1] = False
frozen_x, frozen_observed = x.copy(), observed.copy()
frozen_x.flags.writeable = frozen_observed.flags.writeable = False
read_only = score_rows(model, frozen_x, observed=frozen_observed, batch_size=16)
writable = score_rows(model, x, observed=observed, batch_size=16)
assert np.array_equal(read_only.score, writable.score)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
